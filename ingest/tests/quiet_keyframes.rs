//! Skipping quiet keyframes against the RTSP simulator: a still camera decodes a keyframe
//! only at the forced interval, one whose analytics asks for attention decodes every one,
//! and a scene that changes is seen within the forced interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{SourceConfig, spawn};
use sharpeyes_ingest::simulator::SceneKind;
use sharpeyes_ingest::{CameraHandle, Simulator, SimulatorConfig, Timeouts};
use tokio::sync::watch;

const FORCED: Duration = Duration::from_secs(4);
/// One keyframe a second.
const FPS: u32 = 10;
const GOP: u32 = 10;

fn camera(url: &str, skip_quiet: Option<Duration>) -> SourceConfig {
    SourceConfig {
        camera: Arc::from(url.rsplit('/').next().unwrap_or("cam")),
        url: url::Url::parse(url).unwrap(),
        udp: false,
        sampling: Sampling::Keyframes,
        skip_quiet,
        detect_side: 160,
        hardware_decoding: false,
        timeouts: Timeouts::default(),
    }
}

/// The frames a camera hands on for `run`, with when each came.
async fn collect(
    cam: &CameraHandle,
    run: Duration,
) -> Vec<(Instant, Arc<sharpeyes_ingest::Frame>)> {
    let end = Instant::now() + run;
    let mut got = Vec::new();
    while let Ok(frame) = tokio::time::timeout_at(end.into(), cam.frames.next()).await {
        got.push((Instant::now(), frame));
    }
    got
}

/// Mean absolute difference of two frames' bytes.
fn difference(a: &sharpeyes_ingest::Frame, b: &sharpeyes_ingest::Frame) -> f64 {
    let sum: u64 = a
        .rgb
        .iter()
        .zip(&b.rgb)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.rgb.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_camera_decodes_at_the_forced_interval_and_sees_a_change_within_it() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimulatorConfig {
        cameras: 3,
        width: 1280,
        height: 720,
        fps: FPS,
        gop: GOP,
        port: 0,
        traffic: false,
        constant_quality: true,
        scenario: vec!["fire@10s:cam1".parse().unwrap()],
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    })
    .unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let url = |n: usize| format!("rtsp://127.0.0.1:{}/cam{n}", sim.port());
    // cam1: still, then a fire from 10 s. cam2: the same still street, but its analytics
    // wants every keyframe. cam3: every keyframe, as without skipping.
    let still = spawn(camera(&url(1), Some(FORCED)), shutdown.clone());
    let watched = spawn(camera(&url(2), Some(FORCED)), shutdown.clone());
    watched.frames.set_attention(true);
    let every = spawn(camera(&url(3), None), shutdown.clone());
    let run = Duration::from_secs(20);
    let (still_frames, watched_frames, every_frames) = tokio::join!(
        collect(&still, run),
        collect(&watched, run),
        collect(&every, run)
    );
    let fire_at = sim
        .scene_log()
        .into_iter()
        .find(|c| c.camera == 1 && c.scene == SceneKind::Fire)
        .expect("the fire started on cam1")
        .instant;

    let n = |f: &[(Instant, Arc<sharpeyes_ingest::Frame>)]| f.len();
    assert!(
        n(&every_frames) >= 17,
        "cam3 decoded {} keyframes in 20 s",
        n(&every_frames)
    );
    assert!(
        n(&watched_frames) + 2 >= n(&every_frames),
        "attention: {} keyframes against {} decoding all",
        n(&watched_frames),
        n(&every_frames)
    );
    assert_eq!(watched.counters.quiet.load(Ordering::Relaxed) as usize, 0);
    // Learning (3 GOPs), then one in four seconds; the fire's keyframe may add one.
    assert!(
        (4..=10).contains(&n(&still_frames)),
        "the still camera decoded {} keyframes in 20 s (forced every 4 s)",
        n(&still_frames)
    );
    let skipped = still.counters.quiet.load(Ordering::Relaxed);
    assert!(skipped >= 8, "{skipped} quiet keyframes skipped");
    // Never longer than the forced interval (plus a GOP and scheduling) between looks.
    for pair in still_frames.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap <= FORCED + Duration::from_millis(1500),
            "{gap:?} between decoded keyframes"
        );
    }
    // The fire is seen within the forced interval of appearing.
    let first = &still_frames[0].1;
    let seen = still_frames
        .iter()
        .find(|(_, f)| difference(f, first) > 2.0)
        .map(|(at, _)| *at)
        .expect("the fire never reached the still camera's frames");
    let took = seen.saturating_duration_since(fire_at);
    assert!(
        took <= FORCED + Duration::from_millis(1500),
        "the fire was decoded {took:?} after it appeared"
    );
    drop(sim);
}
