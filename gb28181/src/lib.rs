//! sharpeyes as one GB/T 28181 device on a county's video platform (WVP-GB28181-pro,
//! LiveGBS, vendor platforms): it registers (Digest, MD5 with qop=auth), keeps alive,
//! answers the platform's Catalog and DeviceInfo queries with its cameras as channels, and
//! sends every alert as an `Alarm` MESSAGE, retried until the platform answers 200 OK.
//!
//! One task owns the transport (UDP, or a TCP connection the device opens) and every
//! transaction; the service hands it alarms and the channel list. Only messages from the
//! platform's address are read: anyone else on the network is ignored, and no peer's bytes
//! are logged.

mod manscdp;
pub mod platform;
mod sip;
mod transport;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sip_auth::{ClientAuthenticator, DigestAuthenticator, DigestCredentials, DigestUser};
use sip_types::Method;
use sip_types::msg::MessageLine;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use manscdp::{Alarm, Charset, element, escape};
pub use sip::{Incoming, MAX_DATAGRAM, Malformed};
use transport::{Event, Transport};
pub use transport::{Protocol, take_message};

/// What the device needs to know of the platform and itself.
#[derive(Clone)]
pub struct Settings {
    /// The platform's 20-digit id and 10-digit realm.
    pub server_id: String,
    pub server_domain: String,
    /// Where the platform listens, and over what.
    pub server: SocketAddr,
    pub protocol: Protocol,
    /// This device's 20-digit id and the password the platform gave it.
    pub device_id: String,
    pub password: String,
    /// The local address: UDP listens there; TCP connects from its IP.
    pub listen: SocketAddr,
    pub expires: Duration,
    pub keepalive: Duration,
    pub charset: Charset,
}

impl std::fmt::Debug for Settings {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("server_id", &self.server_id)
            .field("server_domain", &self.server_domain)
            .field("server", &self.server)
            .field("protocol", &self.protocol)
            .field("device_id", &self.device_id)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// A channel of the device, as the Catalog lists it: a camera, or a sensor as an alarm input.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Its 20-digit id.
    pub id: String,
    pub name: String,
    /// The civil code (region) it stands in, e.g. `321322`.
    pub civil_code: String,
    /// Streaming (cameras) or reporting (sensors).
    pub online: bool,
    pub location: Option<(f64, f64)>,
}

/// The device's channels, asked for at each Catalog query.
pub type ChannelSource = Arc<dyn Fn() -> Vec<Channel> + Send + Sync>;

/// Where registration stands, for `/readyz` and the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not yet answered (or answered again after a loss).
    Registering,
    Registered,
    /// The platform said no: why, without the password.
    Refused(String),
    /// The platform did not answer: registering again with backoff.
    Unreachable,
}

/// Counts for the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Alarms the platform answered 200 OK.
    pub delivered: AtomicU64,
    /// Alarms sent again after no answer or a refusal.
    pub retried: AtomicU64,
    /// Alarms dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Keepalives the platform did not answer.
    pub keepalives_missed: AtomicU64,
}

