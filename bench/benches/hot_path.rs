//! The per-frame hot path: preprocessing against the straightforward baseline, box decoding
//! with NMS, the whole per-frame overhead (gate, tracking, rules), what an alert costs
//! (snapshot JPEG, message), inference at several batch and input sizes. Prints a summary with ratios and
//! the targets of DESIGN.md at the end.

#![allow(clippy::print_stdout)] // the summary is the bench's output

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use sharpeyes_alerts::{Alert, FrameSize};
use sharpeyes_analytics::stages::{
    AnalysisSettings, Batch, CameraAnalyzer, Decoder, RgbImage, placement,
};
use sharpeyes_analytics::{
    BBox, Detector, EventObject, HazardEvent, NmsConfig, Runtime, SessionTuning,
};
use sharpeyes_bench::{
    baseline_preprocess, frame_1080p, mean_seconds, summary_line, yolov8_output_640,
};
use sharpeyes_config::{Config, Install, Model, ModelLayout, Precision, Severity};
use sharpeyes_testkit::config::{FIRE, GRIDS, with};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

fn preprocess(c: &mut Criterion) {
    let frame = frame_1080p();
    let img = RgbImage::new(1920, 1080, &frame).unwrap();
    for size in [640, 320] {
        let mut g = c.benchmark_group(format!("preprocess_1080p_to_{size}"));
        let mut batch = Batch::new(ModelLayout::Yolov8, size, 1);
        g.bench_function("sharpeyes", |b| {
            b.iter(|| {
                batch.clear();
                batch.push(black_box(img)).unwrap();
                black_box(batch.planar()[0])
            })
        });
        g.bench_function("baseline", |b| {
            b.iter(|| black_box(baseline_preprocess(black_box(&frame), 1920, 1080, size)))
        });
        g.finish();
    }
}

/// Video quality diagnosis of an analysed frame at the detection size (640x360), beside the
/// motion gate on the same frame: both run on every analysed frame.
fn health(c: &mut Criterion) {
    use sharpeyes_analytics::health::{Diagnosis, HealthConfig};
    use sharpeyes_analytics::stages::{MotionConfig, MotionGate};
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let frame: Vec<u8> = (0..640 * 360 * 3)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 56) as u8
        })
        .collect();
    let img = RgbImage::new(640, 360, &frame).unwrap();
    let mut g = c.benchmark_group("health_640x360");
    let mut diagnosis = Diagnosis::new(HealthConfig::default());
    let start = std::time::Instant::now();
    g.bench_function("diagnosis", |b| {
        b.iter(|| black_box(diagnosis.observe(black_box(img), start)))
    });
    let mut gate = MotionGate::new(MotionConfig::default());
    g.bench_function("motion_gate", |b| {
        b.iter(|| black_box(gate.check(black_box(img), start)))
    });
    g.finish();
}

/// Decoding one noisy 1080p keyframe (the simulator's street at 4 Mbit/s) to 320x180 RGB,
/// as keyframe sampling does: libavcodec directly, skipping the loop filter, against
/// GStreamer's avdec pipeline. Each iteration pushes a keyframe and waits for its frame.
fn keyframe_decode(c: &mut Criterion) {
    use sharpeyes_ingest::decode::{Codec, Decoder as FrameDecoder, Software};
    use sharpeyes_ingest::simulator::SceneKind;
    let keyframes: Vec<Vec<u8>> = sharpeyes_bench::simulator_process::noisy_1080p(1, None)
        .access_units(SceneKind::Street)
        .expect("the simulator's street clip")
        .into_iter()
        .filter_map(|(au, key)| key.then_some(au))
        .collect();
    let mut g = c.benchmark_group("keyframe_1080p_to_320");
    for (name, software) in [
        ("libavcodec", Software::Libav),
        ("gstreamer", Software::Gstreamer),
    ] {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut d = FrameDecoder::software(
            "bench".into(),
            Codec::H264,
            (320, 180),
            software,
            Arc::default(),
            move |f| {
                let _ = tx.send(f.rgb.len());
            },
        )
        .expect("a software decoder");
        d.set_intra_only(true);
        let mut next = keyframes.iter().cycle();
        g.bench_function(name, |b| {
            b.iter(|| {
                let au = next.next().expect("a keyframe").clone();
                d.push(au, SystemTime::now(), true).expect("pushed");
                black_box(rx.recv_timeout(Duration::from_secs(10)).expect("a frame"))
            })
        });
    }
    g.finish();
}

fn postprocess(c: &mut Criterion) {
    let output = yolov8_output_640();
    let p = placement(ModelLayout::Yolov8, 640, 1920, 1080);
    let mut decoder = Decoder::new(NmsConfig::default());
    let mut out = Vec::with_capacity(64);
    c.bench_function("decode_nms_1x6x8400", |b| {
        b.iter(|| {
            out.clear();
            decoder.yolov8(black_box(&output), 8400, &p, &mut out);
            black_box(out.len())
        })
    });
}

