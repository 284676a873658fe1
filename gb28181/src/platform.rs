//! A small GB/T 28181 platform, for tests and for integrators without one (`sharpeyes
//! gb28181 listen`): a SIP UAS on a UDP or TCP port that challenges
//! REGISTER with Digest (MD5, qop=auth) and checks the answer itself, answers MESSAGEs,
//! records their bodies, and reads alarms the way WVP's `AlarmNotifyMessageHandler` does:
//! the body decoded by the charset its XML prolog names, an alarm without `AlarmTime`
//! dropped, `AlarmType` read only inside `Info`. It can query the device's Catalog, and go
//! away and come back on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashSet;

use crate::{Charset, Incoming, element, take_message};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An alarm as WVP would take it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformAlarm {
    pub device_id: String,
    pub priority: String,
    pub method: String,
    pub time: String,
    pub description: String,
    /// From `Info/AlarmType` only.
    pub alarm_type: Option<String>,
    pub event_type: Option<String>,
}

/// What the platform saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// REGISTERs answered 200 OK, and refused for a wrong answer to the challenge.
    pub registered: usize,
    pub refused: usize,
    /// The Authorization headers' `username`s and whether any carried the password itself.
    pub usernames: Vec<String>,
    pub password_seen: bool,
    pub keepalives: usize,
    pub alarms: Vec<PlatformAlarm>,
    /// Alarm MESSAGEs dropped as WVP drops them (no `AlarmTime`).
    pub dropped: usize,
    /// Bodies of `Response` MESSAGEs (Catalog, DeviceInfo), decoded.
    pub responses: Vec<String>,
    /// Where the device registered from, last and at each registration.
    pub device: Option<SocketAddr>,
    pub sources: Vec<SocketAddr>,
    /// Request datagrams that did not parse as SIP.
    pub malformed: usize,
}

/// See the module docs.
pub struct SipPlatform {
    pub port: u16,
    ip: std::net::IpAddr,
    tcp: bool,
    serve: Arc<Serve>,
    tasks: Vec<JoinHandle<()>>,
    udp: Option<Arc<UdpSocket>>,
    /// The device's TCP connection, to send it queries.
    to_device: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>>,
}

impl SipPlatform {
    /// Listens on a free loopback UDP port; `realm` is its 10-digit domain, `password` the
    /// one it gave the device.
    pub async fn start(realm: &str, password: &str) -> Self {
        Self::start_on(realm, password, false).await
    }

    /// The same over TCP: the device connects, and everything goes over that connection.
    pub async fn start_tcp(realm: &str, password: &str) -> Self {
        Self::start_on(realm, password, true).await
    }