/// The running device; dropped, its task stops.
pub struct Upstream {
    alarms: mpsc::Sender<Alarm>,
    delivered: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    channels: watch::Sender<ChannelSource>,
    state: watch::Receiver<State>,
    stats: Arc<Stats>,
    local: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

/// Alarms held while the platform is away: hours of a county's alerts.
const QUEUE: usize = 10_000;
/// SIP's timers for a non-INVITE transaction over UDP (RFC 3261 17.1.2): retransmit from
/// T1 doubling to T2, give up after 64 T1.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Alarms in flight at once.
const IN_FLIGHT: usize = 16;
/// Channels per Catalog response: a few hundred bytes each, so a response fits a datagram
/// that is not fragmented.
pub const CATALOG_PAGE: usize = 4;
/// Missed keepalives after which the device counts itself offline, as WVP does.
const MISSED_LIMIT: u32 = 3;
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Upstream {
    /// Binds `settings.listen` (UDP) or starts connecting (TCP), and starts registering.
    pub async fn start(settings: Settings) -> std::io::Result<Self> {
        let (link, events, local) =
            Transport::start(settings.protocol, settings.listen, settings.server).await?;
        let (alarms, alarm_rx) = mpsc::channel(QUEUE);
        let none: ChannelSource = Arc::new(Vec::new);
        let (channels, channel_rx) = watch::channel(none);
        let (state_tx, state) = watch::channel(State::Registering);
        let stats = Arc::new(Stats::default());
        let (delivered_tx, delivered) = mpsc::unbounded_channel();
        let mut task = Task::new(settings, link, local, state_tx, stats.clone());
        task.delivered = Some(delivered_tx);
        let task = tokio::spawn(task.run(events, alarm_rx, channel_rx));
        Ok(Self {
            alarms,
            delivered: std::sync::Mutex::new(Some(delivered)),
            channels,
            state,
            stats,
            local,
            task,
        })
    }

    /// Queues `alarm`; `false` when the queue is full (counted as dropped).
    pub fn send(&self, alarm: Alarm) -> bool {
        let queued = self.alarms.try_send(alarm).is_ok();
        if !queued {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Where a Catalog answer takes its channels from, asked at each query so their
    /// `Status` is current.
    pub fn set_channels(&self, source: impl Fn() -> Vec<Channel> + Send + Sync + 'static) {
        self.channels.send_replace(Arc::new(source));
    }

    /// The alert ids of the alarms the platform answered 200 OK, as it answers; once.
    pub fn deliveries(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The local UDP address; `None` over TCP, whose address comes with each connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Kind {
    Register,
    Keepalive,
    Alarm(Alarm),
    /// A Catalog or DeviceInfo response: sent, retransmitted, never retried beyond.
    Answer,
}

struct Pending {
    kind: Kind,
    request: sip::Outgoing,
    bytes: Vec<u8>,
    next_send: Instant,
    interval: Duration,
    deadline: Instant,
    /// Whether it was resent with credentials after a 401 already.
    authorised: bool,
}

struct Task {
    settings: Settings,
    link: Transport,
    parties: sip::Parties,
    auth: DigestAuthenticator,
    state: watch::Sender<State>,
    stats: Arc<Stats>,
    cseq: u32,
    sn: u32,
    register_call: String,
    from_tag: String,
    pending: HashMap<(String, u32), Pending>,
    queue: VecDeque<Alarm>,
    registered: bool,
    missed: u32,
    backoff: Duration,
    next_register: Instant,
    next_keepalive: Instant,
    /// Datagrams from others than the platform, ignored; logged once.
    strangers: u64,
    /// Where delivered alarms' alert ids go.
    delivered: Option<mpsc::UnboundedSender<String>>,
}

impl Task {
    fn new(
        settings: Settings,
        link: Transport,
        local: Option<SocketAddr>,
        state: watch::Sender<State>,
        stats: Arc<Stats>,
    ) -> Self {
        let mut credentials = DigestCredentials::new();
        credentials.set_default(DigestUser::new(
            settings.device_id.clone(),
            settings.password.clone(),
        ));
        let parties = sip::Parties {
            device: settings.device_id.clone(),
            server: settings.server_id.clone(),
            domain: settings.server_domain.clone(),
            local: local.map_or_else(String::new, |l| shown(l, settings.server)),
            remote: settings.server.to_string(),
            transport: settings.protocol.via(),
        };
        let now = Instant::now();
        // Over TCP, the first registration waits for the connection.
        let next_register = if local.is_some() {
            now
        } else {
            now + Duration::from_secs(3600)
        };
        Self {
            link,
            parties,
            auth: DigestAuthenticator::new(credentials),
            state,
            stats,
            cseq: 0,
            sn: 0,
            register_call: format!("{}@sharpeyes", ulid::Ulid::new()),
            from_tag: ulid::Ulid::new().to_string(),
            pending: HashMap::new(),
            queue: VecDeque::new(),
            registered: false,
            missed: 0,
            backoff: Duration::from_secs(1),
            next_register,
            next_keepalive: now + settings.keepalive,
            strangers: 0,
            delivered: None,
            settings,
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut alarms: mpsc::Receiver<Alarm>,
        channels: watch::Receiver<ChannelSource>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Message(bytes, from)) => self.received(&bytes, from, &channels).await,
                    Some(Event::Connected(local)) => {
                        self.parties.local = shown(local, self.settings.server);
                        self.registered = false;
                        self.next_register = Instant::now();
                    }
                    Some(Event::Disconnected) => {
                        if self.registered {
                            self.lost();
                        }
                        self.pending.retain(|_, p| !matches!(p.kind, Kind::Register));
                        // Registered again once connected.
                        self.next_register = Instant::now() + Duration::from_secs(3600);
                    }
                    None => return,
                },
                alarm = alarms.recv() => match alarm {
                    Some(alarm) => {
                        if self.queue.len() >= QUEUE {
                            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.queue.push_back(alarm);
                        }
                        self.send_alarms().await;
                    }
                    None => return,
                },
                _ = tick.tick() => self.timers().await,
            }
        }
    }

    /// When a request is first sent again: T1 over UDP; never over TCP, which delivers.
    fn first_resend(&self, now: Instant) -> Instant {
        match self.link.protocol() {
            Protocol::Udp => now + T1,
            Protocol::Tcp => now + 64 * T1,
        }
    }

    fn next_cseq(&mut self) -> u32 {
        self.cseq = self.cseq.wrapping_add(1);
        self.cseq
    }

    fn next_sn(&mut self) -> u32 {
        self.sn = self.sn.wrapping_add(1);
        self.sn
    }

    /// Sends `request` and tracks it until answered; signed with the credentials a
    /// challenge asked for (`authorised`), or once registered.
    async fn transmit(
        &mut self,
        kind: Kind,
        mut request: sip::Outgoing,
        call_id: String,
        cseq: u32,
        authorised: bool,
    ) {
        if authorised || !matches!(kind, Kind::Register) || self.registered {
            self.auth.authorize_request(&mut request.headers);
        }
        let bytes = request.to_bytes();
        self.link.send(&bytes).await;
        let now = Instant::now();
        self.pending.insert(
            (call_id, cseq),
            Pending {
                kind,
                request,
                bytes,
                next_send: self.first_resend(now),
                interval: T1,
                deadline: now + 64 * T1,
                authorised,
            },
        );
    }

    async fn register(&mut self) {
        // One REGISTER at a time.
        self.pending
            .retain(|_, p| !matches!(p.kind, Kind::Register));
        let cseq = self.next_cseq();
        let call = self.register_call.clone();
        let request =
            sip::Outgoing::new(&self.parties, Method::REGISTER, &call, cseq, &self.from_tag)
                .header(
                    sip_types::Name::CONTACT,
                    format!("<sip:{}@{}>", self.parties.device, self.parties.local),
                )
                .header(
                    sip_types::Name::EXPIRES,
                    self.settings.expires.as_secs().to_string(),
                );
        self.transmit(Kind::Register, request, call, cseq, false)
            .await;
    }

    async fn message(&mut self, kind: Kind, body: Vec<u8>) {
        let cseq = self.next_cseq();
        let call = format!("{}@sharpeyes", ulid::Ulid::new());
        let request =
            sip::Outgoing::new(&self.parties, Method::MESSAGE, &call, cseq, &self.from_tag)
                .with_body("Application/MANSCDP+xml", body);
        self.transmit(kind, request, call, cseq, false).await;
    }

    async fn send_alarms(&mut self) {
        if !self.registered {
            return;
        }
        let in_flight = self
            .pending
            .values()
            .filter(|p| matches!(p.kind, Kind::Alarm(_)))
            .count();
        for _ in in_flight..IN_FLIGHT {
            let Some(alarm) = self.queue.pop_front() else {
                return;
            };
            let sn = self.next_sn();
            let body = manscdp::alarm(self.settings.charset, sn, &alarm);
            self.message(Kind::Alarm(alarm), body).await;
        }
    }

    fn set_state(&self, state: State) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut resend = Vec::new();
        for (key, p) in &mut self.pending {
            if now >= p.deadline {
                expired.push(key.clone());
            } else if now >= p.next_send {
                resend.push(p.bytes.clone());
                p.interval = (p.interval * 2).min(T2);
                p.next_send = now + p.interval;
            }
        }
        for bytes in resend {
            self.link.send(&bytes).await;
        }
        for key in expired {
            if let Some(p) = self.pending.remove(&key) {
                self.timed_out(p.kind);
            }
        }
        if now >= self.next_register
            && !self
                .pending
                .values()
                .any(|p| matches!(p.kind, Kind::Register))
        {
            // Until answered, the next try waits for the transaction's timeout.
            self.next_register = now + 64 * T1 + self.backoff;
            self.register().await;
        }
        if self.registered && now >= self.next_keepalive {
            self.next_keepalive = now + self.settings.keepalive;
            let sn = self.next_sn();
            let body = manscdp::keepalive(self.settings.charset, sn, &self.settings.device_id);
            self.message(Kind::Keepalive, body).await;
        }
        self.send_alarms().await;
    }

    fn timed_out(&mut self, kind: Kind) {
        match kind {
            Kind::Register => {
                tracing::warn!(
                    platform = %self.settings.server_id,
                    server = %self.settings.server,
                    "gb28181: the platform does not answer REGISTER; trying again in {:?}",
                    self.backoff
                );
                self.lost();
            }
            Kind::Keepalive => self.keepalive_missed(),
            Kind::Alarm(alarm) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                self.queue.push_front(alarm);
            }
            Kind::Answer => {}
        }
    }

