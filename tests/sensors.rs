//! Sensors against a real mosquitto: readings in over MQTT, alerts out on the grid topics.
//!
//! A reading over the threshold raises a sensor alert; a smoke alarm plus the fire scene on a
//! covering camera (the real detector on the fire still) gives one fused alert with both
//! kinds of evidence; malformed readings land on the dead-letter topic and the rest still
//! count; a silent sensor goes offline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sharpeyes::cameras::Directory;
use sharpeyes::fusion::FusionCounters;
use sharpeyes::sensors::SensorCounters;
use sharpeyes_alerts::{AlertSettings, Alerts, MemoryStore, MqttSettings};
use sharpeyes_analytics::stages::{AnalysisSettings, CameraAnalyzer, RgbImage};
use sharpeyes_analytics::{Detector, NmsConfig, Runtime, Telemetry, Timings, VideoEvent};
use sharpeyes_config::{Config, Install};
use sharpeyes_ingest::{Frame, FrameSlot};
use sharpeyes_testkit::config::{CAMERA, FIRE, GRID_TOPIC, GRIDS, fire_camera, with};
use sharpeyes_testkit::{Message, Mosquitto, Subscriber, schema_errors};
use tokio::sync::{mpsc, watch};

const PREFIX: &str = "se-sensors";
/// The test grids and camera, the real fire/smoke detector (its fire a major hazard here, so
/// that fusing raises it), and three sensors: a smoke detector the camera covers, a gas gauge
/// nobody can see, a water gauge reporting every second.
const SENSORS: &str = r#"
[[sensors]]
id = "smoke-1"
type = "smoke"
unit = "%obs/m"
grid = "321322-001-003-07"
cameras = ["32132200531320000001"]
above = 4.0
severity = "major"
interval = "1h"

[[sensors]]
id = "gas-1"
type = "gas"
unit = "%LEL"
grid = "321322-001-003-07"
above = 20.0
severity = "critical"
interval = "1h"

[[sensors]]
id = "water-1"
type = "water_level"
unit = "m"
grid = "321322-001-003-07"
above = 5.0
interval = "1s"

[fusion]
wait = "8s"
verify_for = "1m"
"#;

fn config() -> Arc<Config> {
    let install = Install::discover();
    let text = format!(
        "[node]\nid = \"sensor-node\"\n{GRIDS}{}{}{SENSORS}",
        with(FIRE, "severity", "\"major\""),
        fire_camera(CAMERA, "rtsp://127.0.0.1:8554/cam1"),
    );
    let loaded = Config::parse(&text, Path::new("sensors-test.toml"), &install.model_dirs())
        .unwrap_or_else(|p| panic!("test config (run `make setup` for the models): {p}"));
    Arc::new(loaded.config)
}

/// The alert service, the sensor stage and fusion, started against `broker`; video events
/// are sent in by the test, as the cameras' analysis would.
struct Node {
    sensors: Arc<SensorCounters>,
    fusion: Arc<FusionCounters>,
    directory: Directory,
    video: mpsc::Sender<VideoEvent>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    async fn start(config: Arc<Config>, broker: &Mosquitto) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let settings = AlertSettings {
            snapshot_base_url: "http://127.0.0.1:8080".into(),
            subscriptions: sharpeyes::sensors::subscriptions(&config, PREFIX),
            ..AlertSettings::from_config(&config)
        };
        let mqtt = MqttSettings::plain("127.0.0.1", broker.port, PREFIX, &config.node.id);
        let (alerts, alerts_task) = Alerts::start(
            config.clone(),
            Arc::new(MemoryStore::new()),
            mqtt,
            settings,
            shutdown.clone(),
        )
        .await
        .expect("alert service starts");
        let (sensor_tx, sensor_rx) = mpsc::channel(16);
        let telemetry = Telemetry::new();
        let supervisor = sharpeyes::supervise::Supervisor {
            telemetry: telemetry.clone(),
            health: Default::default(),
        };
        let (sensors, sensors_task) = sharpeyes::sensors::start(
            &config,
            alerts.clone(),
            PREFIX,
            sensor_tx,
            &supervisor,
            sharpeyes::cluster::SensorsHere::default(),
            shutdown,
        )
        .expect("the sensor stage starts");
        let (video, video_rx) = mpsc::channel(16);
        let directory = Directory::default();
        let (fusion, fusion_task) = sharpeyes::fusion::start(
            config,
            alerts.clone(),
            directory.clone(),
            &supervisor,
            video_rx,
            sensor_rx,
        );
        // Readings sent before the link subscribed would be lost: wait for the connection.
        for _ in 0..100 {
            if alerts.stats().connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            sensors,
            fusion,
            directory,
            video,
            stop,
            tasks: vec![sensors_task, fusion_task, alerts_task],
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        drop(self.video);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn reading(sensor: &str, kind: &str, unit: &str, value: f64) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    serde_json::json!({ "sensor_id": sensor, "type": kind, "value": value, "unit": unit, "time": now })
        .to_string()
        .into_bytes()
}

fn alerts_in(messages: &[Message]) -> Vec<(String, serde_json::Value)> {
    messages
        .iter()
        .filter(|m| m.topic.starts_with(&format!("{PREFIX}/alerts/")))
        .map(|m| (m.topic.clone(), m.json()))
        .collect()
}

/// The `state` of the newest message on `topic`.
fn last_state(messages: &[Message], topic: &str) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m.topic == topic)
        .map(|m| m.json()["state"].as_str().unwrap().to_owned())
}