    async fn start_on(realm: &str, password: &str, tcp: bool) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::listen_at(loopback, realm, password, tcp)
            .await
            .expect("a loopback port")
    }

    /// Listens at `addr` (port 0: a free one), over TCP when `tcp`.
    pub async fn listen_at(
        addr: SocketAddr,
        realm: &str,
        password: &str,
        tcp: bool,
    ) -> std::io::Result<Self> {
        let mut platform = Self {
            port: addr.port(),
            ip: addr.ip(),
            tcp,
            serve: Arc::new(Serve {
                realm: realm.to_owned(),
                password: password.to_owned(),
                seen: Arc::new(Mutex::new(Seen::default())),
                state: Mutex::new(Transactions::default()),
            }),
            tasks: Vec::new(),
            udp: None,
            to_device: Arc::new(Mutex::new(None)),
        };
        platform.listen().await?;
        Ok(platform)
    }

    async fn listen(&mut self) -> std::io::Result<()> {
        if self.tcp {
            let listener = TcpListener::bind((self.ip, self.port)).await?;
            self.port = listener.local_addr()?.port();
            let (serve, to_device) = (self.serve.clone(), self.to_device.clone());
            self.tasks.push(tokio::spawn(async move {
                let mut connections = Vec::new();
                while let Ok((stream, from)) = listener.accept().await {
                    let (tx, rx) = mpsc::unbounded_channel();
                    *to_device.lock().expect("not poisoned") = Some(tx);
                    connections.push(AbortOnDrop(tokio::spawn(
                        serve.clone().tcp(stream, from, rx),
                    )));
                }
            }));
        } else {
            let socket = Arc::new(UdpSocket::bind((self.ip, self.port)).await?);
            self.port = socket.local_addr()?.port();
            self.udp = Some(socket.clone());
            self.tasks
                .push(tokio::spawn(self.serve.clone().udp(socket)));
        }
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn seen(&self) -> Seen {
        self.serve.seen.lock().expect("not poisoned").clone()
    }

    /// Polls until `check` holds of what was seen, for at most `limit`; what was seen then.
    pub async fn wait_until(&self, limit: Duration, check: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = self.seen();
            if check(&seen) || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Gone: nothing listens on the port, and a TCP connection is cut.
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.udp = None;
        *self.to_device.lock().expect("not poisoned") = None;
    }

    /// Back on the same port, forgetting who had registered.
    pub async fn start_again(&mut self) {
        assert!(self.tasks.is_empty(), "running already");
        // The aborted task may hold the socket a moment longer.
        for _ in 0..50 {
            let free = if self.tcp {
                TcpListener::bind((self.ip, self.port)).await.is_ok()
            } else {
                UdpSocket::bind((self.ip, self.port)).await.is_ok()
            };
            if free {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.serve.seen.lock().expect("not poisoned").device = None;
        self.listen().await.expect("the port it had");
    }

    /// Sends the device a query (`Catalog`, `DeviceInfo`, ...); it must have registered.
    pub async fn query(&self, cmd: &str, sn: u32, device_id: &str) {
        let device = self.seen().device.expect("the device registered");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n</Query>\r\n"
        );
        let request = format!(
            "MESSAGE sip:{device_id}@{device} SIP/2.0\r\nVia: SIP/2.0/{} {ip}:{port};rport;branch=z9hG4bKq{sn}\r\nFrom: <sip:platform@{realm}>;tag=p{sn}\r\nTo: <sip:{device_id}@{realm}>\r\nCall-ID: query-{sn}@platform\r\nCSeq: {sn} MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {}\r\n\r\n{body}",
            if self.tcp { "TCP" } else { "UDP" },
            body.len(),
            port = self.port,
            ip = self.ip,
            realm = self.serve.realm
        );
        if let Some(socket) = &self.udp {
            socket
                .send_to(request.as_bytes(), device)
                .await
                .expect("sent");
        } else if let Some(tx) = self.to_device.lock().expect("not poisoned").as_ref() {
            let _ = tx.send(request.into_bytes());
        }
    }
}

impl Drop for SipPlatform {
    fn drop(&mut self) {
        self.stop();
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Serve {
    realm: String,
    password: String,
    seen: Arc<Mutex<Seen>>,
    state: Mutex<Transactions>,
}

/// The last nonce given, and the MESSAGE transactions taken (Call-ID, CSeq).
#[derive(Default)]
struct Transactions {
    nonce: u64,
    taken: HashSet<(Option<String>, Option<String>)>,
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `key="value"` or `key=value` out of a Digest header.
fn param(header: &str, key: &str) -> Option<String> {
    let rest = header.strip_prefix("Digest").unwrap_or(header);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(v.trim().trim_matches('"').to_owned());
        }
    }
    None
}

impl Serve {
    async fn udp(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            if let Some(answer) = self.handle(&buf[..n], from) {
                let _ = socket.send_to(answer.as_bytes(), from).await;
            }
        }
    }

    async fn tcp(
        self: Arc<Self>,
        mut stream: TcpStream,
        from: SocketAddr,
        mut queries: mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 8192];
        loop {
            tokio::select! {
                read = stream.read(&mut chunk) => {
                    let Ok(n) = read else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some(message)) = take_message(&mut buf) {
                        if let Some(answer) = self.handle(&message, from) {
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                query = queries.recv() => {
                    let Some(query) = query else { return };
                    if stream.write_all(&query).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The answer to one message from the device, if it needs one.
    fn handle(&self, bytes: &[u8], from: SocketAddr) -> Option<String> {
        let Ok(message) = Incoming::parse(bytes) else {
            self.seen.lock().expect("not poisoned").malformed += 1;
            return None;
        };
        let text = String::from_utf8_lossy(bytes).into_owned();
        let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
        let header = |name: &str| -> Option<String> {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let first = head.lines().next().unwrap_or("").to_owned();
        if first.starts_with("SIP/2.0") {
            return None; // the device's answers to our queries
        }
        let method = first.split(' ').next().unwrap_or("").to_owned();
        let reply = |code: &str, extra: &str| {
            let mut out = format!("SIP/2.0 {code}\r\n");
            for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                if let Some(v) = header(name) {
                    let v = if name == "To" && !v.contains("tag=") {
                        format!("{v};tag=platform")
                    } else {
                        v
                    };
                    out.push_str(&format!("{name}: {v}\r\n"));
                }
            }
            out.push_str(extra);
            out.push_str("Content-Length: 0\r\n\r\n");
            out
        };
        let mut state = self.state.lock().expect("not poisoned");
        Some(match method.as_str() {
            "REGISTER" => match header("Authorization") {
                None => {
                    state.nonce += 1;
                    reply(
                        "401 Unauthorized",
                        &format!(
                            "WWW-Authenticate: Digest realm=\"{}\", nonce=\"n{:08x}\", qop=\"auth\", algorithm=MD5\r\n",
                            self.realm, state.nonce
                        ),
                    )
                }
                Some(auth) => {
                    let get = |k: &str| param(&auth, k).unwrap_or_default();
                    let ha1 = md5_hex(&format!(
                        "{}:{}:{}",
                        get("username"),
                        self.realm,
                        self.password
                    ));
                    let ha2 = md5_hex(&format!("REGISTER:{}", get("uri")));
                    let want = md5_hex(&format!(
                        "{ha1}:{}:{}:{}:{}:{ha2}",
                        get("nonce"),
                        get("nc"),
                        get("cnonce"),
                        get("qop")
                    ));
                    let mut seen = self.seen.lock().expect("not poisoned");
                    seen.usernames.push(get("username"));
                    seen.password_seen |= text.contains(&self.password);
                    if get("realm") == self.realm && get("qop") == "auth" && get("response") == want
                    {
                        seen.registered += 1;
                        seen.device = Some(from);
                        seen.sources.push(from);
                        reply(
                            "200 OK",
                            &format!(
                                "Expires: {}\r\n",
                                header("Expires").unwrap_or("3600".into())
                            ),
                        )
                    } else {
                        seen.refused += 1;
                        reply("403 Forbidden", "")
                    }
                }
            },
            "MESSAGE" => {
                // A transaction layer's work: a retransmission is answered, not taken twice.
                let key = (header("Call-ID"), header("CSeq"));
                if state.taken.insert(key) {
                    self.message(&message.body);
                }
                reply("200 OK", "")
            }
            _ => reply("405 Method Not Allowed", ""),
        })
    }

    fn message(&self, body: &[u8]) {
        // As WVP: the prolog's encoding decides, GB2312 when it names none.
        let prolog = String::from_utf8_lossy(&body[..body.len().min(100)]).to_ascii_uppercase();
        let charset = if prolog.contains("UTF-8") {
            Charset::Utf8
        } else {
            Charset::Gb2312
        };
        let xml = charset.decode(body);
        let mut seen = self.seen.lock().expect("not poisoned");
        if xml.contains("<Response>") {
            seen.responses.push(xml);
            return;
        }
        match element(&xml, "CmdType").as_deref() {
            Some("Keepalive") => seen.keepalives += 1,
            Some("Alarm") => {
                let Some(time) = element(&xml, "AlarmTime").filter(|t| !t.is_empty()) else {
                    seen.dropped += 1;
                    return;
                };
                let info = element(&xml, "Info");
                seen.alarms.push(PlatformAlarm {
                    device_id: element(&xml, "DeviceID").unwrap_or_default(),
                    priority: element(&xml, "AlarmPriority").unwrap_or_default(),
                    method: element(&xml, "AlarmMethod").unwrap_or_default(),
                    time,
                    description: element(&xml, "AlarmDescription").unwrap_or_default(),
                    alarm_type: info.as_deref().and_then(|i| element(i, "AlarmType")),
                    event_type: info.as_deref().and_then(|i| element(i, "EventType")),
                });
            }
            _ => {}
        }
    }
}
