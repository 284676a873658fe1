//! What the tests of the running service share: its configuration, a guard that stops the
//! process, and plain HTTP over a real socket.

#![allow(dead_code)]

use std::time::Duration;

use sharpeyes_ingest::{Simulator, SimulatorConfig};

/// Small simulated cameras (640x360, 10 fps, a keyframe a second) that all show a fire from
/// `fire_at` on, e.g. `"8s"`.
pub fn fire_cameras(cache: &tempfile::TempDir, cameras: usize, fire_at: &str) -> Simulator {
    Simulator::start(SimulatorConfig {
        cameras,
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        port: 0,
        scenario: (1..=cameras)
            .map(|i| format!("fire@{fire_at}:cam{i}").parse().unwrap())
            .collect(),
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    })
    .unwrap()
}

pub const PREFIX: &str = "se-run";
pub const CAMERA: &str = "32132200531320000001";

/// A config with the real fire detector and one camera at `camera_url`, alerts to the broker
/// on `broker`, the API on `http` (with `token` when given).
pub fn config(
    dir: &std::path::Path,
    broker: u16,
    http: u16,
    camera_url: &str,
    token: Option<&str>,
) -> std::path::PathBuf {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\""));
    let text = format!(
        r#"
[node]
id = "run-node"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
prefix = "{PREFIX}"

[http]
listen = "127.0.0.1:{http}"
{token}
{grids}
[[models]]
name = "fire_smoke"
path = "fire_smoke_yolov8.onnx"
layout = "yolov8"
input_size = 320
classes = ["smoke", "fire"]
threads = 1

[[hazards]]
name = "fire"
model = "fire_smoke"
classes = ["fire"]
min_confidence = 0.5
confirm = {{ k = 2, n = 3 }}
severity = "critical"
cooldown = "5m"
escalate_after = "0s"

[[cameras]]
id = "{CAMERA}"
name = "东元超市门口"
kind = "social-unit"
unit = "东元超市"
url = "{camera_url}"
grid = "321322-001-003-07"
hazards = ["fire"]
"#,
        data = dir.join("data").display(),
        grids = crate::support::GRIDS,
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A bare HTTP/1.1 GET over a real socket: status code and body (by its Content-Length when
/// the server keeps the connection open, as Chromium's DevTools server does).
pub fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    response(s)
}

fn response(mut s: std::net::TcpStream) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let (split, length) = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed before the headers ended");
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (split, length);
        }
    };
    match length {
        Some(len) => {
            while raw.len() < split + 4 + len {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            let _ = s.read_to_end(&mut raw);
        }
    }
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

/// The service process, killed if a failed assertion leaves it running.
pub struct Service(pub std::process::Child);

impl Service {
    /// `sharpeyes run --config path`, quiet (warnings only, not shown).
    pub fn start(path: &std::path::Path) -> Service {
        Service(
            std::process::Command::new(env!("CARGO_BIN_EXE_sharpeyes"))
                .args(["run", "--config", path.to_str().unwrap()])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("SHARPEYES_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare HTTP/1.1 POST with an optional bearer token: status code and body.
pub fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, Vec<u8>) {
    request(port, "POST", path, token, body)
}

/// A bare HTTP/1.1 DELETE with an optional bearer token: status code and body.
pub fn delete(port: u16, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    request(port, "DELETE", path, token, "")
}

fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    response(s)
}
