//! Ingest CPU per camera: keyframes-only against full-rate decoding of the same simulated
//! 1080p25 cameras (with sensor noise, 4 Mbit/s), side by side in one run (DESIGN.md target:
//! keyframes at most 1/10).
//!
//! The simulator runs in a child process ([`SimulatorProcess`]), so the CPU measured here is
//! ingest's alone: RTSP receive, depacketising, sampling, decoding and scaling to the
//! detection size.
//!
//! `SHARPEYES_BENCH_CAMERAS` (default 4) and `SHARPEYES_BENCH_SECONDS` (default 20) size it.

#![allow(clippy::print_stdout)] // the figures are the bench's output

use std::sync::Arc;
use std::time::Duration;

use sharpeyes_bench::simulator_process::{GOP, SimulatorProcess};
use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{SourceConfig, spawn};
use sharpeyes_ingest::{CameraState, Timeouts};
use tokio::sync::watch;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    sharpeyes_bench::e2e::procs::cpu_seconds("self").expect("/proc/self/stat")
}

struct Measured {
    cpu_per_camera_minute: f64,
    decoded_per_camera_second: f64,
    received_per_camera_second: f64,
}

async fn measure(port: u16, cameras: usize, sampling: Sampling, seconds: u64) -> Measured {
    let (stop, shutdown) = watch::channel(false);
    let handles: Vec<_> = (1..=cameras)
        .map(|i| {
            let url = format!("rtsp://127.0.0.1:{port}/cam{i}");
            let config = SourceConfig {
                camera: Arc::from(url.as_str()),
                url: url::Url::parse(&url).unwrap(),
                udp: false,
                sampling,
                skip_quiet: None,
                detect_side: 640,
                hardware_decoding: false,
                timeouts: Timeouts::default(),
            };
            spawn(config, shutdown.clone())
        })
        .collect();
    for h in &handles {
        let mut state = h.state.clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(|s| *s == CameraState::Streaming),
        )
        .await
        .expect("every camera streams")
        .unwrap();
    }
    // Analytics' side of the slot: take every frame, as a consumer would.
    let drain: Vec<_> = handles.iter().map(|h| h.frames.clone()).collect();
    let consumer = tokio::spawn(async move {
        loop {
            for slot in &drain {
                let _ = slot.take();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let count = |f: &dyn Fn(&sharpeyes_ingest::CameraCounters) -> u64| {
        handles.iter().map(|h| f(&h.counters)).sum::<u64>()
    };
    let (cpu0, dec0, rec0) = (
        cpu_seconds(),
        count(&|c| c.decode.decoded.load(std::sync::atomic::Ordering::Relaxed)),
        count(&|c| c.received.load(std::sync::atomic::Ordering::Relaxed)),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, dec1, rec1) = (
        cpu_seconds(),
        count(&|c| c.decode.decoded.load(std::sync::atomic::Ordering::Relaxed)),
        count(&|c| c.received.load(std::sync::atomic::Ordering::Relaxed)),
    );
    consumer.abort();
    stop.send_replace(true);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h.task).await;
    }
    let per = |v: f64| v / cameras as f64 / seconds as f64;
    Measured {
        cpu_per_camera_minute: per(cpu1 - cpu0) * 60.0,
        decoded_per_camera_second: per((dec1 - dec0) as f64),
        received_per_camera_second: per((rec1 - rec0) as f64),
    }
}

fn main() {
    if SimulatorProcess::serve_if_child() {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` ask what is here
    }
    let cameras = env_or("SHARPEYES_BENCH_CAMERAS", 4) as usize;
    let seconds = env_or("SHARPEYES_BENCH_SECONDS", 20);
    let sim = SimulatorProcess::start(cameras, None);
    let port = sim.port;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "ingest CPU: {cameras} simulated 1080p25 cameras (GOP {GOP}), {seconds} s per mode, decoded to 640 wide"
    );
    let key = runtime.block_on(measure(port, cameras, Sampling::Keyframes, seconds));
    let all = runtime.block_on(measure(port, cameras, Sampling::All, seconds));
    drop(sim);

    for (name, m) in [("keyframes", &key), ("all", &all)] {
        println!(
            "{name:<10} {:>7.2} CPU s per camera per minute  ({:>5.1} frames/s received, {:>5.1} decoded per camera)",
            m.cpu_per_camera_minute, m.received_per_camera_second, m.decoded_per_camera_second
        );
    }
    let ratio = key.cpu_per_camera_minute / all.cpu_per_camera_minute;
    println!(
        "keyframes / all CPU = {ratio:.3} (1/{:.1}); target at most 1/10: {}",
        1.0 / ratio,
        if ratio <= 0.1 { "met" } else { "missed" }
    );
    println!(
        "cameras per core at this rate: keyframes {:.0}, all {:.1}",
        60.0 / key.cpu_per_camera_minute,
        60.0 / all.cpu_per_camera_minute
    );
}
