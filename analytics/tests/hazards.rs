//! The whole analytics path with the real models: frames from several cameras batched
//! together, detections tracked, hazard rules confirming (or not) over frames.
//!
//! Needs `make setup` (ONNX Runtime and the models); fails, rather than skips, without it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sharpeyes_analytics::stages::{AnalysisSettings, AsRgb, CameraAnalyzer};
use sharpeyes_analytics::{Analysis, Detector, Models, NmsConfig, Runtime, Telemetry, VideoEvent};
use sharpeyes_config::{Config, Install};
use sharpeyes_ingest::{Frame, FrameSlot};
use sharpeyes_testkit::config::{FIRE, GRIDS, with};
use tokio::sync::{mpsc, watch};

fn frame(name: &str) -> Frame {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/images")
        .join(name);
    let img = image::open(&path).unwrap().to_rgb8();
    Frame {
        camera: name.into(),
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
        received_at: SystemTime::now(),
        keyframe: true,
        verifying: false,
    }
}

/// The shared grids and fire fixture (a batch waiting for both cameras' frames), the person
/// model, and cameras: two watching fire, two watching a river bank each with its own zone.
fn config_text() -> String {
    format!(
        "{GRIDS}{}{PERSON}",
        with(&with(FIRE, "max_batch", "2"), "max_wait", "\"5s\"")
    )
}

const PERSON: &str = r#"
# Every frame analysed, moving or not.
[motion]
enabled = false

[[models]]
name = "person"
path = "person_fall_yolov8s.onnx"
layout = "yolov8"
input_size = 640
classes = ["Normal", "Fall"]

[[hazards]]
name = "danger-zone"
model = "person"
classes = ["Normal", "Fall"]
zones = ["river-bank"]
severity = "major"

[[cameras]]
id = "kitchen"
name = "kitchen"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/kitchen"
grid = "321322"
hazards = ["fire"]

[[cameras]]
id = "cafe"
name = "cafe"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/cafe"
grid = "321322"
hazards = ["fire"]

# The person in camera.png stands with their feet at (0.32, 0.99) of the frame.
[[cameras]]
id = "bank-left"
name = "bank left"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/left"
grid = "321322"
hazards = ["danger-zone"]
zones = [{ name = "river-bank", polygon = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]] }]

[[cameras]]
id = "bank-right"
name = "bank right"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/right"
grid = "321322"
hazards = ["danger-zone"]
zones = [{ name = "river-bank", polygon = [[0.6, 0.5], [1.0, 0.5], [1.0, 1.0], [0.6, 1.0]] }]
"#;

fn setup() -> (Config, &'static Runtime) {
    let install = Install::discover();
    let lib = install
        .onnxruntime
        .clone()
        .expect("ONNX Runtime missing: run `make setup`");
    let config = Config::parse(
        &config_text(),
        std::path::Path::new("hazards.toml"),
        &install.model_dirs(),
    )
    .unwrap_or_else(|p| panic!("{p}"))
    .config;
    (config, Runtime::load(&lib).unwrap())
}

fn analyzer(config: &Config, camera: &str, detector: &Detector) -> CameraAnalyzer {
    let classes = detector.classes().to_vec();
    let cam = config.camera(camera).unwrap();
    CameraAnalyzer::new(
        config,
        cam,
        |_| Some(classes.as_slice()),
        AnalysisSettings::default(),
    )
    .unwrap()
}

