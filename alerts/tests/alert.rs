//! Alerts against their contract: every message validates against the JSON Schema file,
//! topics follow the grid, escalation climbs to the county, snapshots are what they claim.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sharpeyes_alerts::message::SnapshotRef;
use sharpeyes_alerts::{Alert, FrameSize, render};
use sharpeyes_analytics::{BBox, EventObject, HazardEvent};
use sharpeyes_config::{Config, Severity};
use sharpeyes_testkit::schema_errors;

fn demo() -> Config {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "fire_smoke_yolov8.onnx",
        "fire_smoke_yolov8_int8.onnx",
        "person_fall_yolov8s.onnx",
        "person_fall_yolov8s_int8.onnx",
    ] {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    Config::parse(
        sharpeyes_config::DEMO_TOML,
        Path::new("demo.toml"),
        &[dir.path().to_owned()],
    )
    .unwrap()
    .config
}

fn event(camera: &str, grid: &str, at: SystemTime) -> HazardEvent<()> {
    HazardEvent {
        camera: camera.into(),
        grid: grid.into(),
        hazard: "fire".into(),
        severity: Severity::Critical,
        confidence: 0.81,
        objects: vec![EventObject {
            track_id: 3,
            class: "fire".into(),
            score: 0.81,
            bbox: BBox {
                x1: 210.0,
                y1: 139.0,
                x2: 437.0,
                y2: 367.0,
            },
        }],
        zone: None,
        detected_at: at,
        frame: Arc::new(()),
    }
}

fn snapshot_ref() -> SnapshotRef {
    SnapshotRef {
        url: "http://127.0.0.1:8080/snapshots/x.jpg".into(),
        sha256: "ab".repeat(32),
        size: 1234,
        width: 640,
        height: 480,
        inline_base64: None,
    }
}

const SHOP: &str = "32132200531320000001";
const GRID: &str = "321322-001-003-07";

fn alert(at: SystemTime, snapshot: Option<SnapshotRef>) -> Alert {
    Alert::from_event(
        &event(SHOP, GRID, at),
        FrameSize {
            width: 640,
            height: 480,
        },
        &demo(),
        snapshot,
    )
    .unwrap()
}

#[test]
fn a_video_alert_follows_the_schema_and_its_grid() {
    let alert = alert(SystemTime::now(), Some(snapshot_ref()));
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(schema_errors(&json), Vec::<String>::new(), "{json:#}");
    assert_eq!(json["schema"], "sharpeyes.alert/1");
    assert_eq!(json["camera"]["kind"], "social-unit");
    assert_eq!(json["camera"]["unit"], "东元超市");
    assert_eq!(json["region_code"], "32132200");
    assert_eq!(json["grid"]["centre"], "东元社区网格服务站");
    let names: Vec<&str> = alert.grid.path.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        ["沭阳县", "沭城街道", "东元社区", "东元社区第七网格"]
    );
    assert_eq!(json["boxes"][0]["box"][0], 210.0);
    assert_eq!(
        alert.topic("sy"),
        "sy/alerts/321322/321322-001/321322-001-003/321322-001-003-07/fire"
    );
    // It round-trips: subscribers written in Rust can use the same type.
    assert_eq!(serde_json::from_value::<Alert>(json).unwrap(), alert);
}

#[test]
fn the_schema_rejects_what_breaks_the_contract() {
    let good = serde_json::to_value(alert(SystemTime::now(), None)).unwrap();
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        schema_errors(&v)
    };
    assert!(broken(&|_| {}).is_empty());
    assert!(!broken(&|v| v["confidence"] = 1.5.into()).is_empty());
    assert!(!broken(&|v| v["severity"] = "apocalyptic".into()).is_empty());
    assert!(!broken(&|v| v["id"] = "not-a-ulid".into()).is_empty());
    assert!(!broken(&|v| v["schema"] = "sharpeyes.alert/2".into()).is_empty());
    assert!(
        !broken(&|v| {
            v.as_object_mut().unwrap().remove("grid");
        })
        .is_empty()
    );
}

#[test]
fn escalation_climbs_to_the_county_and_stops() {
    let config = demo();
    let alert = alert(SystemTime::now(), None);
    let village = alert.escalated(&config).unwrap();
    assert_eq!(
        (village.escalation_level, village.id.as_str()),
        (1, alert.id.as_str()),
        "same id when republished"
    );
    assert_eq!(
        village.topic("sy"),
        "sy/alerts/321322/321322-001/321322-001-003/-/fire"
    );
    assert_eq!(village.grid.centre.as_deref(), Some("东元社区网格服务站"));
    let town = village.escalated(&config).unwrap();
    assert_eq!(town.topic("sy"), "sy/alerts/321322/321322-001/-/-/fire");
    assert_eq!(
        town.grid.centre.as_deref(),
        Some("沭城街道网格服务管理中心")
    );
    let county = town.escalated(&config).unwrap();
    assert_eq!(county.topic("sy"), "sy/alerts/321322/-/-/-/fire");
    assert_eq!(
        county.grid.centre.as_deref(),
        Some("沭阳县社会治理网格化服务管理中心")
    );
    assert!(
        county.escalated(&config).is_none(),
        "the county has no parent"
    );
    assert!(schema_errors(&serde_json::to_value(&county).unwrap()).is_empty());
}

#[test]
fn ids_sort_like_detection_times() {
    let t0 = SystemTime::now();
    let ids: Vec<String> = (0..5)
        .map(|i| alert(t0 + Duration::from_millis(5 * i), None).id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), 5);
}

#[test]
fn an_unknown_camera_is_an_error_not_a_half_alert() {
    let err = Alert::from_event(
        &event("nope", "321322", SystemTime::now()),
        FrameSize {
            width: 8,
            height: 8,
        },
        &demo(),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("camera `nope`"), "{err}");
}

#[test]
fn snapshots_show_the_boxes_fit_their_cap_and_carry_their_hash() {
    let (w, h) = (640u32, 480u32);
    let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % 200) as u8, 90, 40]).collect();
    let snap = render(&rgb, w, h, &[[100.0, 100.0, 300.0, 200.0]], 200_000).unwrap();
    let img = image::load_from_memory(&snap.jpeg).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (w, h));
    let edge = img.get_pixel(200, 101);
    assert!(
        edge[0] > 200 && edge[1] < 90,
        "the box outline is red: {edge:?}"
    );
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(&snap.jpeg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(snap.sha256, hash);

    let small = render(&rgb, w, h, &[], 12_000).unwrap();
    assert!(small.jpeg.len() <= 12_000 && small.width <= w);
    assert!(
        render(&rgb, w, h, &[], 100).is_err(),
        "an impossible cap is an error"
    );
    assert!(
        render(&rgb[..10], w, h, &[], 100_000).is_err(),
        "a short frame is an error"
    );
}

/// The names metrics and the API use are the ones the messages carry.
#[test]
fn published_names_match_the_serialised_ones() {
    for phase in sharpeyes_alerts::CameraPhase::ALL {
        assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
    }
    for source in [
        sharpeyes_alerts::Source::Video,
        sharpeyes_alerts::Source::Sensor,
        sharpeyes_alerts::Source::Fused,
    ] {
        assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
    }
}