/// Everything a frame costs besides decoding and inference: motion gate, preprocessing,
/// box decoding with NMS, tracking and the hazard rules.
/// One camera watching fire and smoke with the fire detector at 640: the shared fixtures
/// and a smoke hazard.
fn per_frame_config() -> String {
    let smoke = r#"
[[hazards]]
name = "smoke"
model = "fire_smoke"
classes = ["smoke"]
min_count = 2
severity = "major"

[[cameras]]
id = "cam"
name = "cam"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/cam"
grid = "321322"
"#;
    format!("{GRIDS}{}{smoke}", with(FIRE, "input_size", "640"))
}

fn per_frame(c: &mut Criterion) {
    let install = Install::discover();
    let config = Config::parse(
        &per_frame_config(),
        std::path::Path::new("bench.toml"),
        &install.model_dirs(),
    )
    .unwrap_or_else(|p| panic!("{p}"))
    .config;
    let classes = vec!["smoke".to_owned(), "fire".to_owned()];
    let mut analyzer = CameraAnalyzer::new(
        &config,
        &config.cameras[0],
        |_| Some(classes.as_slice()),
        AnalysisSettings::default(),
    )
    .unwrap();
    let frame = Arc::new(frame_1080p());
    let img = RgbImage::new(1920, 1080, &frame).unwrap();
    let output = yolov8_output_640();
    let mut batch = Batch::new(ModelLayout::Yolov8, 640, 1);
    let mut decoder = Decoder::new(NmsConfig::default());
    let mut detections = Vec::with_capacity(64);
    let start = Instant::now();
    let mut tick = 0u64;
    c.bench_function("per_frame_overhead_1080p_640", |b| {
        b.iter(|| {
            tick += 1;
            let now = start + Duration::from_millis(40 * tick);
            black_box(analyzer.gate(img, now));
            batch.clear();
            batch.push(img).unwrap();
            detections.clear();
            decoder.yolov8(&output, 8400, &batch.placements()[0], &mut detections);
            let events = analyzer.on_detections(
                "fire_smoke",
                &detections,
                &frame,
                (1920, 1080),
                now,
                SystemTime::UNIX_EPOCH,
            );
            black_box(events.len())
        })
    });
}

/// What a confirmed hazard costs on its way out: the snapshot JPEG with its boxes, drawn on
/// the frame analytics kept (640x360 for a 1080p camera), and the alert message built and
/// encoded as JSON.
fn alert_out(c: &mut Criterion) {
    let config = Config::parse(
        &per_frame_config(),
        std::path::Path::new("bench.toml"),
        &Install::discover().model_dirs(),
    )
    .unwrap_or_else(|p| panic!("{p}"))
    .config;
    let full = image::RgbImage::from_raw(1920, 1080, frame_1080p()).unwrap();
    let small = image::imageops::resize(&full, 640, 360, image::imageops::FilterType::Triangle);
    let boxes = [[100.0, 120.0, 180.0, 280.0], [320.0, 200.0, 400.0, 350.0]];
    c.bench_function("snapshot_jpeg_640x360", |b| {
        b.iter(|| {
            let s =
                sharpeyes_alerts::render(small.as_raw(), 640, 360, black_box(&boxes), 200 * 1024);
            black_box(s.unwrap())
        })
    });
    let event = HazardEvent {
        camera: "cam".into(),
        grid: "321322".into(),
        hazard: "fire".into(),
        severity: Severity::Critical,
        confidence: 0.82,
        objects: boxes
            .iter()
            .enumerate()
            .map(|(i, b)| EventObject {
                track_id: i as u64,
                class: "fire".into(),
                score: 0.8,
                bbox: BBox {
                    x1: b[0],
                    y1: b[1],
                    x2: b[2],
                    y2: b[3],
                },
            })
            .collect(),
        zone: None,
        detected_at: SystemTime::now(),
        frame: Arc::new(()),
    };
    let size = FrameSize {
        width: 640,
        height: 360,
    };
    c.bench_function("alert_build_and_encode_json", |b| {
        b.iter(|| {
            let alert = Alert::from_event(black_box(&event), size, &config, None).unwrap();
            black_box(serde_json::to_vec(&alert).unwrap())
        })
    });
}

/// The detectors as float and as INT8 (`precision = "int8"`), at both input sizes.
const MODELS: [(&str, &str); 2] = [
    ("fire_smoke", "fire_smoke_yolov8"),
    ("person", "person_fall_yolov8s"),
];