/// What a subscriber arriving now is given on `topic`: the retained state.
async fn retained_state(port: u16, topic: &str) -> Option<String> {
    let late = Subscriber::connect(port, "late-comer", topic, None).await;
    let got = late
        .wait_until(Duration::from_secs(5), |m| m.iter().any(|m| m.retain))
        .await;
    got.iter()
        .find(|m| m.retain)
        .map(|m| m.json()["state"].as_str().unwrap().to_owned())
}

fn assert_valid(alert: &serde_json::Value) {
    let errors = schema_errors(alert);
    assert!(errors.is_empty(), "schema errors {errors:?} in {alert}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_over_the_threshold_raises_a_sensor_alert_on_the_grid_topic() {
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(broker.port, "centre-s1", &format!("{PREFIX}/#"), None).await;
    let node = Node::start(config(), &broker).await;

    let topic = format!("{PREFIX}/sensors/gas-1");
    centre
        .publish(&topic, &reading("gas-1", "gas", "%LEL", 5.0))
        .await;
    centre
        .publish(&topic, &reading("gas-1", "gas", "%LEL", 35.0))
        .await;
    let got = centre
        .wait_until(Duration::from_secs(10), |m| !alerts_in(m).is_empty())
        .await;
    let alerts = alerts_in(&got);
    assert_eq!(alerts.len(), 1, "one alert: {alerts:?}");
    let (topic, alert) = &alerts[0];
    assert_eq!(topic, &format!("{PREFIX}/alerts/{GRID_TOPIC}/gas-leak"));
    assert_valid(alert);
    assert_eq!(alert["source"], "sensor");
    assert_eq!(alert["severity"], "critical");
    assert!(alert["camera"].is_null(), "no camera covers gas-1");
    let evidence = &alert["evidence"][0];
    assert_eq!(evidence["sensor_id"], "gas-1");
    assert_eq!(evidence["value"], 35.0);
    assert!(evidence["rule"].as_str().unwrap().contains("above 20"));
    let status_topic = format!("{PREFIX}/sensors/gas-1/status");
    assert_eq!(last_state(&got, &status_topic).as_deref(), Some("alarm"));
    assert_eq!(
        retained_state(broker.port, &status_topic).await.as_deref(),
        Some("alarm")
    );
    assert_eq!(node.sensors.readings(), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_alarm_and_the_fire_scene_on_a_covering_camera_give_one_fused_alert() {
    let config = config();
    let install = Install::discover();
    let runtime = Runtime::load(install.onnxruntime.as_ref().expect("run `make setup`")).unwrap();
    let spec = config
        .models
        .iter()
        .find(|m| m.name == "fire_smoke")
        .unwrap();
    let mut detector = Detector::load(runtime, spec, NmsConfig::default()).unwrap();
    let still = install
        .home
        .as_ref()
        .unwrap()
        .join("fixtures/images/synthetic_fire.png");
    let img = image::open(&still).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let frame = Frame {
        camera: CAMERA.into(),
        width: w,
        height: h,
        rgb: img.into_raw(),
        received_at: SystemTime::now(),
        keyframe: true,
        verifying: false,
    };

    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(broker.port, "centre-s2", &format!("{PREFIX}/#"), None).await;
    let node = Node::start(config.clone(), &broker).await;
    // The covering camera, as the directory knows a running one: its frame slot.
    let slot = Arc::new(FrameSlot::default());
    slot.put(frame);
    let frame = slot.take().unwrap();
    node.directory.insert(CAMERA, slot.clone());
    assert!(!node.directory.verifying(CAMERA));

    // The smoke detector trips...
    centre
        .publish(
            &format!("{PREFIX}/sensors/smoke-1"),
            &reading("smoke-1", "smoke", "%obs/m", 7.5),
        )
        .await;
    for _ in 0..100 {
        if node.directory.verifying(CAMERA) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node.sensors.alarms(), 1, "the smoke alarm is raised");
    assert!(
        node.directory.verifying(CAMERA) && slot.verify_asked(),
        "the covering camera is sent into verify mode"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        alerts_in(&centre.snapshot()).is_empty(),
        "the alarm is held back for the camera to look"
    );

    // ...and the covering camera sees the fire: the real detector on the fire still, its
    // events sent on to fusion as the camera's analysis would.
    let camera = Arc::new(config.camera(CAMERA).unwrap().clone());
    let mut analyzer = CameraAnalyzer::new(
        &config,
        &camera,
        |_| Some(detector.classes()),
        AnalysisSettings::default(),
    )
    .unwrap();
    let mut batch = detector.new_batch();
    let mut out = vec![Vec::new()];
    let start = std::time::Instant::now();
    let mut confirmed = 0;
    for step in 0..3 {
        batch.clear();
        batch
            .push(RgbImage::new(w, h, &frame.rgb).unwrap())
            .unwrap();
        detector.detect(&batch, &mut out).unwrap();
        let now = start + Duration::from_secs(step);
        for event in analyzer.on_detections(
            "fire_smoke",
            &out[0],
            &frame,
            (w, h),
            now,
            SystemTime::now(),
        ) {
            confirmed += 1;
            let timings = Timings {
                queue_wait: Duration::ZERO,
                preprocess: Duration::ZERO,
                inference: Duration::ZERO,
                postprocess: Duration::ZERO,
                batch_size: 1,
            };
            node.video
                .send(VideoEvent {
                    camera: camera.clone(),
                    event,
                    timings,
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(confirmed, 1, "the fire still confirms one fire event");

    // One alert, fused, and nothing more once the wait is over.
    let got = centre
        .wait_until(Duration::from_secs(10), |m| !alerts_in(m).is_empty())
        .await;
    assert_eq!(alerts_in(&got).len(), 1);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let alerts = alerts_in(&centre.snapshot());
    assert_eq!(
        alerts.len(),
        1,
        "one fused alert, no separate sensor alert: {alerts:?}"
    );
    let (topic, alert) = &alerts[0];
    assert!(topic.ends_with("/321322-001-003-07/fire"), "{topic}");
    assert_valid(alert);
    assert_eq!(alert["source"], "fused");
    assert_eq!(
        alert["severity"], "critical",
        "major video + major sensor, raised"
    );
    assert!(alert["confidence"].as_f64().unwrap() > 0.9);
    assert_eq!(alert["camera"]["id"], CAMERA);
    assert!(
        !alert["boxes"].as_array().unwrap().is_empty(),
        "video evidence"
    );
    assert!(alert["snapshot"]["sha256"].is_string(), "snapshot");
    assert_eq!(
        alert["evidence"][0]["sensor_id"], "smoke-1",
        "sensor evidence"
    );
    assert_eq!(alert["evidence"][0]["readings"][0]["value"], 7.5);
    assert_eq!(
        (node.fusion.fused_alerts(), node.fusion.sensor_alerts()),
        (1, 0)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_readings_land_on_the_dead_letter_topic_and_nothing_else_stops() {
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(broker.port, "centre-s3", &format!("{PREFIX}/#"), None).await;
    let node = Node::start(config(), &broker).await;

    let gas = format!("{PREFIX}/sensors/gas-1");
    let too_large = vec![b' '; 70 * 1024];
    let bad: Vec<(String, Vec<u8>, &str)> = vec![
        (gas.clone(), b"{not json".to_vec(), "not JSON"),
        (
            format!("{PREFIX}/sensors/nobody"),
            reading("nobody", "gas", "%LEL", 1.0),
            "unknown sensor",
        ),
        (
            gas.clone(),
            reading("gas-1", "gas", "ppm", 1.0),
            "reports in",
        ),
        (gas.clone(), reading("gas-1", "smoke", "%LEL", 1.0), "type"),
        (
            gas.clone(),
            reading("gas-1", "gas", "%LEL", 900.0),
            "outside",
        ),
        (gas.clone(), too_large, "over the"),
        (gas.clone(), b"[1]".to_vec(), "not a reading"),
        // Year 10000: it once panicked the sensor task (no formatter prints it), and a date
        // far ahead froze the sensor (every later reading looked out of order).
        (
            gas.clone(),
            br#"{"sensor_id": "gas-1", "type": "gas", "value": 50.0, "unit": "%LEL", "time": 253402300800000}"#.to_vec(),
            "ahead of this node's clock",
        ),
    ];
    for (topic, payload, _) in &bad {
        centre.publish(topic, payload).await;
    }
    // A batch with one good reading and one bad, then a reading over the threshold: the
    // subscriber is still at work.
    let mut batch =
        serde_json::from_slice::<serde_json::Value>(&reading("gas-1", "gas", "%LEL", 3.0)).unwrap();
    batch = serde_json::json!([batch, { "sensor_id": "gas-1", "type": "gas", "unit": "%LEL" }]);
    centre.publish(&gas, batch.to_string().as_bytes()).await;
    centre
        .publish(&gas, &reading("gas-1", "gas", "%LEL", 50.0))
        .await;

    let dead_topic = format!("{PREFIX}/deadletter/sensors");
    let expected_dead = bad.len() + 1;
    let got = centre
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().filter(|m| m.topic == dead_topic).count() >= expected_dead
                && !alerts_in(m).is_empty()
        })
        .await;
    let dead: Vec<serde_json::Value> = got
        .iter()
        .filter(|m| m.topic == dead_topic)
        .map(Message::json)
        .collect();
    assert_eq!(dead.len(), expected_dead, "{dead:#?}");
    for (_, _, why) in &bad {
        assert!(
            dead.iter()
                .any(|d| d["reason"].as_str().unwrap().contains(why)),
            "no dead letter says `{why}`: {dead:#?}"
        );
    }
    assert!(
        dead.iter()
            .all(|d| d["topic"].is_string() && d["bytes"].is_u64())
    );
    let alerts = alerts_in(&got);
    assert_eq!(
        alerts.len(),
        1,
        "the good reading over the threshold still alerts"
    );
    assert_eq!(alerts[0].1["evidence"][0]["value"], 50.0);
    assert_eq!(node.sensors.rejected(), expected_dead as u64);
    assert_eq!(
        node.sensors.readings(),
        2,
        "the good one of the batch and the last"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_goes_offline_and_comes_back() {
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(broker.port, "centre-s4", &format!("{PREFIX}/#"), None).await;
    let node = Node::start(config(), &broker).await;
    let status_topic = format!("{PREFIX}/sensors/water-1/status");
    let last_state = |m: &[Message]| last_state(m, &status_topic);

    // water-1 reports every second; after its first reading it falls silent.
    centre
        .publish(
            &format!("{PREFIX}/sensors/water-1"),
            &reading("water-1", "water_level", "m", 2.0),
        )
        .await;
    let got = centre
        .wait_until(Duration::from_secs(6), |m| {
            last_state(m).as_deref() == Some("offline")
        })
        .await;
    assert_eq!(last_state(&got).as_deref(), Some("offline"));
    let offline = got.iter().rev().find(|m| m.topic == status_topic).unwrap();
    assert_eq!(
        retained_state(broker.port, &status_topic).await.as_deref(),
        Some("offline"),
        "sensor status is retained"
    );
    assert!(
        offline.json()["reason"]
            .as_str()
            .unwrap()
            .contains("no reading for")
    );
    assert!(
        alerts_in(&got).is_empty(),
        "offline is a status, not a hazard"
    );

    centre
        .publish(
            &format!("{PREFIX}/sensors/water-1"),
            &reading("water-1", "water_level", "m", 2.1),
        )
        .await;
    let got = centre
        .wait_until(Duration::from_secs(5), |m| {
            last_state(m).as_deref() == Some("online")
        })
        .await;
    assert_eq!(last_state(&got).as_deref(), Some("online"));
    node.stop().await;
}

/// A message bigger than the client takes on a QoS 1 subscription used to drop the link, and
/// the broker redelivered it on reconnecting: a loop in which nothing else arrived. It is
/// dead-lettered now, and the next reading still alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_link_is_refused_without_losing_the_link() {
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(broker.port, "centre-s5", &format!("{PREFIX}/#"), None).await;
    let node = Node::start(config(), &broker).await;
    let gas = format!("{PREFIX}/sensors/gas-1");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let sent = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            &gas,
            "-f",
        ])
        .arg(&big)
        .status()
        .expect("mosquitto_pub is installed by `make setup`");
    assert!(sent.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    centre
        .publish(&gas, &reading("gas-1", "gas", "%LEL", 50.0))
        .await;
    let got = centre
        .wait_until(Duration::from_secs(10), |m| !alerts_in(m).is_empty())
        .await;
    assert_eq!(alerts_in(&got).len(), 1, "the link carries on");
    let dead: Vec<serde_json::Value> = got
        .iter()
        .filter(|m| m.topic == format!("{PREFIX}/deadletter/sensors"))
        .map(Message::json)
        .collect();
    assert!(
        dead.iter()
            .any(|d| d["reason"].as_str().unwrap().contains("over the")),
        "{dead:?}"
    );
    let reconnects = broker.log().matches("New client connected from").count();
    assert!(reconnects <= 4, "{reconnects} connections: the link looped");
    node.stop().await;
}
