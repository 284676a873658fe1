//! Camera tasks against the RTSP simulator: real sockets, real RTSP, real decoding.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{GstInput, GstSourceConfig, SourceConfig, spawn, spawn_gst};
use sharpeyes_ingest::decode::Codec;
use sharpeyes_ingest::{
    CameraHandle, CameraState, ErrorKind, Simulator, SimulatorConfig, Timeouts, probe,
};
use tokio::sync::watch;

const FPS: u32 = 10;
const GOP: u32 = 10;

fn sim_config(cameras: usize, port: u16, cache: &tempfile::TempDir) -> SimulatorConfig {
    SimulatorConfig {
        cameras,
        width: 320,
        height: 240,
        fps: FPS,
        gop: GOP,
        port,
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    }
}

fn camera(url: &str, sampling: Sampling) -> SourceConfig {
    let path = url.rsplit('/').next().unwrap_or("cam");
    SourceConfig {
        camera: Arc::from(format!("test-{path}")),
        url: url::Url::parse(url).unwrap(),
        udp: false,
        sampling,
        skip_quiet: None,
        detect_side: 160,
        hardware_decoding: false,
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            stall: Duration::from_secs(3),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
        },
    }
}

async fn wait_state(
    cam: &mut CameraHandle,
    what: &str,
    pred: impl Fn(&CameraState) -> bool,
) -> CameraState {
    let reached = tokio::time::timeout(Duration::from_secs(20), cam.state.wait_for(|s| pred(s)))
        .await
        .map(|r| r.expect("camera task alive").clone());
    reached.unwrap_or_else(|_| {
        panic!(
            "camera never reached {what}; last state {:?}",
            *cam.state.borrow()
        )
    })
}

