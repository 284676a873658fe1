//! The MQTT link: one task owns the rumqttc event loop and every QoS 1 publish.
//!
//! rumqttc's `AsyncClient::publish` returns when the request is queued, and its packet ids are
//! assigned inside the event loop, so a PUBACK cannot be tied to the message it confirms by
//! watching events in order (rumqttc re-sends unacknowledged publishes after a reconnect and
//! reports them again; with a new session it drops them). So the link chooses packet ids
//! itself: it keeps a window of ids, hands each publish to the event loop with its id set
//! (through `EventLoop::pending`, which the loop sends first), and frees an id only on the
//! PUBACK for it. After a reconnect without a session every unacknowledged publish goes out
//! again under its id; with a session rumqttc re-sends them itself. An outbox record is
//! removed only on its own PUBACK, so a broker outage or a crash can duplicate, never lose.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Publish, QoS,
    Request, SubscribeFilter, TlsConfiguration, Transport,
};
use sharpeyes_config::schema::Mqtt;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, ErrorKind};
use crate::stats::{Stats, stopped};
use crate::store::{OutboxRecord, StateStore};

/// Unacknowledged publishes at once. Alerts are few; this bounds what a reconnect re-sends.
const WINDOW: u16 = 64;
/// rumqttc's own limit must leave room above the window (packet ids run 1..=inflight).
const RUMQTTC_INFLIGHT: u16 = 100;
/// Largest message sent: an alert with an inline snapshot fits.
pub(crate) const MAX_PACKET: usize = 1024 * 1024;
/// Largest message taken: MQTT's own limit. rumqttc drops the connection on a larger one,
/// and a broker redelivers a QoS 1 message on reconnecting, so a lower limit turns one
/// oversized message from a stranger into a loop in which nothing else arrives. What each
/// handler accepts is checked after (sensor readings: 64 KiB, acknowledgements: 4 KiB);
/// the broker's own `message_size_limit` bounds the memory it can cost.
const MAX_INCOMING: usize = 268_435_455;
/// A publish unacknowledged for this many keepalive periods on a live connection means the
/// connection is not what it seems: drop it, reconnect and re-send.
const ACK_TIMEOUT_KEEPALIVES: u32 = 2;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the broker to acknowledge what is in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach the broker. Credentials are expanded here and never printed.
#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Stable per node: the broker keeps this client's session (and queued acks) across
    /// reconnects.
    pub client_id: String,
    pub prefix: String,
    pub node: String,
    pub keep_alive: Duration,
}