    /// A keepalive unanswered or refused; [`MISSED_LIMIT`] in a row mean offline.
    fn keepalive_missed(&mut self) {
        self.stats.keepalives_missed.fetch_add(1, Ordering::Relaxed);
        self.missed += 1;
        if self.missed >= MISSED_LIMIT {
            tracing::warn!(
                platform = %self.settings.server_id,
                "gb28181: {MISSED_LIMIT} keepalives unanswered; registering again"
            );
            self.lost();
        }
    }

    /// The platform is gone: offline until a REGISTER is answered, after a backoff.
    fn lost(&mut self) {
        self.registered = false;
        self.missed = 0;
        self.set_state(State::Unreachable);
        self.next_register = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        // Alarms in flight wait for the next registration.
        let keys: Vec<(String, u32)> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Alarm(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(Pending {
                kind: Kind::Alarm(alarm),
                ..
            }) = self.pending.remove(&key)
            {
                self.queue.push_front(alarm);
            }
        }
    }

    async fn received(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        channels: &watch::Receiver<ChannelSource>,
    ) {
        if from != self.settings.server {
            self.strangers += 1;
            if self.strangers == 1 {
                tracing::warn!(%from, "gb28181: a datagram from an address that is not the platform's, ignored (and any more)");
            }
            return;
        }
        let message = match Incoming::parse(datagram) {
            Ok(m) => m,
            Err(Malformed(why)) => {
                tracing::debug!("gb28181: a datagram from the platform was not SIP: {why}");
                return;
            }
        };
        match &message.line {
            MessageLine::Response(_) => self.answered(message).await,
            MessageLine::Request(line) => {
                let method = line.method.clone();
                self.requested(method, message, channels).await;
            }
        }
    }

