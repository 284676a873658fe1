//! Real servers for the delivery tests: mosquitto and redis-server on free loopback ports in
//! temporary directories, stopped when dropped; an MQTT subscriber that collects messages;
//! and alerts to send. Every wait is bounded.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use sharpeyes_alerts::{Alert, FrameSize};
use sharpeyes_analytics::{BBox, EventObject, HazardEvent};
use sharpeyes_config::{Config, Severity};

pub const CAMERA: &str = "32132200531320000001";
pub const GRID: &str = "321322-001-003-07";
pub const PREFIX: &str = "se-test";

/// The test grid hierarchy, county down to `GRID`, each level with its centre.
macro_rules! grids {
    () => {
        r#"
[[grids]]
id = "321322"
name = "沭阳县"
centre = "县中心"
[[grids]]
id = "321322-001"
name = "沭城街道"
centre = "街道中心"
[[grids]]
id = "321322-001-003"
name = "东元社区"
centre = "社区服务站"
[[grids]]
id = "321322-001-003-07"
name = "第七网格"
centre = "社区服务站"
"#
    };
}

/// [`grids!`] for tests that build their configuration at run time.
pub const GRIDS: &str = grids!();

/// One camera in a four-level grid. `fire` has no cooldown and no escalation (bursts),
/// `smoke` a one-minute cooldown, `fallen-person` escalates after one second.
pub const CONFIG: &str = concat!(
    r#"
[node]
id = "test-node"
"#,
    grids!(),
    r#"
[[models]]
name = "m"
path = "m.onnx"
layout = "yolov8"
input_size = 320
classes = ["fire", "smoke", "Fall"]

[[hazards]]
name = "fire"
model = "m"
classes = ["fire"]
severity = "critical"
cooldown = "0s"
escalate_after = "0s"

[[hazards]]
name = "smoke"
model = "m"
classes = ["smoke"]
severity = "major"
cooldown = "1m"
escalate_after = "0s"

[[hazards]]
name = "fallen-person"
model = "m"
classes = ["Fall"]
severity = "major"
cooldown = "0s"
escalate_after = "1s"

[[cameras]]
id = "32132200531320000001"
name = "东元超市门口"
kind = "social-unit"
unit = "东元超市"
url = "rtsp://127.0.0.1:8554/cam1"
grid = "321322-001-003-07"
hazards = ["fire", "smoke", "fallen-person"]
"#
);

pub fn config() -> Arc<Config> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"").unwrap();
    let loaded = Config::parse(CONFIG, Path::new("test.toml"), &[dir.path().to_owned()])
        .unwrap_or_else(|p| panic!("test config: {p}"));
    Arc::new(loaded.config)
}