/// ONNX Runtime and the models' directory, as `make setup` left them.
fn runtime_and_models() -> (&'static Runtime, std::path::PathBuf) {
    let install = Install::discover();
    let (Some(lib), Some(models)) = (install.onnxruntime, install.model_dir) else {
        panic!("ONNX Runtime or models missing: run `make setup`");
    };
    (Runtime::load(&lib).expect("ONNX Runtime loads"), models)
}

/// `models/{stem}.onnx` (or its INT8 sibling) as a `[[models]]` entry with these settings.
fn yolov8_model(
    models: &std::path::Path,
    stem: &str,
    size: u32,
    precision: Precision,
    threads: usize,
    max_batch: usize,
) -> Model {
    Model {
        name: stem.into(),
        path: precision.file_for(&models.join(format!("{stem}.onnx"))),
        layout: ModelLayout::Yolov8,
        input_size: size,
        input_height: None,
        precision,
        classes: Vec::new(),
        threads,
        max_batch,
        max_wait: Duration::ZERO,
    }
}

fn inference(c: &mut Criterion) {
    let (runtime, models) = runtime_and_models();
    let frame = frame_1080p();
    let img = RgbImage::new(1920, 1080, &frame).unwrap();
    for (name, stem) in MODELS {
        let mut g = c.benchmark_group(format!("inference_{name}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        // Square inputs, and (batch 1) the rectangles that fit 16:9 with no bars.
        let shapes = [
            (320, None, 4),
            (320, Some(192), 1),
            (640, None, 4),
            (640, Some(384), 1),
        ];
        for (size, height, max_n) in shapes {
            for n in [1, 4].into_iter().filter(|&n| n <= max_n) {
                for precision in [Precision::Float, Precision::Int8] {
                    let spec = Model {
                        input_height: height,
                        ..yolov8_model(&models, stem, size, precision, 1, n)
                    };
                    let mut det = Detector::load(runtime, &spec, NmsConfig::default())
                        .unwrap_or_else(|e| panic!("{e}: run `make setup`"));
                    let mut batch = det.new_batch();
                    for _ in 0..n {
                        batch.push(img).unwrap();
                    }
                    let mut out = vec![Vec::new(); n];
                    let shape = match height {
                        Some(h) => format!("{size}x{h}"),
                        None => size.to_string(),
                    };
                    g.bench_function(format!("{shape}_batch{n}_{}", precision.as_str()), |b| {
                        b.iter(|| det.detect(&batch, &mut out).unwrap())
                    });
                }
            }
        }
        g.finish();
    }
}

/// ONNX Runtime's session settings against the service's (#20), for the models as the
/// service runs them. Each setting twice: the CPU time of the whole process per inference
/// (ONNX Runtime's pool threads included, and their spinning), which is what caps the
/// cameras a machine holds, and the wall time, which is latency.
fn session_settings(c: &mut Criterion) {
    let (runtime, models) = runtime_and_models();
    let frame = frame_1080p();
    let img = RgbImage::new(1920, 1080, &frame).unwrap();
    for (group, stem, size, precision) in SESSION_CASES {
        let mut g = c.benchmark_group(group);
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for (setting, threads, tuning) in session_variants() {
            let spec = yolov8_model(&models, stem, size, precision, threads, 1);
            let mut det = Detector::load_tuned(runtime, &spec, NmsConfig::default(), tuning)
                .unwrap_or_else(|e| panic!("{e}: run `make setup`"));
            let mut batch = det.new_batch();
            batch.push(img).unwrap();
            let mut out = vec![Vec::new(); 1];
            g.bench_function(format!("{setting}_cpu"), |b| {
                b.iter_custom(|iters| {
                    let start = cpu_time::ProcessTime::now();
                    for _ in 0..iters {
                        det.detect(&batch, &mut out).unwrap();
                    }
                    start.elapsed()
                })
            });
            g.bench_function(format!("{setting}_wall"), |b| {
                b.iter(|| det.detect(&batch, &mut out).unwrap())
            });
        }
        g.finish();
    }
}

/// The models as the service runs them: (group, file stem, input side, precision).
const SESSION_CASES: [(&str, &str, u32, Precision); 3] = [
    (
        "session_fire_smoke_320_int8",
        "fire_smoke_yolov8",
        320,
        Precision::Int8,
    ),
    (
        "session_fire_smoke_320_float",
        "fire_smoke_yolov8",
        320,
        Precision::Float,
    ),
    (
        "session_person_640_int8",
        "person_fall_yolov8s",
        640,
        Precision::Int8,
    ),
];

/// (name, `threads`, settings); the first is the service's.
fn session_variants() -> [(&'static str, usize, SessionTuning); 6] {
    let service = SessionTuning::default();
    [
        ("service", 1, service),
        (
            "optimisation_1",
            1,
            SessionTuning {
                optimization: 1,
                ..service
            },
        ),
        (
            "optimisation_2",
            1,
            SessionTuning {
                optimization: 2,
                ..service
            },
        ),
        (
            "flush_to_zero",
            1,
            SessionTuning {
                flush_to_zero: true,
                ..service
            },
        ),
        ("threads_2", 2, service),
        (
            "threads_2_spinning",
            2,
            SessionTuning {
                spinning: true,
                ..service
            },
        ),
    ]
}

fn summary() {
    let m = mean_seconds;
    println!("\n=== hot path summary (this machine, this run) ===");
    for size in [640, 320] {
        let g = format!("preprocess_1080p_to_{size}");
        let target = if size == 640 {
            "target <= 2 ms and >= 5x"
        } else {
            "no target"
        };
        println!(
            "{}",
            summary_line(
                &format!("preprocess 1080p RGB -> {size} letterboxed CHW"),
                m(&g, "sharpeyes"),
                m(&g, "baseline"),
                target
            )
        );
    }
    println!(
        "{}",
        summary_line(
            "decode a noisy 1080p keyframe -> 320x180 RGB",
            m("keyframe_1080p_to_320", "libavcodec"),
            m("keyframe_1080p_to_320", "gstreamer"),
            "libavcodec, no loop filter; baseline: GStreamer avdec"
        )
    );
    let diagnosis = m("health_640x360", "diagnosis");
    let gate = m("health_640x360", "motion_gate");
    println!(
        "{}",
        summary_line(
            "health diagnosis of a 640x360 frame",
            diagnosis,
            None,
            &format!(
                "target < 0.2 ms; {}",
                match (diagnosis, gate) {
                    (Some(d), Some(g)) => format!("{:.1}x the motion gate's cost", d / g),
                    _ => "the motion gate not measured".into(),
                }
            )
        )
    );
    println!(
        "{}",
        summary_line(
            "decode + NMS of [1,6,8400]",
            m("decode_nms_1x6x8400", "decode_nms_1x6x8400")
                .or_else(|| m("decode_nms_1x6x8400", "")),
            None,
            "target <= 0.3 ms"
        )
    );
    println!(
        "{}",
        summary_line(
            "per-frame overhead (gate+preprocess+NMS+track+rules)",
            m("per_frame_overhead_1080p_640", ""),
            None,
            "1080p frame, 640 model"
        )
    );
    println!(
        "{}",
        summary_line(
            "snapshot JPEG, 640x360 with two boxes",
            m("snapshot_jpeg_640x360", ""),
            None,
            "once per alert"
        )
    );
    println!(
        "{}",
        summary_line(
            "alert built and encoded as JSON",
            m("alert_build_and_encode_json", ""),
            None,
            "once per alert"
        )
    );
    for (name, _) in MODELS {
        let group = format!("inference_{name}");
        for size in [320, 640] {
            let one = m(&group, &format!("{size}_batch1_float"));
            for n in [1, 4] {
                let per_frame =
                    |p: &str| m(&group, &format!("{size}_batch{n}_{p}")).map(|t| t / n as f64);
                let (float, int8) = (per_frame("float"), per_frame("int8"));
                let scaling = match (one, float) {
                    (Some(o), Some(p)) => format!("{:.2}x batch-1 cost per frame", p / o),
                    _ => String::new(),
                };
                println!(
                    "{}",
                    summary_line(
                        &format!("inference {name} {size}, batch {n}, per frame, float"),
                        float,
                        None,
                        &scaling
                    )
                );
                println!(
                    "{}",
                    summary_line(
                        &format!("inference {name} {size}, batch {n}, per frame, int8"),
                        int8,
                        float,
                        "the float model is the baseline"
                    )
                );
            }
        }
        for (size, height) in [(320, 192), (640, 384)] {
            for precision in ["float", "int8"] {
                println!(
                    "{}",
                    summary_line(
                        &format!("inference {name} {size}x{height} (16:9, no bars), {precision}"),
                        m(&group, &format!("{size}x{height}_batch1_{precision}")),
                        m(&group, &format!("{size}_batch1_{precision}")),
                        "the square input is the baseline"
                    )
                );
            }
        }
    }
    for (group, ..) in SESSION_CASES {
        let case = group.trim_start_matches("session_");
        let (cpu, wall) = (m(group, "service_cpu"), m(group, "service_wall"));
        for (setting, ..) in session_variants() {
            for (kind, base) in [("cpu", cpu), ("wall", wall)] {
                println!(
                    "{}",
                    summary_line(
                        &format!("{case} {setting}, {kind}"),
                        m(group, &format!("{setting}_{kind}")),
                        base,
                        "the service's settings are the baseline"
                    )
                );
            }
        }
    }
}

criterion_group!(
    benches,
    preprocess,
    health,
    keyframe_decode,
    postprocess,
    per_frame,
    alert_out,
    inference,
    session_settings
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
