//! What sharpeyes' tests share, so that every test meets the same real peers:
//!
//! - [`servers`]: mosquitto and redis-server on loopback in temporary directories, stopped
//!   when dropped;
//! - [`Subscriber`]: an MQTT client in the role of a grid centre (persistent session, QoS 1);
//! - [`FaultProxy`]: a TCP proxy between the service and a server that can refuse,
//!   blackhole, delay and cut connections; [`RtspRelay`]: one that drops or reorders the
//!   RTP packets of an RTSP stream, as a lossy link does;
//! - [`Service`]: `sharpeyes run` as a process, on a port it picked itself and reported;
//! - [`http`]: plain HTTP/1.1 over a real socket;
//! - [`config`]: the configuration fixtures of `fixtures/config/`;
//! - [`fire_cameras`]: simulated RTSP cameras that show a fire;
//! - [`hostile`]: arbitrary and mangled input for the parsers that face the network.
//!
//! Everything binds 127.0.0.1 only, and every wait is bounded.

#![forbid(clippy::print_stdout)]

pub mod config;
pub mod hostile;
pub mod http;
mod proxy;
mod relay;
pub mod servers;
mod service;
mod subscriber;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use proxy::{Fault, FaultProxy};
pub use relay::{Impairment, RtspRelay};
pub use servers::{ClientCerts, Mosquitto, Redis, TlsFiles, test_certificates};
pub use service::Service;
pub use sharpeyes_gb28181::platform::{PlatformAlarm, Seen, SipPlatform};
pub use subscriber::{Message, Subscriber, alert_ids};

/// The `sharpeyes.alert/1` JSON Schema every published alert must satisfy.
pub const ALERT_SCHEMA: &str = include_str!("../../alerts/schema/alert-1.schema.json");

/// The `sharpeyes.health/1` JSON Schema every camera health message must satisfy.
pub const HEALTH_SCHEMA: &str = include_str!("../../alerts/schema/health-1.schema.json");

/// Validates `value` against [`ALERT_SCHEMA`]; returns the errors.
pub fn schema_errors(value: &serde_json::Value) -> Vec<String> {
    errors_against(ALERT_SCHEMA, value)
}

/// Validates `value` against [`HEALTH_SCHEMA`]; returns the errors.
pub fn health_schema_errors(value: &serde_json::Value) -> Vec<String> {
    errors_against(HEALTH_SCHEMA, value)
}

fn errors_against(schema: &str, value: &serde_json::Value) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(schema).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema itself is valid");
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Small simulated cameras (640x360, 10 fps, a keyframe a second) that all show a fire from
/// `fire_at` on, e.g. `"8s"`, served as `/cam1` ... on a free loopback port.
pub fn fire_cameras(
    cache: &tempfile::TempDir,
    cameras: usize,
    fire_at: &str,
) -> sharpeyes_ingest::Simulator {
    sharpeyes_ingest::Simulator::start(sharpeyes_ingest::SimulatorConfig {
        cameras,
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        port: 0,
        scenario: (1..=cameras)
            .map(|i| format!("fire@{fire_at}:cam{i}").parse().expect("a scene"))
            .collect(),
        cache_dir: Some(cache.path().to_owned()),
        ..sharpeyes_ingest::SimulatorConfig::default()
    })
    .expect("the simulator starts")
}

/// Log lines written by the code under test, captured for the checks that no secret and no
/// peer's bytes appear in them.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
