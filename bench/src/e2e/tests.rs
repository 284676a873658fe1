//! The harness's verdicts on hand-written scrapes: each way a step can fail, and one that
//! holds.

use super::*;

fn options() -> Options {
    Options::new(PathBuf::from("sharpeyes"))
}

/// A scrape of two cameras after `t` seconds at the given per-camera rates.
fn scrape(t: f64, rates: &[(&str, f64)], model: &[(&str, f64)], wait: (f64, f64)) -> Scrape {
    let mut text = String::new();
    for cam in ["c1", "c2"] {
        for (outcome, r) in rates {
            text.push_str(&format!(
                "sharpeyes_frames_total{{camera=\"{cam}\",outcome=\"{outcome}\"}} {}\n",
                r * t
            ));
        }
        text.push_str(&format!(
            "sharpeyes_camera_state{{camera=\"{cam}\",state=\"streaming\"}} 1\n"
        ));
    }
    for (outcome, r) in model {
        text.push_str(&format!(
            "sharpeyes_model_frames_total{{model=\"fire_smoke\",outcome=\"{outcome}\"}} {}\n",
            r * t
        ));
    }
    text.push_str(&format!(
        "sharpeyes_stage_seconds_sum{{stage=\"queue_wait\"}} {}\nsharpeyes_stage_seconds_count{{stage=\"queue_wait\"}} {}\n",
        wait.0, wait.1
    ));
    text.push_str(&format!(
        "sharpeyes_inference_batch_size_sum{{model=\"fire_smoke\"}} {}\nsharpeyes_inference_batch_size_count{{model=\"fire_smoke\"}} {}\n",
        2.0 * t,
        t
    ));
    Scrape::parse(&text)
}

const KEYFRAME_CAMERA: &[(&str, f64)] = &[
    ("received", 25.0),
    ("skipped", 24.5),
    ("decoded", 0.5),
    ("gated", 0.3),
    ("analysed", 0.2),
];

fn window(rates: &[(&str, f64)], model: &[(&str, f64)], waits: [(f64, f64); 3]) -> Window {
    Window {
        s0: scrape(0.0, rates, model, waits[0]),
        s1: scrape(10.0, rates, model, waits[1]),
        s2: scrape(20.0, rates, model, waits[2]),
        seconds: 20.0,
    }
}

fn cams() -> Vec<String> {
    vec!["c1".into(), "c2".into()]
}

const STEADY_WAIT: [(f64, f64); 3] = [(0.0, 0.0), (0.5, 10.0), (1.0, 20.0)];

#[test]
fn a_step_that_keeps_up_holds_with_its_rates() {
    let w = window(KEYFRAME_CAMERA, &[("inferred", 0.4)], STEADY_WAIT);
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &w,
        Latency::from_samples(vec![2.5, 2.1], 0),
    );
    assert!(s.held, "{:?}", s.reasons);
    assert_eq!(s.received, 25.0);
    assert_eq!(s.handed_on, 0.5);
    assert_eq!(s.analysed, 0.2);
    assert!((s.inferred - 0.4).abs() < 1e-9);
    assert_eq!(s.batch_mean, 2.0);
    assert_eq!(s.batch_fill, 0.5);
    assert_eq!(s.queue_wait_ms, [50.0, 50.0]);
    assert_eq!(s.latency.p50, Some(2.1));
    assert_eq!(s.latency.p99, Some(2.5));
}

#[test]
fn a_camera_short_of_frames_or_losing_them_is_starved() {
    let slow = [("received", 20.0), ("decoded", 0.5)];
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(&slow, &[], STEADY_WAIT),
        Latency::default(),
    );
    assert!(!s.held);
    assert!(
        s.reasons[0].contains("received under 90%"),
        "{:?}",
        s.reasons
    );

    let few = [("received", 25.0), ("decoded", 0.3)];
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(&few, &[], STEADY_WAIT),
        Latency::default(),
    );
    assert!(
        s.reasons[0].contains("2 of 2 cameras handed on under 80%"),
        "{:?}",
        s.reasons
    );

    let dropping = [("received", 25.0), ("decoded", 0.5), ("dropped", 0.1)];
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(&dropping, &[], STEADY_WAIT),
        Latency::default(),
    );
    assert!(s.reasons[0].contains("lost over 10%"), "{:?}", s.reasons);

    // The baseline asks for 5 a second: half a frame a second is starving it.
    let s = judge(
        &options(),
        Pipeline::FullDecode,
        &cams(),
        &window(KEYFRAME_CAMERA, &[], STEADY_WAIT),
        Latency::default(),
    );
    assert_eq!(s.sampling, "fps=5");
    assert!(s.reasons[0].contains("0.50 of 5.00 fps"), "{:?}", s.reasons);
}