    async fn answered(&mut self, response: Incoming) {
        let (Some(key), Some(code)) = (response.transaction(), response.status()) else {
            return;
        };
        if code < 200 {
            // Provisional: the platform has it; stop retransmitting, keep waiting.
            if let Some(p) = self.pending.get_mut(&key) {
                p.next_send = p.deadline;
            }
            return;
        }
        let Some(pending) = self.pending.remove(&key) else {
            return;
        };
        if matches!(code, 401 | 407) && !pending.authorised {
            self.challenged(pending, &response).await;
            return;
        }
        match (pending.kind, code) {
            (Kind::Register, 200..=299) => {
                let expires = response
                    .headers
                    .get_raw(&sip_types::Name::EXPIRES)
                    .next()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(self.settings.expires, Duration::from_secs);
                self.registered = true;
                self.missed = 0;
                self.backoff = Duration::from_secs(1);
                let now = Instant::now();
                // Renewed well before it ends.
                self.next_register = now + expires.mul_f64(0.8).max(Duration::from_secs(5));
                self.next_keepalive = now + self.settings.keepalive;
                self.set_state(State::Registered);
                tracing::info!(platform = %self.settings.server_id, device = %self.settings.device_id, expires = expires.as_secs(), "gb28181: registered");
                self.send_alarms().await;
            }
            (Kind::Register, code) => {
                let why = format!(
                    "platform {} (realm {}) refused device {}: {code}{}",
                    self.settings.server_id,
                    self.settings.server_domain,
                    self.settings.device_id,
                    if matches!(code, 401 | 403 | 407) {
                        "; check [gb28181] password and device_id against what the platform's operator set for this device"
                    } else {
                        ""
                    }
                );
                tracing::error!("gb28181: {why}");
                self.registered = false;
                self.set_state(State::Refused(why));
                self.next_register = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
            (Kind::Keepalive, 200..=299) => self.missed = 0,
            (Kind::Keepalive, _) => self.keepalive_missed(),
            (Kind::Alarm(alarm), 200..=299) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(tx) = &self.delivered {
                    let _ = tx.send(alarm.alert_id);
                }
            }
            (Kind::Alarm(alarm), code) => {
                tracing::warn!(alert = %alarm.alert_id, code, "gb28181: the platform refused an alarm; sent again after the next registration");
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                self.queue.push_back(alarm);
                if matches!(code, 401 | 403 | 407) {
                    self.lost();
                }
            }
            (Kind::Answer, _) => {}
        }
    }

