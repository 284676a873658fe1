//! What the delivery tests share besides the test kit: the alert service's configuration
//! (the shared grid fixture, one camera, three hazards with different cooldowns and
//! escalations) and alerts to send.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use sharpeyes_alerts::{Alert, FrameSize};
use sharpeyes_analytics::{BBox, EventObject, HazardEvent};
use sharpeyes_config::{Config, Severity};

pub use sharpeyes_testkit::config::{CAMERA, GRID};
pub const PREFIX: &str = "se-test";

/// One camera in a four-level grid. `fire` has no cooldown and no escalation (bursts),
/// `smoke` a one-minute cooldown, `fallen-person` escalates after one second.
pub const CONFIG: &str = concat!(
    r#"
[node]
id = "test-node"
"#,
    include_str!("../../../fixtures/config/grids.toml"),
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
