//! A GB/T 28181 platform for tests: a SIP UAS on a free loopback UDP port that challenges
//! REGISTER with Digest (MD5, qop=auth) and checks the answer itself, answers MESSAGEs,
//! records their bodies, and reads alarms the way WVP's `AlarmNotifyMessageHandler` does:
//! the body decoded by the charset its XML prolog names, an alarm without `AlarmTime`
//! dropped, `AlarmType` read only inside `Info`. It can query the device's Catalog, and go
//! away and come back on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use sharpeyes_gb28181::{Charset, Incoming, element};
use tokio::net::UdpSocket;
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
    /// Where the device registered from.
    pub device: Option<SocketAddr>,
    /// Request datagrams that did not parse as SIP.
    pub malformed: usize,
}

/// See the module docs.
pub struct SipPlatform {
    pub port: u16,
    realm: String,
    password: String,
    seen: Arc<Mutex<Seen>>,
    task: Option<JoinHandle<()>>,
    socket: Option<Arc<UdpSocket>>,
}

impl SipPlatform {
    /// Listens on a free loopback port; `realm` is its 10-digit domain, `password` the one it
    /// gave the device.
    pub async fn start(realm: &str, password: &str) -> Self {
        let mut platform = Self {
            port: 0,
            realm: realm.to_owned(),
            password: password.to_owned(),
            seen: Arc::new(Mutex::new(Seen::default())),
            task: None,
            socket: None,
        };
        platform.listen().await;
        platform
    }

    async fn listen(&mut self) {
        let socket = Arc::new(
            UdpSocket::bind(("127.0.0.1", self.port))
                .await
                .expect("a loopback UDP port"),
        );
        self.port = socket.local_addr().expect("bound").port();
        let serve = Serve {
            socket: socket.clone(),
            realm: self.realm.clone(),
            password: self.password.clone(),
            seen: self.seen.clone(),
        };
        self.socket = Some(socket);
        self.task = Some(tokio::spawn(serve.run()));
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("not poisoned").clone()
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

    /// Gone: nothing listens on the port (the device's datagrams are lost).
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.socket = None;
    }

    /// Back on the same port, forgetting who had registered.
    pub async fn start_again(&mut self) {
        assert!(self.task.is_none(), "running already");
        // The aborted task may hold the socket a moment longer.
        for _ in 0..50 {
            if UdpSocket::bind(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen.lock().expect("not poisoned").device = None;
        self.listen().await;
    }

    /// Sends the device a Catalog query (it must have registered).
    pub async fn query(&self, cmd: &str, sn: u32, device_id: &str) {
        let device = self.seen().device.expect("the device registered");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n</Query>\r\n"
        );
        let request = format!(
            "MESSAGE sip:{device_id}@{device} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKq{sn}\r\nFrom: <sip:platform@{realm}>;tag=p{sn}\r\nTo: <sip:{device_id}@{realm}>\r\nCall-ID: query-{sn}@platform\r\nCSeq: {sn} MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
            port = self.port,
            realm = self.realm
        );
        let socket = self.socket.as_ref().expect("running");
        socket
            .send_to(request.as_bytes(), device)
            .await
            .expect("sent");
    }
}

impl Drop for SipPlatform {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Serve {
    socket: Arc<UdpSocket>,
    realm: String,
    password: String,
    seen: Arc<Mutex<Seen>>,
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
    async fn run(self) {
        let mut buf = vec![0u8; 65536];
        let mut nonce = 0u64;
        let mut taken = std::collections::HashSet::new();
        loop {
            let Ok((n, from)) = self.socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(message) = Incoming::parse(&buf[..n]) else {
                self.seen.lock().expect("not poisoned").malformed += 1;
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
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
                continue; // the device's answers to our queries
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
            let answer = match method.as_str() {
                "REGISTER" => match header("Authorization") {
                    None => {
                        nonce += 1;
                        reply(
                            "401 Unauthorized",
                            &format!(
                                "WWW-Authenticate: Digest realm=\"{}\", nonce=\"n{nonce:08x}\", qop=\"auth\", algorithm=MD5\r\n",
                                self.realm
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
                        if get("realm") == self.realm
                            && get("qop") == "auth"
                            && get("response") == want
                        {
                            seen.registered += 1;
                            seen.device = Some(from);
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
                    if !taken.contains(&key) {
                        taken.insert(key);
                        self.message(&message.body);
                    }
                    reply("200 OK", "")
                }
                _ => reply("405 Method Not Allowed", ""),
            };
            let _ = self.socket.send_to(answer.as_bytes(), from).await;
        }
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