/// Waits (bounded) for `n` frames from a camera.
async fn frames(cam: &CameraHandle, n: usize) -> Vec<Arc<sharpeyes_ingest::Frame>> {
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < n && start.elapsed() < Duration::from_secs(20) {
        if let Ok(f) = tokio::time::timeout(Duration::from_secs(5), cam.frames.next()).await {
            got.push(f);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_cameras_stream_reconnect_after_a_restart_and_bad_ones_fail_alone() {
    let cache = tempfile::tempdir().unwrap();
    let sim =
        Simulator::start(sim_config(3, 0, &cache).with_credentials("viewer", "s3cret")).unwrap();
    let port = sim.port();
    let authed = |i: usize| sim.url(i).replacen("rtsp://", "rtsp://viewer:s3cret@", 1);
    let (stop, shutdown) = watch::channel(false);
    let mut cams: Vec<CameraHandle> = (1..=3)
        .map(|i| spawn(camera(&authed(i), Sampling::Keyframes), shutdown.clone()))
        .collect();
    let mut wrong_password = spawn(
        camera(
            &sim.url(1).replacen("rtsp://", "rtsp://viewer:nope@", 1),
            Sampling::Keyframes,
        ),
        shutdown.clone(),
    );
    let mut wrong_path = spawn(
        camera(
            &format!("rtsp://viewer:s3cret@127.0.0.1:{port}/cam99"),
            Sampling::Keyframes,
        ),
        shutdown.clone(),
    );

    // Every good camera streams, and only keyframes are decoded.
    for cam in &cams {
        let got = frames(cam, 3).await;
        assert_eq!(got.len(), 3, "a camera delivered too few frames");
        assert!(
            got.iter()
                .all(|f| f.keyframe && (f.width, f.height) == (160, 120))
        );
    }
    for cam in &cams {
        let received = cam.counters.received.load(Ordering::Relaxed);
        let pushed = cam.counters.decode.pushed.load(Ordering::Relaxed);
        assert!(received >= 2 * GOP as u64, "{received} received");
        assert!(
            pushed * u64::from(GOP) <= received + u64::from(GOP),
            "{pushed} of {received} access units decoded: keyframes only"
        );
    }

    // The bad ones fail with their reason; the good ones are unaffected.
    let failed = |s: CameraState| match s {
        CameraState::Failed { error } => error,
        other => panic!("{other:?}"),
    };
    let s = wait_state(&mut wrong_password, "failed", |s| {
        matches!(s, CameraState::Failed { .. })
    })
    .await;
    let error = failed(s);
    assert_eq!(error.kind(), &ErrorKind::Unauthorized);
    assert_eq!(
        error.kind().to_string(),
        "401 Unauthorized: wrong user or password"
    );
    assert!(
        !error.to_string().contains("nope"),
        "no password in {error}"
    );
    let s = wait_state(&mut wrong_path, "failed", |s| {
        matches!(s, CameraState::Failed { .. })
    })
    .await;
    assert_eq!(failed(s).kind(), &ErrorKind::NotFound);
    assert!(
        cams.iter()
            .all(|c| *c.state.borrow() == CameraState::Streaming)
    );

    // Kill the simulator: every camera notices and backs off; restart it: every camera is back.
    sim.stop();
    for cam in &mut cams {
        wait_state(cam, "backoff", |s| matches!(s, CameraState::Backoff { .. })).await;
        cam.frames.take();
    }
    let sim =
        Simulator::start(sim_config(3, port, &cache).with_credentials("viewer", "s3cret")).unwrap();
    for cam in &mut cams {
        wait_state(cam, "streaming again", |s| *s == CameraState::Streaming).await;
        assert!(!frames(cam, 1).await.is_empty(), "frames after the restart");
        assert!(cam.counters.reconnects.load(Ordering::Relaxed) >= 1);
    }

    stop.send_replace(true);
    for cam in cams.into_iter().chain([wrong_password, wrong_path]) {
        tokio::time::timeout(Duration::from_secs(5), cam.task)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_frames_mode_decodes_every_frame() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(sim_config(1, 0, &cache)).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let cam = spawn(camera(&sim.url(1), Sampling::All), shutdown);
    let got = frames(&cam, 15).await;
    assert_eq!(got.len(), 15);
    assert!(
        got.iter().any(|f| !f.keyframe),
        "delta frames are decoded too"
    );
    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), cam.task).await;
    sim.stop();
}

/// Verify mode is a command to the camera ([`FrameSlot::set_verify`]), and both backends
/// obey it: every frame from the next keyframe on, marked as verifying, until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_mode_decodes_every_frame_of_a_keyframe_camera_until_it_ends() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(sim_config(1, 0, &cache)).unwrap();
    for backend in ["retina", "gstreamer"] {
        let (stop, shutdown) = watch::channel(false);
        let cam = if backend == "retina" {
            spawn(camera(&sim.url(1), Sampling::Keyframes), shutdown)
        } else {
            let config = GstSourceConfig {
                camera: Arc::from("gst"),
                input: GstInput::Rtsp {
                    url: url::Url::parse(&sim.url(1)).unwrap(),
                    udp: false,
                },
                sampling: Sampling::Keyframes,
                detect_side: 160,
                timeouts: Timeouts::default(),
            };
            spawn_gst(config, shutdown)
        };
        let got = frames(&cam, 2).await;
        assert!(
            got.iter().all(|f| f.keyframe && !f.verifying),
            "{backend}: keyframes only at first"
        );

        // A sensor alarm: from the next keyframe on, every frame.
        cam.frames.set_verify(true);
        let got = frames(&cam, 2 * GOP as usize).await;
        let deltas = got.iter().filter(|f| !f.keyframe && f.verifying).count();
        assert!(
            deltas >= GOP as usize,
            "{backend}: {deltas} verifying delta frames among {}",
            got.len()
        );

        // Verify mode over: back to keyframes at the next one.
        cam.frames.set_verify(false);
        tokio::time::sleep(Duration::from_secs_f64(1.5 * GOP as f64 / FPS as f64)).await;
        let _ = cam.frames.take();
        let got = frames(&cam, 2).await;
        assert!(
            got.iter().all(|f| f.keyframe && !f.verifying),
            "{backend}: keyframes only again"
        );
        stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), cam.task).await;
    }
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gstreamer_backend_streams_from_the_simulator() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(sim_config(1, 0, &cache)).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let url = url::Url::parse(&sim.url(1)).unwrap();
    let config = GstSourceConfig {
        camera: Arc::from("gst"),
        input: GstInput::Rtsp { url, udp: false },
        sampling: Sampling::Keyframes,
        detect_side: 160,
        timeouts: Timeouts {
            stall: Duration::from_secs(5),
            ..Timeouts::default()
        },
    };
    let cam = spawn_gst(config, shutdown);
    let got = frames(&cam, 2).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|f| (f.width, f.height) == (160, 120)));
    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), cam.task).await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_the_stream_and_decodes_a_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    let sim =
        Simulator::start(sim_config(1, 0, &cache).with_credentials("viewer", "s3cret")).unwrap();
    let good =
        url::Url::parse(&sim.url(1).replacen("rtsp://", "rtsp://viewer:s3cret@", 1)).unwrap();
    let report = probe(&good, Duration::from_secs(5), Duration::from_secs(4))
        .await
        .expect("probe succeeds");
    assert_eq!(report.codec, Codec::H264);
    // 4:2:0 High profile, like real cameras (not 4:4:4 from feeding x264 RGB).
    assert_eq!(
        sharpeyes_ingest::profile_name(&report.codec_string),
        "High",
        "{}",
        report.codec_string
    );
    assert_eq!((report.width, report.height), (320, 240));
    assert_eq!(report.gop_frames, Some(GOP));
    assert!(
        (report.measured_fps - f64::from(FPS)).abs() < 3.0,
        "{}",
        report.measured_fps
    );
    assert!(report.bitrate_bps > 1000.0);
    let snap = report.snapshot.expect("a snapshot");
    assert_eq!(
        (snap.width, snap.height, snap.rgb.len()),
        (320, 240, 320 * 240 * 3)
    );

    let bad = url::Url::parse(
        &sim.url(1)
            .replacen("rtsp://", "rtsp://viewer:Wr0ngPa55@", 1),
    )
    .unwrap();
    let err = probe(&bad, Duration::from_secs(5), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Unauthorized, "{err}");
    assert!(
        sharpeyes_ingest::probe_hint(&err).contains("user name and password")
            && !err.to_string().contains("Wr0ngPa55"),
        "{err}"
    );
    let missing = url::Url::parse(&format!(
        "rtsp://viewer:s3cret@127.0.0.1:{}/nope",
        sim.port()
    ))
    .unwrap();
    assert_eq!(
        probe(&missing, Duration::from_secs(5), Duration::from_secs(2))
            .await
            .unwrap_err()
            .kind(),
        &ErrorKind::NotFound
    );
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_camera_starts_on_the_backend_it_names() {
    let cache = tempfile::tempdir().unwrap();
    let sim =
        Simulator::start(sim_config(1, 0, &cache).with_credentials("viewer", "s3cret")).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("cam-password");
    let url = sim.url(1).replacen(
        "rtsp://",
        &format!("rtsp://viewer:${{file:{}}}@", pw.display()),
        1,
    );
    for backend in ["retina", "gstreamer"] {
        let toml = format!(
            "[[grids]]\nid = \"321322\"\nname = \"county\"\ncentre = \"c\"\n\n[[cameras]]\nid = \"cam\"\nname = \"cam\"\nkind = \"sharp-eyes\"\nurl = \"{url}\"\ngrid = \"321322\"\nbackend = \"{backend}\"\n"
        );
        let config = sharpeyes_config::Config::parse(&toml, std::path::Path::new("t.toml"), &[])
            .unwrap()
            .config;
        let (stop, shutdown) = watch::channel(false);
        // The password is read only when the camera starts: missing, the start fails naming the file.
        let _ = std::fs::remove_file(&pw);
        let err = sharpeyes_ingest::start_camera(
            &config.cameras[0],
            160,
            None,
            Timeouts::default(),
            shutdown.clone(),
        )
        .err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("cam-password")),
            "{backend}: a missing secret is an error"
        );
        std::fs::write(&pw, "s3cret\n").unwrap();
        let cam = sharpeyes_ingest::start_camera(
            &config.cameras[0],
            160,
            None,
            Timeouts::default(),
            shutdown,
        )
        .unwrap();
        let got = frames(&cam, 1).await;
        assert_eq!(got.len(), 1, "{backend}: no frame");
        assert_eq!((got[0].width, got[0].height), (160, 120), "{backend}");
        stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), cam.task).await;
    }
    sim.stop();
}

