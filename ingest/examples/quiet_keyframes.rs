//! What skipping quiet keyframes saves, and what it costs in latency: the simulator's
//! still street (1080p25, a keyframe every 2 s, constant quality, sensor noise) on eight
//! cameras, two of which catch fire 15 s in, run with skipping on and off, alternately,
//! three times each. Prints keyframes decoded and skipped, the CPU of decoding and scaling,
//! and how long after the fire appeared it was first decoded.
//!
//! `cargo run --release -p sharpeyes-ingest --example quiet_keyframes [SECONDS] [cbr]`
//!
//! `cbr`: the cameras encode at a fixed bit rate instead, where frame sizes do not show
//! the change.
//!
//! Ingest alone: no analytics asks for attention, so a moving picture is not followed
//! here; in the service it would be (every keyframe while the picture moves).
#![allow(clippy::print_stdout, reason = "the report is the product")]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{SourceConfig, spawn};
use sharpeyes_ingest::cpu::{Stage, totals};
use sharpeyes_ingest::simulator::SceneKind;
use sharpeyes_ingest::{Frame, Simulator, SimulatorConfig, Timeouts};
use tokio::sync::watch;

const CAMERAS: usize = 8;
const FIRES: [usize; 2] = [7, 8];
const FORCED: Duration = Duration::from_secs(10);

struct Phase {
    decoded: usize,
    skipped: u64,
    cpu: Duration,
    fire_seen: Vec<Option<Duration>>,
}

async fn phase(skip: bool, cbr: bool, seconds: u64, cache: &std::path::Path) -> Phase {
    let sim = Simulator::start(SimulatorConfig {
        cameras: CAMERAS,
        port: 0,
        grain: 2,
        traffic: false,
        constant_quality: !cbr,
        scenario: FIRES
            .iter()
            .map(|c| format!("fire@15s:cam{c}").parse().expect("scenario"))
            .collect(),
        cache_dir: Some(cache.to_owned()),
        ..SimulatorConfig::default()
    })
    .expect("simulator");
    let (stop, shutdown) = watch::channel(false);
    let cameras: Vec<_> = (1..=CAMERAS)
        .map(|n| {
            spawn(
                SourceConfig {
                    camera: Arc::from(format!("cam{n}")),
                    url: url::Url::parse(&sim.url(n)).expect("url"),
                    udp: false,
                    sampling: Sampling::Keyframes,
                    skip_quiet: skip.then_some(FORCED),
                    detect_side: 640,
                    hardware_decoding: false,
                    timeouts: Timeouts::default(),
                },
                shutdown.clone(),
            )
        })
        .collect();
    let cpu = || -> Duration {
        totals()
            .into_iter()
            .filter(|(s, _)| matches!(s, Stage::Decode | Stage::Scale))
            .map(|(_, d)| d)
            .sum()
    };
    let before = cpu();
    let end = Instant::now() + Duration::from_secs(seconds);
    let runs = cameras.iter().map(|cam| {
        let frames = cam.frames.clone();
        async move {
            let mut got: Vec<(Instant, Arc<Frame>)> = Vec::new();
            while let Ok(f) = tokio::time::timeout_at(end.into(), frames.next()).await {
                got.push((Instant::now(), f));
            }
            got
        }
    });
    let got = futures::future::join_all(runs).await;
    let used = cpu() - before;
    let log = sim.scene_log();
    let fire_seen = FIRES
        .iter()
        .map(|&c| {
            let at = log
                .iter()
                .find(|s| s.camera == c && s.scene == SceneKind::Fire)?
                .instant;
            let frames = &got[c - 1];
            let first = &frames.first()?.1;
            frames
                .iter()
                .find(|(_, f)| differs(f, first))
                .map(|(seen, _)| seen.saturating_duration_since(at))
        })
        .collect();
    let _ = stop.send(true);
    let skipped = cameras
        .iter()
        .map(|c| c.counters.quiet.load(Ordering::Relaxed))
        .sum();
    for c in cameras {
        let _ = c.task.await;
    }
    sim.stop();
    Phase {
        decoded: got.iter().map(Vec::len).sum(),
        skipped,
        cpu: used,
        fire_seen,
    }
}

/// Whether two frames show different pictures (more than sensor noise).
fn differs(a: &Frame, b: &Frame) -> bool {
    let sum: u64 = a
        .rgb
        .iter()
        .zip(&b.rgb)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.rgb.len().max(1) as f64 > 2.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let cbr = std::env::args().nth(2).is_some_and(|a| a == "cbr");
    gstreamer::init().expect("GStreamer");
    let cache = std::env::temp_dir().join("sharpeyes-sim-clips");
    println!(
        "{CAMERAS} cameras, still street at {}, fire on cam7 and cam8 at 15 s, {seconds} s a run, forced interval {FORCED:?}",
        if cbr {
            "a fixed bit rate"
        } else {
            "constant quality"
        }
    );
    println!(
        "| run | skipping | keyframes decoded | skipped | decode+scale CPU | fire first decoded after |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 1..=3 {
        for skip in [true, false] {
            let p = phase(skip, cbr, seconds, &cache).await;
            let fire: Vec<String> = p
                .fire_seen
                .iter()
                .map(|d| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())))
                .collect();
            println!(
                "| {round} | {} | {} | {} | {:.2} s | {} |",
                if skip { "on" } else { "off" },
                p.decoded,
                p.skipped,
                p.cpu.as_secs_f64(),
                fire.join(", ")
            );
        }
    }
}