#[test]
fn refusals_a_growing_wait_and_missed_fires_fail_a_step() {
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(
            KEYFRAME_CAMERA,
            &[("inferred", 1.0), ("refused", 0.1)],
            STEADY_WAIT,
        ),
        Latency::default(),
    );
    assert!(
        s.reasons.iter().any(|r| r.contains("could not keep up")),
        "{:?}",
        s.reasons
    );

    let growing = [(0.0, 0.0), (1.0, 10.0), (10.0, 20.0)];
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(KEYFRAME_CAMERA, &[], growing),
        Latency::default(),
    );
    assert_eq!(s.queue_wait_ms, [100.0, 900.0]);
    assert!(
        s.reasons.iter().any(|r| r.contains("queue grew")),
        "{:?}",
        s.reasons
    );

    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(KEYFRAME_CAMERA, &[], STEADY_WAIT),
        Latency::from_samples(vec![3.0], 1),
    );
    assert_eq!(s.reasons, ["1 of 2 fires raised no alert"]);

    // Every fire alerted, but the slowest past one GOP + 2 s (4 s here): not held.
    let s = judge(
        &options(),
        Pipeline::Sharpeyes,
        &cams(),
        &window(KEYFRAME_CAMERA, &[], STEADY_WAIT),
        Latency::from_samples(vec![0.5, 4.3], 0),
    );
    assert_eq!(
        s.reasons,
        ["alerts came late: p99 4.30 s, over the target of 4.0 s (one GOP + 2 s)"]
    );
}

#[test]
fn sampling_reads_back_as_written() {
    for s in [Sampling::Keyframes, Sampling::All, Sampling::Fps(2.5)] {
        assert_eq!(parse_sampling(&sampling_name(s)), Ok(s));
    }
    assert_eq!(parse_sampling("5"), Ok(Sampling::Fps(5.0)));
    assert!(parse_sampling("fast").unwrap_err().contains("`fast`"));
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), Some(50.0));
    assert_eq!(percentile(&v, 0.99), Some(99.0));
    assert_eq!(percentile(&[4.0], 0.99), Some(4.0));
    assert_eq!(percentile(&[], 0.5), None);
}

#[test]
fn the_config_has_every_camera_with_the_pipelines_sampling() {
    let o = options();
    let dir = std::path::Path::new("/tmp/x");
    let o = Options {
        forced_interval_s: Some(30),
        receive_coalesce_ms: Some(0),
        keyframe_decoders: Some(0),
        ..o
    };
    let text = service_config(&o, Pipeline::FullDecode, 3, dir, 1883, 8554);
    assert_eq!(text.matches("[[cameras]]").count(), 3);
    assert!(text.contains("url = \"rtsp://127.0.0.1:8554/cam3\""));
    assert!(text.contains("sampling = { fps = 5 }"));
    assert!(text.contains(&format!("id = \"{}\"", camera_id(3))));
    // It is a valid configuration, with the detector tuned as the options say.
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("fire_smoke_yolov8.onnx"), b"").unwrap();
    std::fs::write(models.path().join("fire_smoke_yolov8_int8.onnx"), b"").unwrap();
    let config = sharpeyes_config::Config::parse(
        &text,
        std::path::Path::new("bench.toml"),
        &[models.path().to_owned()],
    )
    .unwrap_or_else(|p| panic!("{p}\n{text}"))
    .config;
    let model = config.model("fire_smoke").unwrap();
    assert_eq!(
        (
            model.input_size,
            model.threads,
            model.max_batch,
            model.max_wait
        ),
        (o.input_size, o.threads, o.max_batch, o.max_wait)
    );
    assert_eq!(o.precision, "int8");
    assert_eq!(model.precision, sharpeyes_config::Precision::Int8);
    assert_eq!(
        model.path,
        models.path().join("fire_smoke_yolov8_int8.onnx")
    );
    assert_eq!(config.cameras.len(), 3);
    assert_eq!(config.motion.forced_interval, Duration::from_secs(30));
    assert!(config.ingest.receive_coalesce.is_zero());
    assert_eq!(config.ingest.keyframe_decoders, Some(0));
    assert_eq!(config.http.listen.port(), 0, "the service picks its port");
    let text = service_config(&o, Pipeline::Sharpeyes, 1, dir, 1883, 8554);
    assert!(text.contains("sampling = \"keyframes\""));
    assert_eq!(camera_id(3).len(), 20, "a GB/T 28181 id");
}

#[test]
fn fires_are_spread_over_the_window_one_per_camera() {
    let o = options();
    let fires = fire_schedule(&o, 4);
    assert_eq!(fires.len(), 4);
    assert!(
        fires
            .iter()
            .all(|f| f.at > o.warmup && f.at + Duration::from_secs(6) < o.warmup + o.measure)
    );
    assert!(fires.windows(2).all(|w| w[0].at < w[1].at));
}