impl fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("broker", &self.broker())
            .field("user", &self.username.as_ref().map(|_| "***"))
            .field("client_id", &self.client_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl MqttSettings {
    /// A plain-TCP broker without credentials: the embedded broker, and tests.
    pub fn plain(host: &str, port: u16, prefix: &str, node: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            tls: false,
            ca_file: None,
            client_cert: None,
            username: None,
            password: None,
            client_id: format!("sharpeyes-{node}"),
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            keep_alive: Duration::from_secs(10),
        }
    }

    /// From `[mqtt]`, expanding its secrets. Errors name the field and never hold a secret.
    pub fn from_config(mqtt: &Mqtt, node: &str) -> Result<Self, Error> {
        let shape = &mqtt.url;
        let tls = match shape.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            other => {
                return Err(settings(format!(
                    "[mqtt] url {shape}: scheme `{other}` is not MQTT; use mqtt:// or mqtts://"
                )));
            }
        };
        let url = shape
            .expand()
            .map_err(|e| settings(format!("[mqtt] url {shape}: {e}")))?;
        let host = url
            .host_str()
            .ok_or_else(|| settings(format!("[mqtt] url {shape}: no host")))?
            .to_owned();
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let from_url = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let expand = |field: &str, s: &Option<sharpeyes_config::Secret>| {
            s.as_ref()
                .map(|s| {
                    s.expand()
                        .map_err(|e| settings(format!("[mqtt] {field}: {e}")))
                })
                .transpose()
        };
        let username = expand("username", &mqtt.username)?.or_else(|| from_url(url.username()));
        let password =
            expand("password", &mqtt.password)?.or_else(|| url.password().map(str::to_owned));
        if password.is_some() && username.is_none() {
            return Err(settings(
                "[mqtt] password is set but username is not; MQTT needs both".into(),
            ));
        }
        Ok(Self {
            host,
            port,
            tls,
            ca_file: mqtt.ca_file.clone(),
            client_cert: mqtt.cert_file.clone().zip(mqtt.key_file.clone()),
            username,
            password,
            client_id: mqtt
                .client_id
                .clone()
                .unwrap_or_else(|| format!("sharpeyes-{node}")),
            prefix: mqtt.prefix.clone(),
            node: node.to_owned(),
            keep_alive: Duration::from_secs(10),
        })
    }

    /// `host:port`, for logs.
    pub fn broker(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    pub(crate) fn node_status_topic(&self) -> String {
        format!("{}/status/{}", self.prefix, self.node)
    }

    pub(crate) fn node_status(&self, state: &str) -> String {
        serde_json::json!({
            "node": self.node,
            "state": state,
            "at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        })
        .to_string()
    }

    fn options(&self) -> Result<MqttOptions, Error> {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(false)
            .set_inflight(RUMQTTC_INFLIGHT)
            .set_max_packet_size(MAX_INCOMING, MAX_PACKET)
            .set_last_will(LastWill::new(
                self.node_status_topic(),
                self.node_status("offline"),
                QoS::AtLeastOnce,
                true,
            ));
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            options.set_credentials(user, password);
        } else if let Some(user) = &self.username {
            options.set_credentials(user, "");
        }
        if self.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
                self.rustls()?,
            ))));
        }
        Ok(options)
    }

    fn rustls(&self) -> Result<rustls::ClientConfig, Error> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    settings(format!(
                        "[mqtt] ca_file {}: cannot read it: {e}",
                        path.display()
                    ))
                })?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| {
                        settings(format!(
                            "[mqtt] ca_file {}: not PEM certificates: {e}",
                            path.display()
                        ))
                    })?;
                    roots.add(cert).map_err(|e| {
                        settings(format!(
                            "[mqtt] ca_file {}: unusable certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
                if roots.is_empty() {
                    return Err(settings(format!(
                        "[mqtt] ca_file {}: holds no certificate",
                        path.display()
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(settings(
                        "[mqtt] no system CA certificates found; install ca-certificates or set [mqtt] ca_file"
                            .into(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| settings(format!("[mqtt] TLS setup failed: {e}")))?
            .with_root_certificates(roots);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key_file)) => {
                let (chain, key) = read_identity("[mqtt]", cert, key_file).map_err(settings)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    settings(format!(
                        "[mqtt] cert_file {} and key_file {}: {e}",
                        cert.display(),
                        key_file.display()
                    ))
                })
            }
        }
    }
}

/// The certificate chain of `cert_file` and the private key of `key_file`, both PEM, read
/// now so that a missing or broken file is named with its `section` (`[mqtt]`, `[http]`).
pub type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// Reads a TLS identity: see [`Identity`].
pub fn read_identity(
    section: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Identity, String> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| format!("{section} {field} {}: cannot read it: {e}", path.display()))
    };
    let pem = read("cert_file", cert)?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{section} cert_file {}: not PEM certificates: {e}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{section} cert_file {}: holds no certificate",
            cert.display()
        ));
    }
    let pem = read("key_file", key)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| {
            format!(
                "{section} key_file {}: holds no PEM private key",
                key.display()
            )
        })?;
    Ok((chain, key))
}

/// `[mqtt]` cannot be used as given.
fn settings(message: String) -> Error {
    Error::new(ErrorKind::Settings, message)
}

/// What the rest of the crate asks of the link.
pub(crate) enum LinkCommand {
    /// An outbox record; `key` is empty when it could not be made durable.
    Publish { key: String, record: OutboxRecord },
    /// Retained state: the newest payload per topic wins, and is re-sent on every reconnect.
    Retain { topic: String, payload: String },
    /// A plain QoS 1 message that is not an alert (a dead letter): not in the outbox.
    Notice { topic: String, payload: String },
    /// A panic inside the link, for the test that shows it survives one.
    #[cfg(test)]
    Panic,
}

