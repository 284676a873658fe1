//! The end-to-end harness itself, small: two 640x360 cameras through the real service (this
//! build) to a real mosquitto, both pipelines. What it reports must be what happened: every
//! fire alerted with a latency, the frame rates each sampling asks for, and a full-decode
//! baseline that decodes every frame but hands on only its few a second.

use std::path::PathBuf;
use std::time::Duration;

use sharpeyes_bench::e2e::{self, Options, Pipeline, report};
use sharpeyes_config::Sampling;

#[test]
fn two_cameras_through_the_real_service_both_pipelines() {
    let cache = tempfile::tempdir().unwrap();
    let options = Options {
        cameras: vec![2],
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        warmup: Duration::from_secs(6),
        measure: Duration::from_secs(12),
        sampling: Sampling::Keyframes,
        baseline_fps: 2.0,
        clip_cache: Some(cache.path().to_owned()),
        // As `--service-cpus 0` runs it: under taskset, which must still start and measure it.
        service_cpus: Some("0".into()),
        ..Options::new(PathBuf::from(env!("CARGO_BIN_EXE_sharpeyes")))
    };
    let run = e2e::run(&options, |_| {}).unwrap();
    let ours = run.step(Pipeline::Sharpeyes, 2).unwrap();
    let base = run.step(Pipeline::FullDecode, 2).unwrap();
    let table = report::table(&run);
    for s in [ours, base] {
        assert!(s.held, "{table}");
        assert_eq!(
            s.latency.samples.len(),
            2,
            "each camera's fire alerted: {table}"
        );
        assert!(
            s.latency.samples.iter().all(|l| (0.5..10.0).contains(l)),
            "{table}"
        );
        assert!(
            (9.0..=11.0).contains(&s.received),
            "10 fps received: {table}"
        );
        assert!(s.service_cores > 0.0 && s.rss_mib > 10.0, "{table}");
        assert!(s.inferred > 0.0 && s.batch_mean >= 1.0, "{table}");
    }
    // Keyframes: one a second decoded and handed on, nothing else decoded.
    assert!((0.8..=1.2).contains(&ours.decoded), "{table}");
    assert!((0.8..=1.2).contains(&ours.handed_on), "{table}");
    // Full decode: all 10 decoded, 2 a second handed on.
    assert!(base.decoded > 9.0, "{table}");
    assert!((1.6..=2.4).contains(&base.handed_on), "{table}");
    let svg = report::svg(&run);
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 2 + 4,
        "{svg}"
    );
}