#[test]
fn the_report_names_capacity_and_plots_each_pipeline() {
    let w = window(KEYFRAME_CAMERA, &[("inferred", 0.4)], STEADY_WAIT);
    let step = |p, n, cpu: f64, held| {
        let mut s = judge(
            &options(),
            p,
            &cams(),
            &w,
            Latency::from_samples(vec![2.0, 3.0], 0),
        );
        s.cameras = n;
        s.cores_per_camera = cpu;
        s.held = held;
        // % of a core: a fifth receiving, three fifths inference, the rest uncounted.
        s.stage_cpu = vec![
            ("receive".into(), cpu * 20.0),
            ("inference".into(), cpu * 60.0),
            ("other".into(), cpu * 20.0),
        ];
        s
    };
    let run = Run {
        machine: Machine {
            cores: 2,
            cpu: "test".into(),
        },
        options: options(),
        steps: vec![
            step(Pipeline::Sharpeyes, 4, 0.02, true),
            step(Pipeline::Sharpeyes, 8, 0.02, true),
            step(Pipeline::FullDecode, 4, 0.3, true),
            step(Pipeline::FullDecode, 8, 0.25, false),
        ],
    };
    assert_eq!(run.capacity(Pipeline::Sharpeyes), Some(8));
    assert_eq!(run.capacity(Pipeline::FullDecode), Some(4));
    let summary = report::summary(&run);
    assert!(
        summary.contains("cameras held, sharpeyes / full-decode: 2.0x"),
        "{summary}"
    );
    assert!(
        summary.contains("at N=4: sharpeyes 2.0% of a core, full-decode 30.0%: 15.0x"),
        "{summary}"
    );
    assert!(
        summary.contains("p99 3.00 s (2 fires): target p99 <= 4.0 s met"),
        "{summary}"
    );
    let svg = report::svg(&run);
    assert_eq!(svg.matches("<polyline").count(), 2 + 4);
    assert_eq!(
        svg.matches("fill=\"white\" stroke=").count(),
        3,
        "the N not held, hollow in each series"
    );
    let table = report::table(&run);
    assert_eq!(table.lines().count(), 2 + 4);
    // Where the CPU goes: a line per step, and a stacked bar per pipeline at its largest N.
    let stages = report::stage_table(&run);
    assert_eq!(stages.lines().count(), 1 + 4, "{stages}");
    assert!(stages.lines().next().unwrap().contains("infer"), "{stages}");
    assert!(
        stages.contains("sharpeyes     8     0.40     1.20     0.40     2.00"),
        "{stages}"
    );
    assert!(
        svg.contains("<title>inference: 1.20%</title>"),
        "sharpeyes at N=8"
    );
    assert!(
        svg.contains("<title>inference: 15.00%</title>"),
        "full-decode at N=8"
    );
    assert!(svg.contains(">full-decode N=8</text>"));
    let json = serde_json::to_string(&run).unwrap();
    assert!(json.contains("\"pipeline\":\"full-decode\""));
    // `--replot` reads it back.
    let back: Run = serde_json::from_str(&json).unwrap();
    assert_eq!(back.capacity(Pipeline::FullDecode), Some(4));
    assert_eq!(back.options.sampling, Sampling::Keyframes);
    assert_eq!(back.options.measure, run.options.measure);
    assert_eq!(report::svg(&back), svg);
}

/// A step whose service stopped answering (overloaded) is a step not held, in the table
/// with its reason, and not a point on the plot: the run still ends with its report.
#[test]
fn an_unmeasured_step_is_not_held_and_not_plotted() {
    let w = window(KEYFRAME_CAMERA, &[("inferred", 0.4)], STEADY_WAIT);
    let mut held = judge(
        &options(),
        Pipeline::FullDecode,
        &cams(),
        &w,
        Latency::from_samples(vec![0.5], 0),
    );
    (held.cameras, held.held) = (8, true);
    let lost = Step::unmeasured(
        &options(),
        Pipeline::FullDecode,
        16,
        "GET 127.0.0.1:1/metrics: timed out".into(),
    );
    assert!(!lost.held && !lost.measured());
    let run = Run {
        machine: Machine {
            cores: 2,
            cpu: "test".into(),
        },
        options: options(),
        steps: vec![held, lost],
    };
    assert_eq!(run.capacity(Pipeline::FullDecode), Some(8));
    let table = report::table(&run);
    assert!(table.contains("NO: not measured: GET"), "{table}");
    let svg = report::svg(&run);
    assert_eq!(
        svg.matches("fill=\"white\" stroke=").count(),
        0,
        "no hollow point for the unmeasured step"
    );
}