/// An alert for `hazard` on the test camera, detected now, in `zone`.
pub fn alert(config: &Config, hazard: &str, zone: Option<&str>) -> Alert {
    let event = HazardEvent {
        camera: CAMERA.into(),
        grid: GRID.into(),
        hazard: hazard.into(),
        severity: Severity::Critical,
        confidence: 0.8,
        objects: vec![EventObject {
            track_id: 1,
            class: hazard.into(),
            score: 0.8,
            bbox: BBox {
                x1: 10.0,
                y1: 20.0,
                x2: 110.0,
                y2: 220.0,
            },
        }],
        zone: zone.map(str::to_owned),
        detected_at: SystemTime::now(),
        frame: Arc::new(()),
    };
    let frame = FrameSize {
        width: 640,
        height: 480,
    };
    Alert::from_event(&event, frame, config, None).unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

fn stop_child(child: &mut Child) {
    signal(child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A mosquitto on a free loopback port. With `persistence`, sessions and queued messages
/// survive a stop and start (saved on SIGTERM), as on a production broker.
pub struct Mosquitto {
    pub port: u16,
    /// A second listener with TLS, when started with [`Mosquitto::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistence: bool,
}

impl Mosquitto {
    pub fn start(persistence: bool, users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Started as root, mosquitto drops to the `mosquitto` user: it must still be able to
        // write its log and persistence file here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut broker = Self {
            port: free_port(),
            tls_port: None,
            dir,
            child: None,
            persistence,
        };
        broker.write_config(users);
        broker.launch();
        broker
    }

    /// Also listens with TLS, on a certificate for 127.0.0.1 signed by a fresh test CA;
    /// returns the broker and the CA's PEM file.
    pub fn start_tls(users: &[(&str, &str)]) -> (Self, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl is installed by `make setup`");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sharpeyes test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        // mosquitto reads the key after dropping root.
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let ca = d.join("ca.pem");
        let mut broker = Self {
            port: free_port(),
            tls_port: Some(free_port()),
            dir,
            child: None,
            persistence: false,
        };
        broker.write_config(users);
        broker.launch();
        (broker, ca)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn write_config(&self, users: &[(&str, &str)]) {
        let d = self.dir.path();
        let mut conf = format!(
            "listener {} 127.0.0.1\npersistence {}\npersistence_location {}/\nlog_dest file {}/mosquitto.log\nlog_type all\nmax_queued_messages 10000\n",
            self.port,
            self.persistence,
            d.display(),
            d.display()
        );
        if users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let pw = d.join("passwd");
            std::fs::write(&pw, "").unwrap();
            for (u, p) in users {
                let ok = Command::new("mosquitto_passwd")
                    .args(["-b"])
                    .arg(&pw)
                    .args([u, p])
                    .status()
                    .unwrap();
                assert!(ok.success(), "mosquitto_passwd failed");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                pw.display()
            ));
        }
        if let Some(tls) = self.tls_port {
            conf.push_str(&format!(
                "listener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
                d = d.display()
            ));
        }
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
    }

    fn launch(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed by `make setup`");
        self.child = Some(child);
        wait_for_port(self.port, "mosquitto");
        if let Some(tls) = self.tls_port {
            wait_for_port(tls, "mosquitto (TLS)");
        }
    }

    /// SIGTERM and wait: with persistence, mosquitto saves its sessions first.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is still running");
        self.launch();
    }

    /// Replaces the password file and makes mosquitto re-read it (SIGHUP).
    pub fn set_users(&mut self, users: &[(&str, &str)]) {
        self.write_config(users);
        if let Some(child) = &self.child {
            signal(child, "HUP");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A redis-server on a free loopback port, nothing saved to disk.
pub struct Redis {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Redis {
    pub fn start(password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = password {
            cmd.args(["--requirepass", pw]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server is installed by `make setup`");
        wait_for_port(port, "redis-server");
        Self {
            port,
            _dir: dir,
            child,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("message on {} is not JSON: {e}", self.topic))
    }
}

/// An MQTT subscriber in the role of a grid centre: persistent session, QoS 1, reconnecting.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Message>>>,
    /// Subscriptions confirmed so far: one per (re)connection to a broker without the session.
    pub subacks: Arc<std::sync::atomic::AtomicUsize>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects and subscribes to `filter`; returns once the broker confirmed the
    /// subscription.
    pub async fn connect(
        port: u16,
        client_id: &str,
        filter: &str,
        user: Option<(&str, &str)>,
    ) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((u, p)) = user {
            options.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let sink = messages.clone();
        let subacks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subacks_seen = subacks.clone();
        let sub_client = client.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = sub_client.subscribe(&filter, QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        subacks_seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        sink.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscriber was not subscribed within 10 s")
            .unwrap();
        Self {
            messages,
            subacks,
            client,
            task,
        }
    }

    pub fn snapshot(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until `done` holds for the messages so far; returns them.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Message]) -> bool,
    ) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.snapshot();
            if done(&got) || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Alert ids among `messages` on alert topics, with how often each arrived.
pub fn alert_ids(messages: &[Message]) -> std::collections::HashMap<String, usize> {
    let mut ids = std::collections::HashMap::new();
    for m in messages.iter().filter(|m| m.topic.contains("/alerts/")) {
        let id = m.json()["id"].as_str().unwrap().to_owned();
        *ids.entry(id).or_default() += 1;
    }
    ids
}

/// Validates `value` against the alert JSON Schema file; returns the errors.
pub fn schema_errors(value: &serde_json::Value) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(sharpeyes_alerts::JSON_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema itself is valid");
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Log lines written by the code under test, captured for the credential check.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// A loopback TCP proxy that can partition the network: `freeze` holds every byte in both
/// directions (PUBACKs stop coming back), `cut` closes every connection through it.
pub struct Proxy {
    pub port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (f, c) = (frozen.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let frozen = f.clone();
                let task = tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                                mut to: tokio::net::tcp::OwnedWriteHalf,
                                frozen: Arc<AtomicBool>| async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while frozen.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let up = pump(cr, sw, frozen.clone());
                    let down = pump(sr, cw, frozen);
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            frozen,
            connections,
            accept,
        }
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection through the proxy; new ones are still accepted.
    pub fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