/// A message received on one of the extra subscriptions (sensor readings).
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub received: std::time::SystemTime,
}

/// Where messages on the extra subscriptions go.
pub(crate) struct Inbound {
    pub filters: Vec<String>,
    pub tx: mpsc::Sender<InboundMessage>,
}

/// An acknowledgement message received on `{prefix}/acks/{alert_id}`, or on
/// `{prefix}/acks/{grid}/{alert_id}` from a centre whose account may write only there.
pub(crate) struct IncomingAck {
    pub alert_id: String,
    pub grid: Option<String>,
    pub payload: Vec<u8>,
}

enum Item {
    Alert { key: String, record: OutboxRecord },
    Status { topic: String },
    Notice { topic: String, payload: String },
}

/// What waits for a packet id, in three lines: alerts, retained statuses, notices (dead
/// letters). While running, alerts go first, so a flood of dead letters or a reconnect's
/// statuses never delay one; while draining at shutdown, statuses go first, so camera
/// `stopped` and node `offline` are out before the DISCONNECT.
#[derive(Default)]
struct SendQueue {
    alerts: VecDeque<Item>,
    statuses: VecDeque<Item>,
    notices: VecDeque<Item>,
    draining: bool,
}

impl SendQueue {
    fn push(&mut self, item: Item) {
        match item {
            Item::Alert { .. } => self.alerts.push_back(item),
            Item::Status { .. } => self.statuses.push_back(item),
            Item::Notice { .. } => self.notices.push_back(item),
        }
    }

    /// Queues the retained state of `topic` unless it already waits (it is read when sent,
    /// so one queued entry always carries the newest payload); `first`: ahead of the others.
    fn push_status(&mut self, topic: String, first: bool) {
        let queued = self
            .statuses
            .iter()
            .any(|i| matches!(i, Item::Status { topic: t } if *t == topic));
        if queued {
            return;
        }
        if first {
            self.statuses.push_front(Item::Status { topic });
        } else {
            self.statuses.push_back(Item::Status { topic });
        }
    }

    fn pop(&mut self) -> Option<Item> {
        if self.draining {
            self.statuses
                .pop_front()
                .or_else(|| self.alerts.pop_front())
        } else {
            self.alerts
                .pop_front()
                .or_else(|| self.statuses.pop_front())
        }
        .or_else(|| self.notices.pop_front())
    }

    fn len(&self) -> usize {
        self.alerts.len() + self.statuses.len() + self.notices.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn alerts(&self) -> usize {
        self.alerts.len()
    }
}

struct InFlight {
    item: Item,
    /// Order of first sending, so re-sends keep the original order.
    seq: u64,
    sent_at: Instant,
}

pub(crate) struct Link {
    settings: MqttSettings,
    eventloop: EventLoop,
    client: AsyncClient,
    stats: Arc<Stats>,
    commands: mpsc::UnboundedReceiver<LinkCommand>,
    acks: mpsc::Sender<IncomingAck>,
    inbound: Option<Inbound>,
    connected: bool,
    queue: SendQueue,
    /// Outbox keys of alerts the broker acknowledged, for [`remove_published`]: removing
    /// them here would stall the link on a slow store.
    published: mpsc::UnboundedSender<(String, String)>,
    remover: tokio::task::JoinHandle<()>,
    in_flight: BTreeMap<u16, InFlight>,
    free: Vec<u16>,
    next_seq: u64,
    retained: BTreeMap<String, String>,
    backoff: Duration,
    failures: u32,
}

impl Link {
    pub(crate) fn new(
        settings: MqttSettings,
        store: Arc<dyn StateStore>,
        stats: Arc<Stats>,
        pending: Vec<(String, OutboxRecord)>,
        commands: mpsc::UnboundedReceiver<LinkCommand>,
        acks: mpsc::Sender<IncomingAck>,
        inbound: Option<Inbound>,
    ) -> Result<Self, Error> {
        let options = settings.options()?;
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(5);
        eventloop.set_network_options(network);
        let mut retained = BTreeMap::new();
        retained.insert(settings.node_status_topic(), settings.node_status("online"));
        let (published, removals) = mpsc::unbounded_channel();
        let remover = tokio::spawn(sharpeyes_ingest::cpu::Measured::new(
            sharpeyes_ingest::cpu::Stage::Publish,
            remove_published(store.clone(), removals),
        ));
        let link = Self {
            eventloop,
            client,
            stats,
            commands,
            acks,
            inbound,
            connected: false,
            queue: {
                let mut queue = SendQueue::default();
                for (key, record) in pending {
                    queue.push(Item::Alert { key, record });
                }
                queue
            },
            published,
            remover,
            in_flight: BTreeMap::new(),
            free: (1..=WINDOW).rev().collect(),
            next_seq: 0,
            retained,
            backoff: BACKOFF_MIN,
            failures: 0,
            settings,
        };
        // The outbox of an earlier run waits like any alert handed over.
        link.stats
            .alerts_waiting
            .fetch_add(link.queue.alerts(), Ordering::Relaxed);
        link.counts();
        Ok(link)
    }