/// With `stagger_gops`, cameras connected together send their keyframes at their own times,
/// each its [`first_gop_cut`] into the GOP: a harness whose cameras all decode in the same
/// instant every GOP measures a burst no street of real cameras makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_cameras_send_their_keyframes_at_their_own_times() {
    use sharpeyes_ingest::simulator::first_gop_cut;

    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimulatorConfig {
        stagger_gops: true,
        ..sim_config(2, 0, &cache)
    })
    .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let cams: Vec<CameraHandle> = (1..=2)
        .map(|i| spawn(camera(&sim.url(i), Sampling::Keyframes), shutdown.clone()))
        .collect();
    // A keyframe of each, past the first ones, whichever way their GOPs were cut.
    let mut at = Vec::new();
    for cam in &cams {
        let got = frames(cam, 2).await;
        at.push(got.last().expect("keyframes from each camera").received_at);
    }
    let gop_ms = u128::from(GOP * 1000 / FPS);
    let apart = match at[1].duration_since(at[0]) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    let phase = apart.as_millis() % gop_ms;
    let phase = phase.min(gop_ms - phase);
    let cut = |camera| u128::from(first_gop_cut(camera, GOP));
    let expected = cut(1).abs_diff(cut(2)) * 1000 / u128::from(FPS);
    assert!(
        expected >= 200 && phase.abs_diff(expected) < 100,
        "keyframes {phase} ms apart in the GOP, {expected} ms expected"
    );
    stop.send_replace(true);
    for cam in cams {
        let _ = tokio::time::timeout(Duration::from_secs(5), cam.task).await;
    }
}