    /// A 401 or 407: the request again with credentials for the challenge.
    async fn challenged(&mut self, pending: Pending, response: &Incoming) {
        let MessageLine::Response(status) = &response.line else {
            return;
        };
        let rejected = sip_auth::RequestParts {
            line: &pending.request.line,
            headers: &pending.request.headers,
            body: &pending.request.body,
        };
        let reject = sip_auth::ResponseParts {
            line: status,
            headers: &response.headers,
            body: &response.body,
        };
        if let Err(e) = self.auth.handle_rejection(rejected, reject) {
            let why = format!(
                "platform {} (realm {}) asked for credentials this device cannot give: {e}",
                self.settings.server_id, self.settings.server_domain
            );
            tracing::error!("gb28181: {why}");
            self.set_state(State::Refused(why));
            return;
        }
        let mut request = pending.request;
        let cseq = self.next_cseq();
        let call = request
            .headers
            .get_named::<sip_types::header::typed::CallID>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        let method = request.line.method.clone();
        request.headers.remove(&sip_types::Name::CSEQ);
        request.headers.insert(
            sip_types::Name::CSEQ,
            bytesstr::BytesStr::from(format!("{cseq} {method}")),
        );
        request.headers.remove(&sip_types::Name::VIA);
        request
            .headers
            .insert_front(sip_types::Name::VIA, sip::via(&self.parties));
        request.headers.remove(&sip_types::Name::AUTHORIZATION);
        self.transmit(pending.kind, request, call, cseq, true).await;
    }

    async fn requested(
        &mut self,
        method: Method,
        request: Incoming,
        channels: &watch::Receiver<ChannelSource>,
    ) {
        let tag = &self.from_tag;
        if method != Method::MESSAGE {
            let out = sip::response(&request, 405, "Method Not Allowed", tag);
            self.link.send(&out).await;
            return;
        }
        let out = sip::response(&request, 200, "OK", tag);
        self.link.send(&out).await;
        // Queries may come in either charset whatever ours is; their fields are ASCII.
        let xml = String::from_utf8_lossy(&request.body).into_owned();
        let (Some(cmd), Some(sn)) = (element(&xml, "CmdType"), element(&xml, "SN")) else {
            return;
        };
        let Ok(sn) = sn.parse::<u64>() else { return };
        let source = channels.borrow().clone();
        let bodies = match cmd.as_str() {
            "Catalog" => manscdp::catalog(
                self.settings.charset,
                sn,
                &self.settings.device_id,
                &source(),
            ),
            "DeviceInfo" => vec![manscdp::device_info(
                self.settings.charset,
                sn,
                &self.settings.device_id,
                source().len(),
            )],
            "DeviceStatus" => vec![manscdp::device_status(
                self.settings.charset,
                sn,
                &self.settings.device_id,
                self.registered,
            )],
            _ => return,
        };
        for body in bodies {
            self.message(Kind::Answer, body).await;
        }
    }
}

/// `local` as the platform should reach it: an unspecified address is the one the platform
/// is reached from (loopback for a loopback platform).
fn shown(local: SocketAddr, server: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        format!("{}:{}", server.ip(), local.port()).replace("0.0.0.0", "127.0.0.1")
    } else {
        local.to_string()
    }
}