    /// Runs until shutdown (then drains for a bounded time) or until every handle is gone.
    ///
    /// `EventLoop::poll` is not cancel-safe while it connects: dropped between CONNECT and
    /// CONNACK, it leaves a connection the broker sees vanish, which fires the last will. So a
    /// connection attempt is interrupted only by shutdown; commands wait in their channel.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        use futures_util::FutureExt;
        // However the link ends, it is no longer connected: `/readyz` says so rather than
        // report a dead link as up.
        let _down = Disconnected(self.stats.clone());
        // Ticks missed while disconnected are skipped, not fired in a burst on reconnecting:
        // a burst checked stale send times once per missed second and reconnected each time.
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let step = std::panic::AssertUnwindSafe(self.step(&mut shutdown, &mut watchdog))
                .catch_unwind()
                .await;
            match step {
                Ok(Step::Go) => {}
                Ok(Step::Stop) => break,
                Err(panic) => {
                    // What the link holds (the queue, the window, the outbox keys) survives;
                    // the connection is started again, as after a lost one.
                    let message = sharpeyes_analytics::panic_message(panic.as_ref());
                    tracing::error!(task = "mqtt-link", panic = %message, in_flight = self.in_flight.len(), queued = self.queue.len(), "the MQTT link panicked (a bug; please report it): counted; it reconnects and goes on");
                    self.stats.link_restarts.fetch_add(1, Ordering::Relaxed);
                    self.eventloop.clean();
                    let wait = self.down();
                    tokio::select! {
                        biased;
                        _ = stopped(&mut shutdown) => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.drain().await;
    }

    /// One turn of the link: a command, a watchdog tick or one event of the connection.
    async fn step(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        watchdog: &mut tokio::time::Interval,
    ) -> Step {
        let event = if self.connected {
            self.fill_window();
            tokio::select! {
                biased;
                _ = stopped(shutdown) => return Step::Stop,
                command = self.commands.recv() => {
                    match command {
                        Some(c) => self.command(c),
                        None => return Step::Stop,
                    }
                    return Step::Go;
                }
                _ = watchdog.tick() => {
                    self.check_stuck();
                    return Step::Go;
                }
                event = self.eventloop.poll() => event,
            }
        } else {
            tokio::select! {
                biased;
                _ = stopped(shutdown) => return Step::Stop,
                event = self.eventloop.poll() => event,
            }
        };
        match event {
            Ok(event) => self.event(event).await,
            Err(e) => {
                let wait = self.lost(e);
                tokio::select! {
                    biased;
                    _ = stopped(shutdown) => return Step::Stop,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        Step::Go
    }

    fn command(&mut self, command: LinkCommand) {
        match command {
            LinkCommand::Publish { key, record } => self.queue.push(Item::Alert { key, record }),
            LinkCommand::Retain { topic, payload } => {
                // An empty payload clears the topic at the broker (`send` reads it as empty),
                // and is not kept to be sent again after every reconnect.
                if payload.is_empty() {
                    self.retained.remove(&topic);
                } else {
                    self.retained.insert(topic.clone(), payload);
                }
                self.queue.push_status(topic, false);
            }
            LinkCommand::Notice { topic, payload } => {
                self.queue.push(Item::Notice { topic, payload })
            }
            #[cfg(test)]
            LinkCommand::Panic => panic!("a panic put in the link by a test"),
        }
        self.counts();
    }

    /// What the link holds, for metrics.
    fn counts(&self) {
        self.stats.queued.store(self.queue.len(), Ordering::Relaxed);
        self.stats
            .in_flight
            .store(self.in_flight.len(), Ordering::Relaxed);
    }

    /// Hands queued items to the event loop while ids are free and the connection is up.
    fn fill_window(&mut self) {
        if !self.connected {
            return;
        }
        while !self.queue.is_empty() {
            let Some(pkid) = self.free.pop() else { break };
            let Some(item) = self.queue.pop() else {
                break;
            };
            self.next_seq += 1;
            let seq = self.next_seq;
            self.send(pkid, &item);
            self.in_flight.insert(
                pkid,
                InFlight {
                    item,
                    seq,
                    sent_at: Instant::now(),
                },
            );
        }
        self.counts();
    }

    fn send(&mut self, pkid: u16, item: &Item) {
        let mut publish = match item {
            Item::Alert { record, .. } => Publish::new(
                record.topic.as_str(),
                QoS::AtLeastOnce,
                record.payload.as_bytes(),
            ),
            Item::Status { topic } => {
                let payload = self.retained.get(topic).cloned().unwrap_or_default();
                let mut p = Publish::new(topic.as_str(), QoS::AtLeastOnce, payload);
                p.retain = true;
                p
            }
            Item::Notice { topic, payload } => {
                Publish::new(topic.as_str(), QoS::AtLeastOnce, payload.as_bytes())
            }
        };
        publish.pkid = pkid;
        self.eventloop.pending.push_back(Request::Publish(publish));
    }

    async fn event(&mut self, event: Event) {
        let Event::Incoming(packet) = event else {
            return;
        };
        match packet {
            Incoming::ConnAck(ack) => {
                self.connected = true;
                self.stats.connected.store(true, Ordering::Relaxed);
                self.backoff = BACKOFF_MIN;
                if self.failures > 0 {
                    tracing::info!(broker = %self.settings.broker(), client_id = %self.settings.client_id, after_failures = self.failures, session_present = ack.session_present, "MQTT connection restored");
                } else {
                    tracing::info!(broker = %self.settings.broker(), client_id = %self.settings.client_id, "MQTT connected");
                }
                self.failures = 0;
                let mut filters = vec![
                    format!("{}/acks/+", self.settings.prefix),
                    format!("{}/acks/+/+", self.settings.prefix),
                ];
                filters.extend(self.inbound.iter().flat_map(|i| i.filters.iter().cloned()));
                self.subscribe_first(&filters);
                if ack.session_present {
                    // rumqttc re-sends what is in flight now: its wait for a PUBACK starts again.
                    let now = Instant::now();
                    for flight in self.in_flight.values_mut() {
                        flight.sent_at = now;
                    }
                } else {
                    // The broker forgot the session, and rumqttc dropped what it would have
                    // re-sent: send it again ourselves, in the original order, first.
                    let mut lost: Vec<(u16, InFlight)> =
                        std::mem::take(&mut self.in_flight).into_iter().collect();
                    lost.sort_by_key(|(_, f)| f.seq);
                    for (pkid, mut flight) in lost {
                        self.send(pkid, &flight.item);
                        flight.sent_at = Instant::now();
                        self.in_flight.insert(pkid, flight);
                    }
                }
                // Retained state may be gone with a broker that restarted without persistence.
                let topics: Vec<String> = self.retained.keys().cloned().collect();
                for topic in topics.into_iter().rev() {
                    self.queue.push_status(topic, true);
                }
            }
            // The one SUBSCRIBE of this connection (`subscribe_first`).
            Incoming::SubAck(ack) => {
                let refused = (ack.return_codes.iter())
                    .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .count();
                if refused > 0 {
                    tracing::error!(broker = %self.settings.broker(), refused, "the broker refused subscriptions of this node (operators' acknowledgements, sensor readings): check its ACL for this client");
                }
                self.stats.subscribed.store(true, Ordering::Relaxed);
            }
            Incoming::PubAck(ack) => {
                let Some(flight) = self.in_flight.remove(&ack.pkid) else {
                    tracing::debug!(pkid = ack.pkid, "PUBACK for no publish of ours");
                    return;
                };
                self.free.push(ack.pkid);
                if let Item::Alert { key, record } = flight.item {
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                    let _ = self.stats.alerts_waiting.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |n| Some(n.saturating_sub(1)),
                    );
                    tracing::debug!(alert = %record.alert_id, topic = %record.topic, "alert acknowledged by the broker");
                    if !key.is_empty() {
                        let _ = self.published.send((key, record.alert_id));
                    }
                }
                self.counts();
            }
            Incoming::Publish(publish) => {
                let prefix = format!("{}/acks/", self.settings.prefix);
                if let Some(rest) = publish.topic.strip_prefix(&prefix) {
                    let (grid, alert_id) = match rest.split_once('/') {
                        Some((grid, id)) => (Some(grid.to_owned()), id),
                        None => (None, rest),
                    };
                    let ack = IncomingAck {
                        alert_id: alert_id.to_owned(),
                        grid,
                        payload: publish.payload.to_vec(),
                    };
                    if self.acks.try_send(ack).is_err() {
                        tracing::warn!(topic = %publish.topic, "acknowledgement dropped: the handler is behind");
                    }
                } else if let Some(inbound) = &self.inbound {
                    let message = InboundMessage {
                        topic: publish.topic.clone(),
                        payload: publish.payload.to_vec(),
                        received: std::time::SystemTime::now(),
                    };
                    if inbound.tx.try_send(message).is_err() {
                        self.stats.inbound_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(topic = %publish.topic, "inbound message dropped: its handler is behind or gone");
                    }
                }
            }
            _ => {}
        }
    }

    /// Puts the SUBSCRIBE ahead of every PUBLISH of this connection. The broker handles one
    /// connection's packets in order, so a centre that acknowledges an alert the moment it
    /// arrives finds the subscription in place; through the client's channel the SUBSCRIBE
    /// went after the publishes rumqttc holds, and the broker dropped such an acknowledgement.
    fn subscribe_first(&mut self, filters: &[String]) {
        let (valid, invalid): (Vec<&String>, Vec<&String>) =
            filters.iter().partition(|f| rumqttc::valid_filter(f));
        if !invalid.is_empty() {
            // A broker disconnects a client for an invalid filter: leave it out.
            tracing::error!(topics = ?invalid, "cannot subscribe: not valid MQTT filters");
        }
        if valid.is_empty() {
            return;
        }
        let subscribe = rumqttc::Subscribe::new_many(
            valid
                .into_iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
        );
        self.eventloop
            .pending
            .push_front(Request::Subscribe(subscribe));
    }

    /// The connection failed: everything in flight waits for the next connection. Returns how
    /// long to wait before reconnecting.
    fn lost(&mut self, error: ConnectionError) -> Duration {
        self.failures += 1;
        if self.connected {
            tracing::warn!(broker = %self.settings.broker(), client_id = %self.settings.client_id, in_flight = self.in_flight.len(), queued = self.queue.len(), "MQTT connection lost: {error}; reconnecting");
        } else if self.failures == 1 || self.failures % 20 == 0 {
            tracing::warn!(broker = %self.settings.broker(), attempts = self.failures, "cannot connect to the MQTT broker: {error}; retrying (alerts wait in the outbox)");
        }
        self.down()
    }

    /// Marks the connection down; returns how long to wait before reconnecting.
    fn down(&mut self) -> Duration {
        self.connected = false;
        self.stats.link_down();
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        wait
    }

    fn check_stuck(&mut self) {
        if !self.connected {
            return;
        }
        let timeout = self.settings.keep_alive * ACK_TIMEOUT_KEEPALIVES;
        let stuck = self
            .in_flight
            .values()
            .any(|f| f.sent_at.elapsed() > timeout);
        if stuck {
            tracing::warn!(broker = %self.settings.broker(), "a publish waited {timeout:?} for its PUBACK; reconnecting to re-send");
            self.eventloop.clean();
            self.connected = false;
            self.stats.link_down();
        }
    }

    /// On shutdown: give the broker a bounded time for what is in flight, say offline, leave.
    async fn drain(mut self) {
        self.queue.draining = true;
        let offline = self.settings.node_status("offline");
        self.command(LinkCommand::Retain {
            topic: self.settings.node_status_topic(),
            payload: offline,
        });
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self.connected && !(self.queue.is_empty() && self.in_flight.is_empty()) {
            self.fill_window();
            match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                Ok(Ok(event)) => self.event(event).await,
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let left = self.queue.alerts()
            + self
                .in_flight
                .values()
                .filter(|f| matches!(f.item, Item::Alert { .. }))
                .count();
        if left > 0 {
            tracing::warn!(
                alerts = left,
                "shutting down with alerts not yet acknowledged by the broker; they stay in the outbox for the next start"
            );
        }
        if self.connected && self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = self.eventloop.poll().await {
                    if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        // The removals of what was published: a few store calls, bounded.
        let Self {
            published, remover, ..
        } = self;
        drop(published);
        if tokio::time::timeout(DRAIN_TIMEOUT, remover).await.is_err() {
            tracing::warn!(
                "the outbox is still being cleaned at shutdown: published alerts may be sent again after a restart"
            );
        }
    }
}

/// What the link does after one [`Link::step`].
enum Step {
    Go,
    Stop,
}

/// Marks the link down when dropped.
struct Disconnected(Arc<Stats>);

impl Drop for Disconnected {
    fn drop(&mut self) {
        self.0.link_down();
    }
}

/// Removes published alerts from the outbox, off the link: a store that is slow or down
/// delays only this, never the next publish. An entry that cannot be removed stays, to be
/// sent again after a restart (a duplicate with the same id, which subscribers drop).
async fn remove_published(
    store: Arc<dyn StateStore>,
    mut removals: mpsc::UnboundedReceiver<(String, String)>,
) {
    while let Some((key, alert_id)) = removals.recv().await {
        if let Err(e) = store.outbox_remove(&key).await {
            tracing::warn!(alert = %alert_id, "published, but the outbox entry stays: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use sharpeyes_testkit::{Mosquitto, Subscriber};

    fn record(n: u32) -> OutboxRecord {
        OutboxRecord {
            alert_id: format!("alert-{n}"),
            topic: format!("t/alerts/{n}"),
            payload: format!("{{\"n\":{n}}}"),
        }
    }

    /// A panic in the link costs a reconnect: what it held and what comes after still go out,
    /// and the restart is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_link_survives_a_panic_and_delivers_what_it_held_and_what_follows() {
        let broker = Mosquitto::start(false, &[]);
        let sub = Subscriber::connect(broker.port, "centre-link", "t/alerts/#", None).await;
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let stats = Arc::new(Stats::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let (acks, _acks_rx) = mpsc::channel(8);
        let settings = MqttSettings::plain("127.0.0.1", broker.port, "t", "link-test");
        let link = Link::new(
            settings,
            store.clone(),
            stats.clone(),
            Vec::new(),
            rx,
            acks,
            None,
        )
        .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(link.run(shutdown));
        let mut keys = Vec::new();
        for n in 0..3 {
            let r = record(n);
            let key = store.outbox_append(&r).await.unwrap();
            keys.push(key.clone());
            commands
                .send(LinkCommand::Publish { key, record: r })
                .unwrap();
            if n == 1 {
                commands.send(LinkCommand::Panic).unwrap();
            }
        }
        let got = sub
            .wait_until(Duration::from_secs(15), |m| m.len() >= 3)
            .await;
        let mut topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        assert_eq!(topics, ["t/alerts/0", "t/alerts/1", "t/alerts/2"]);
        assert_eq!(stats.link_restarts.load(Ordering::Relaxed), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.outbox_len().await.unwrap() > 0 {
            assert!(
                Instant::now() < deadline,
                "published alerts stay in the outbox"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stats.connected.load(Ordering::Relaxed), "connected again");
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the link stops")
            .unwrap();
    }
}
