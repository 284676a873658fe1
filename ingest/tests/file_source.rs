//! The GStreamer backend on a recording: replayed in a loop, keyframes alone decoded.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{GstInput, GstSourceConfig, spawn_gst};
use sharpeyes_ingest::{CameraState, ErrorKind, Timeouts};
use tokio::sync::watch;

/// Writes `frames` frames of H.264 (320x240, 25 fps, a keyframe every `gop`) to `path`.
fn write_clip(path: &Path, frames: u32, gop: u32) {
    gst::init().unwrap();
    let launch = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 ! x264enc key-int-max={gop} bframes=0 speed-preset=ultrafast ! h264parse ! video/x-h264,stream-format=byte-stream ! filesink location={}",
        path.display()
    );
    let pipeline = gst::parse::launch(&launch).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(20),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(msg.map(|m| m.type_()), Some(gst::MessageType::Eos)),
        "the clip was written"
    );
}

fn config(input: GstInput, sampling: Sampling) -> GstSourceConfig {
    GstSourceConfig {
        camera: Arc::from("replay"),
        input,
        sampling,
        detect_side: 160,
        timeouts: Timeouts {
            stall: Duration::from_secs(3),
            ..Timeouts::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_loops_and_only_keyframes_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.h264");
    write_clip(&clip, 20, 10); // 0.8 s, two keyframes
    let (stop, shutdown) = watch::channel(false);
    let cam = spawn_gst(config(GstInput::File(clip), Sampling::Keyframes), shutdown);

    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < 5 && start.elapsed() < Duration::from_secs(15) {
        if let Ok(f) = tokio::time::timeout(Duration::from_secs(5), cam.frames.next()).await {
            got.push(f);
        }
    }
    assert!(
        got.len() >= 5,
        "only {} frames: the clip has 2 keyframes, so 5 means it looped",
        got.len()
    );
    let seen: Vec<(bool, u32, u32, usize)> = got
        .iter()
        .map(|f| (f.keyframe, f.width, f.height, f.rgb.len()))
        .collect();
    assert!(
        seen.iter().all(|s| *s == (true, 160, 120, 160 * 120 * 3)),
        "{seen:?}"
    );
    let decoded = cam.counters.decode.decoded.load(Ordering::Relaxed);
    let skipped = cam.counters.skipped.load(Ordering::Relaxed);
    assert!(
        skipped >= 4 * decoded,
        "delta frames are dropped before decoding: {decoded} decoded, {skipped} skipped"
    );
    assert_eq!(*cam.state.borrow(), CameraState::Streaming);
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), cam.task)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test]
async fn a_missing_recording_fails_with_the_path() {
    let (_stop, shutdown) = watch::channel(false);
    let mut cam = spawn_gst(
        config(
            GstInput::File("/nonexistent/clip.h264".into()),
            Sampling::All,
        ),
        shutdown,
    );
    let state = tokio::time::timeout(
        Duration::from_secs(10),
        cam.state
            .wait_for(|s| matches!(s, CameraState::Failed { .. })),
    )
    .await
    .expect("fails promptly")
    .unwrap()
    .clone();
    let CameraState::Failed { error } = state else {
        panic!("{state:?}")
    };
    assert_eq!(error.kind(), &ErrorKind::NotFound);
    assert!(
        error
            .to_string()
            .starts_with("camera replay (file:///nonexistent/clip.h264): "),
        "{error}"
    );
}
