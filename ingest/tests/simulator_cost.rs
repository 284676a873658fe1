//! Measurements of the simulator's cost, run by hand (never a timed pass/fail test):
//!
//!     cargo test --release -p sharpeyes-ingest --test simulator_cost -- --ignored --nocapture
//!
//! Needs `gst-launch-1.0` (gstreamer1.0-tools) for the client processes, which run outside
//! this process so that only the simulator's CPU time is counted.

#![allow(clippy::print_stderr)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sharpeyes_ingest::simulator::{Simulator, SimulatorConfig};

/// Cameras served while measuring, and for how long.
const CAMERAS: usize = 16;
const WARMUP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);
/// How long the frame rate of one camera is checked after the CPU measurement.
const RATE_WINDOW: Duration = Duration::from_secs(4);
/// Linux clock ticks per second for /proc times (USER_HZ, 100 on every mainstream kernel).
const TICKS_PER_S: f64 = 100.0;

fn config_1080p25(cameras: usize, cache: &tempfile::TempDir) -> SimulatorConfig {
    SimulatorConfig {
        cameras,
        port: 0,
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    }
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state field (3) here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_S
}

/// Depayloaded access units from `url` during `window`, counted from the first one.
fn count_access_units(url: &str, window: Duration) -> usize {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols=tcp latency=0 ! rtph264depay ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut count = 0;
    let mut first: Option<Instant> = None;
    let limit = Instant::now() + window * 3;
    while Instant::now() < limit && first.is_none_or(|f| f.elapsed() < window) {
        if sink
            .try_pull_sample(gst::ClockTime::from_mseconds(100))
            .is_some()
        {
            first.get_or_insert_with(Instant::now);
            count += 1;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    count
}

struct Clients(Vec<Child>);

impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
#[ignore = "measurement, run by hand in release mode"]
fn encode_time_and_serving_cost_at_1080p25() {
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let cpu = cpu_seconds();
    drop(Simulator::start(config_1080p25(1, &cache)).unwrap());
    eprintln!(
        "encode 1080p25 GOP 50, 2-GOP street clip (100 frames): {:.2} s wall, {:.2} s CPU",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
    let t = Instant::now();
    drop(Simulator::start(config_1080p25(1, &cache)).unwrap());
    eprintln!(
        "start with a warm clip cache: {:.3} s",
        t.elapsed().as_secs_f64()
    );

    let sim = Simulator::start(config_1080p25(CAMERAS, &cache)).unwrap();
    let clients = Clients(
        (1..=CAMERAS)
            .map(|n| {
                Command::new("gst-launch-1.0")
                    .args([
                        "-q",
                        "rtspsrc",
                        &format!("location={}", sim.url(n)),
                        "protocols=tcp",
                        "!",
                        "fakesink",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("gst-launch-1.0 (gstreamer1.0-tools) runs")
            })
            .collect(),
    );
    std::thread::sleep(WARMUP);
    let started = sim.scene_log().len();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    std::thread::sleep(MEASURE);
    let (wall, used) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    eprintln!(
        "serving {CAMERAS} cameras at 1080p25 ({started} streams started) for {wall:.1} s: {used:.2} s CPU = {:.1}% of one core, {:.2}% per camera",
        100.0 * used / wall,
        100.0 * used / wall / CAMERAS as f64
    );
    assert_eq!(started, CAMERAS, "every camera's stream started");

    // Outside the measured window: check that one camera really delivers 25 fps meanwhile.
    let frames = count_access_units(&sim.url(1), RATE_WINDOW);
    eprintln!(
        "cam1 delivered {frames} access units in {} s beside the 15 other clients ({:.1} fps)",
        RATE_WINDOW.as_secs(),
        frames as f64 / RATE_WINDOW.as_secs_f64()
    );
    drop(clients);
    sim.stop();
}