/// Through [`Analysis`], as the service runs it: two cameras' frames share each batch, and
/// each camera's events come from its own frames only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_is_confirmed_after_k_of_n_frames_and_coffee_raises_nothing() {
    let (config, runtime) = setup();
    let det = Detector::load(
        runtime,
        config.model("fire_smoke").unwrap(),
        NmsConfig::default(),
    )
    .unwrap();
    let config = Arc::new(config);
    let (events_tx, mut events) = mpsc::channel::<VideoEvent>(16);
    let telemetry = Telemetry::new();
    let analysis = Analysis::start(
        config.clone(),
        Models::from_detectors(vec![det]),
        telemetry.clone(),
        events_tx,
    );
    let (stop, stop_rx) = watch::channel(false);
    let slots = [
        Arc::new(FrameSlot::default()),
        Arc::new(FrameSlot::default()),
    ];
    let mut tasks = Vec::new();
    for (camera, slot) in ["kitchen", "cafe"].iter().zip(&slots) {
        let prepared = analysis.prepare(config.camera(camera).unwrap()).unwrap();
        assert_eq!(
            prepared.input_side(),
            320,
            "decoded straight to the model's size"
        );
        tasks.push(analysis.watch(prepared, slot.clone(), stop_rx.clone()));
    }
    let stats = analysis.model_stats()[0].1.clone();
    let (fire, coffee) = (frame("synthetic_fire.png"), frame("coffee.png"));
    let fire_rgb = fire.rgb.clone();

    let mut confirmed: Vec<(u64, VideoEvent)> = Vec::new();
    for step in 0..4u64 {
        slots[0].put(fire.clone());
        slots[1].put(coffee.clone());
        // Both frames of a step are answered before the next step's go in.
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.inferred.load(std::sync::atomic::Ordering::Relaxed) < 2 * (step + 1) {
            assert!(
                Instant::now() < deadline,
                "step {step} was not inferred within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Events come after the answers; give the camera tasks a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(e) = events.try_recv() {
            confirmed.push((step, e));
        }
    }
    let _ = stop.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    analysis.stop().await;
    while let Ok(e) = events.try_recv() {
        confirmed.push((4, e));
    }
    assert_eq!(stats.mean_fill(), 2.0, "the two cameras shared each batch");
    let analysed = |camera: &str| {
        telemetry
            .frames
            .with_label_values(&[camera, "analysed"])
            .get()
    };
    assert_eq!((analysed("kitchen"), analysed("cafe")), (4, 4));
    // k = 2 of n = 3: nothing on the first frame, confirmed on the second, then cooldown.
    let summary: Vec<(u64, &str, &str)> = confirmed
        .iter()
        .map(|(s, e)| (*s, e.event.camera.as_str(), e.event.hazard.as_str()))
        .collect();
    assert_eq!(summary, [(1, "kitchen", "fire")]);
    let e = &confirmed[0].1;
    assert_eq!(e.camera.id, "kitchen");
    assert_eq!(e.event.grid, "321322");
    assert!(
        (e.event.confidence - 0.805).abs() < 0.03,
        "{}",
        e.event.confidence
    );
    assert_eq!(e.event.objects.len(), 1);
    assert_eq!(e.event.objects[0].class, "fire");
    assert!(
        (e.event.objects[0].bbox.x1 - 210.0).abs() < 4.0,
        "{:?}",
        e.event.objects[0].bbox
    );
    assert_eq!(
        e.event.frame.rgb, fire_rgb,
        "the event carries the confirming frame"
    );
    assert_eq!(e.timings.batch_size, 2);
}

#[test]
fn a_person_inside_the_zone_triggers_and_outside_does_not() {
    let (config, runtime) = setup();
    let mut det = Detector::load(
        runtime,
        config.model("person").unwrap(),
        NmsConfig::default(),
    )
    .unwrap();
    let mut left = analyzer(&config, "bank-left", &det);
    let mut right = analyzer(&config, "bank-right", &det);
    let person = Arc::new(frame("camera.png"));
    let mut batch = det.new_batch();
    batch.push(person.rgb()).unwrap();
    let mut out = vec![Vec::new()];
    det.detect(&batch, &mut out).unwrap();

    let now = Instant::now();
    let size = (person.width, person.height);
    let hits = left.on_detections("person", &out[0], &person, size, now, SystemTime::now());
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].hazard, "danger-zone");
    assert_eq!(hits[0].zone.as_deref(), Some("river-bank"));
    assert!(
        right
            .on_detections("person", &out[0], &person, size, now, SystemTime::now())
            .is_empty()
    );
}
