//! The whole analytics path with the real models: frames from several cameras batched
//! together, detections tracked, hazard rules confirming (or not) over frames.
//!
//! Needs `make setup` (ONNX Runtime and the models); fails, rather than skips, without it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sharpeyes_analytics::{
    AnalysisSettings, AsRgb, Batcher, BatcherConfig, CameraAnalyzer, Detector, HazardEvent,
    NmsConfig, RgbImage, Runtime,
};
use sharpeyes_config::{Config, Install};

struct Frame {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl AsRgb for Frame {
    fn rgb(&self) -> RgbImage<'_> {
        RgbImage::new(self.width, self.height, &self.rgb).unwrap()
    }
}

fn frame(name: &str) -> Arc<Frame> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/images")
        .join(name);
    let img = image::open(&path).unwrap().to_rgb8();
    Arc::new(Frame {
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
    })
}

const CONFIG: &str = r#"
[[grids]]
id = "321322"
name = "沭阳县"
centre = "县中心"

[[models]]
name = "fire_smoke"
path = "fire_smoke_yolov8.onnx"
layout = "yolov8"
input_size = 320
classes = ["smoke", "fire"]

[[models]]
name = "person"
path = "person_fall_yolov8s.onnx"
layout = "yolov8"
input_size = 640
classes = ["Normal", "Fall"]

[[hazards]]
name = "fire"
model = "fire_smoke"
classes = ["fire"]
min_confidence = 0.5
confirm = { k = 2, n = 3 }
severity = "critical"
cooldown = "5m"

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
        CONFIG,
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

#[test]
fn fire_is_confirmed_after_k_of_n_frames_and_coffee_raises_nothing() {
    let (config, runtime) = setup();
    let det = Detector::load(
        runtime,
        config.model("fire_smoke").unwrap(),
        NmsConfig::default(),
    )
    .unwrap();
    let mut cams = [
        analyzer(&config, "kitchen", &det),
        analyzer(&config, "cafe", &det),
    ];
    let (tx, rx) = crossbeam_channel::unbounded();
    let cfg = BatcherConfig {
        max_batch: 2,
        max_wait: Duration::from_secs(2),
        max_age: Duration::from_secs(30),
        queue: 8,
    };
    let batcher: Batcher<Frame, usize> = Batcher::start(vec![det], cfg, tx);
    let (fire, coffee) = (frame("synthetic_fire.png"), frame("coffee.png"));

    let start = Instant::now();
    let mut events: Vec<(usize, usize, HazardEvent<Frame>)> = Vec::new();
    for step in 0..4 {
        // Both cameras' frames of a step go into one batch.
        assert!(batcher.submit(fire.clone(), 0));
        assert!(batcher.submit(coffee.clone(), 1));
        for _ in 0..2 {
            let r = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("inference result");
            let f = r.frame.rgb();
            let now = start + Duration::from_secs(step as u64);
            for e in cams[r.tag].on_detections(
                "fire_smoke",
                &r.detections,
                &r.frame,
                (f.width, f.height),
                now,
                SystemTime::now(),
            ) {
                events.push((step, r.tag, e));
            }
        }
    }
    assert_eq!(
        batcher.stats().mean_fill(),
        2.0,
        "the two cameras shared each batch"
    );
    // k = 2 of n = 3: nothing on the first frame, confirmed on the second, then cooldown.
    assert_eq!(
        events.len(),
        1,
        "{:?}",
        events
            .iter()
            .map(|(s, c, e)| (s, c, &e.hazard))
            .collect::<Vec<_>>()
    );
    let (step, cam, e) = &events[0];
    assert_eq!((*step, *cam), (1, 0));
    assert_eq!(
        (e.camera.as_str(), e.grid.as_str(), e.hazard.as_str()),
        ("kitchen", "321322", "fire")
    );
    assert!((e.confidence - 0.805).abs() < 0.03, "{}", e.confidence);
    assert_eq!(e.objects.len(), 1);
    assert_eq!(e.objects[0].class, "fire");
    assert!(
        (e.objects[0].bbox.x1 - 210.0).abs() < 4.0,
        "{:?}",
        e.objects[0].bbox
    );
    assert!(
        Arc::ptr_eq(&e.frame, &fire),
        "the event carries the confirming frame"
    );
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
    let person = frame("camera.png");
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
