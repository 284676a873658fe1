//! Cameras as they are in the field: already watched by someone else (so sharpeyes joins the
//! stream wherever it is, usually inside a fragmented NAL unit), and behind links that lose
//! or reorder packets. None of it may cost more than the damaged access units, and none of it
//! is a reason to reconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{SourceConfig, spawn};
use sharpeyes_ingest::{CameraHandle, ErrorKind, Simulator, SimulatorConfig, Timeouts, probe};
use sharpeyes_testkit::{Impairment, RtspRelay};
use tokio::sync::watch;

const FPS: u32 = 10;
/// A keyframe a second.
const GOP: u32 = 10;

/// One shared camera at 640x360 with sensor noise: its keyframes and most delta frames are
/// larger than a packet, so nearly every RTP packet is a fragment of a NAL unit.
fn simulator(cache: &tempfile::TempDir) -> Simulator {
    simulator_of(cache, 640, 360, GOP)
}

fn simulator_of(cache: &tempfile::TempDir, width: u32, height: u32, gop: u32) -> Simulator {
    Simulator::start(SimulatorConfig {
        cameras: 1,
        width,
        height,
        fps: FPS,
        gop,
        grain: 6,
        port: 0,
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    })
    .unwrap()
}

fn camera(name: &str, url: &str, udp: bool, sampling: Sampling) -> SourceConfig {
    SourceConfig {
        camera: Arc::from(name),
        url: url::Url::parse(url).unwrap(),
        udp,
        sampling,
        skip_quiet: None,
        detect_side: 160,
        hardware_decoding: false,
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            stall: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
        },
    }
}

/// Waits (bounded) for the camera's first frame; returns how long it took.
async fn first_frame(cam: &CameraHandle, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, cam.frames.next()).await.ok()?;
    Some(started.elapsed())
}

fn reconnects(cam: &CameraHandle) -> u64 {
    cam.counters.reconnects.load(Ordering::Relaxed)
}

/// The first client (the unit's NVR) starts the shared stream and keeps watching; sharpeyes
/// joins later at different points of the GOP: over TCP and UDP on the shared stream itself
/// (gst-rtsp-server lets a new client in at a NAL unit's start), and over TCP in the middle
/// of a fragmented NAL unit with nothing to say so, as cameras that share one encoder do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_shared_stream_anywhere_reaches_a_keyframe_within_a_gop_without_reconnecting() {
    let cache = tempfile::tempdir().unwrap();
    let sim = simulator(&cache);
    let (stop, shutdown) = watch::channel(false);
    let nvr = spawn(
        camera("nvr", &sim.url(1), false, Sampling::All),
        shutdown.clone(),
    );
    assert!(
        first_frame(&nvr, Duration::from_secs(10)).await.is_some(),
        "the first client streams"
    );
    let mid_fragment = RtspRelay::start(
        sim.port(),
        Impairment {
            start_mid_fragment: true,
            ..Impairment::default()
        },
    )
    .await;
    let mid_fragment_url = format!("rtsp://127.0.0.1:{}/cam1", mid_fragment.port);
    let gop = Duration::from_secs_f64(f64::from(GOP) / f64::from(FPS));
    let mut corrupt = 0;
    let joins = [
        ("tcp", sim.url(1), false),
        ("udp", sim.url(1), true),
        ("mid-fragment", mid_fragment_url.clone(), false),
        ("mid-fragment", mid_fragment_url.clone(), false),
        ("mid-fragment", mid_fragment_url, false),
    ];
    for (i, (how, url, udp)) in joins.into_iter().enumerate() {
        // Joins spread over the GOP.
        tokio::time::sleep(Duration::from_millis(370)).await;
        let name = format!("joiner-{i}-{how}");
        let cam = spawn(
            camera(&name, &url, udp, Sampling::Keyframes),
            shutdown.clone(),
        );
        // The handshake, then at most one GOP to the first keyframe.
        let took = first_frame(&cam, Duration::from_secs(10)).await;
        let took = took.unwrap_or_else(|| panic!("{name} (udp: {udp}): no frame within 10 s"));
        assert!(took < gop + Duration::from_secs(2), "{name}: {took:?}");
        tokio::time::sleep(gop * 2).await;
        assert_eq!(reconnects(&cam), 0, "{name} (udp: {udp}) reconnected");
        corrupt += cam.counters.corrupt.load(Ordering::Relaxed);
        assert!(
            cam.counters.decode.decoded.load(Ordering::Relaxed) >= 2,
            "{name}: keyframes keep coming"
        );
    }
    assert!(
        corrupt > 0,
        "no join landed inside a fragment: the test did not test what it is for"
    );
    assert_eq!(reconnects(&nvr), 0, "the other client is not disturbed");
    stop.send_replace(true);
    sim.stop();
}

/// Through a relay that drops 0.3 % or 3 % of the RTP packets, or swaps neighbours: the
/// damaged access units are lost and counted, the session goes on. (320x240 with two
/// keyframes a second: a dozen packets a keyframe, twenty keyframes a window.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_and_reordering_cost_the_damaged_frames_only() {
    const LOSS_GOP: u32 = 5;
    let cache = tempfile::tempdir().unwrap();
    let sim = simulator_of(&cache, 320, 240, LOSS_GOP);
    let sim_port = sim.port();
    let (stop, shutdown) = watch::channel(false);
    let cases = [
        (
            "0.3 % loss",
            Impairment {
                drop_one_in: Some(333),
                ..Impairment::default()
            },
        ),
        (
            "3 % loss",
            Impairment {
                drop_one_in: Some(33),
                ..Impairment::default()
            },
        ),
        (
            "reordering",
            Impairment {
                swap_one_in: Some(50),
                ..Impairment::default()
            },
        ),
    ];
    for (what, impairment) in cases {
        let relay = RtspRelay::start(sim_port, impairment).await;
        let url = format!("rtsp://127.0.0.1:{}/cam1", relay.port);
        let cam = spawn(
            camera(what, &url, false, Sampling::Keyframes),
            shutdown.clone(),
        );
        assert!(
            first_frame(&cam, Duration::from_secs(10)).await.is_some(),
            "{what}: no frame"
        );
        let c = &cam.counters;
        let (received0, decoded0) = (
            c.received.load(Ordering::Relaxed),
            c.decode.decoded.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let received = c.received.load(Ordering::Relaxed) - received0;
        let decoded = c.decode.decoded.load(Ordering::Relaxed) - decoded0;
        let corrupt = c.corrupt.load(Ordering::Relaxed);
        assert_eq!(reconnects(&cam), 0, "{what}: reconnected");
        assert!(
            relay.dropped.load(Ordering::Relaxed) + relay.swapped.load(Ordering::Relaxed) > 0,
            "{what}: the relay impaired nothing"
        );
        assert!(corrupt > 0, "{what}: nothing counted as corrupt");
        // Keyframes among the access units that arrived whole, against those decoded.
        let keyframes = received as f64 / f64::from(LOSS_GOP);
        let share = decoded as f64 / keyframes;
        if what == "0.3 % loss" {
            assert!(
                share >= 0.9,
                "{what}: {decoded} of ~{keyframes:.0} keyframes decoded"
            );
        } else {
            assert!(decoded >= 2, "{what}: {decoded} keyframes decoded");
        }
    }
    stop.send_replace(true);
    sim.stop();
}

/// `probe` joins as `run` does: a shared stream mid-fragment, and through a lossy link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_joins_anywhere_and_reports_what_it_lost() {
    let cache = tempfile::tempdir().unwrap();
    let sim = simulator(&cache);
    let (stop, shutdown) = watch::channel(false);
    let nvr = spawn(
        camera("nvr", &sim.url(1), false, Sampling::All),
        shutdown.clone(),
    );
    assert!(first_frame(&nvr, Duration::from_secs(10)).await.is_some());
    let mid_fragment = RtspRelay::start(
        sim.port(),
        Impairment {
            start_mid_fragment: true,
            ..Impairment::default()
        },
    )
    .await;
    let url = url::Url::parse(&format!("rtsp://127.0.0.1:{}/cam1", mid_fragment.port)).unwrap();
    for delay_ms in [130, 470, 810] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let report = probe(&url, Duration::from_secs(5), Duration::from_secs(4))
            .await
            .unwrap_or_else(|e| panic!("probe joining after {delay_ms} ms: {e}"));
        assert_eq!((report.width, report.height), (640, 360));
        assert!(report.snapshot.is_some());
    }
    let relay = RtspRelay::start(
        sim.port(),
        Impairment {
            drop_one_in: Some(33),
            ..Impairment::default()
        },
    )
    .await;
    let url = url::Url::parse(&format!("rtsp://127.0.0.1:{}/cam1", relay.port)).unwrap();
    let report = probe(&url, Duration::from_secs(5), Duration::from_secs(6))
        .await
        .unwrap_or_else(|e| panic!("probe through a lossy link: {e}"));
    assert!(
        report.quirks.iter().any(|q| q.contains("lost")),
        "{:?}",
        report.quirks
    );
    stop.send_replace(true);
    sim.stop();
}

/// A camera that only ever sends broken packets is not streaming: it reconnects once the
/// stall limit passes, rather than counting errors for ever. (Every other packet swapped:
/// an out-of-order error every two packets, and no access unit whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_nothing_but_damage_is_a_stall() {
    let cache = tempfile::tempdir().unwrap();
    let sim = simulator(&cache);
    let relay = RtspRelay::start(
        sim.port(),
        Impairment {
            swap_one_in: Some(2),
            ..Impairment::default()
        },
    )
    .await;
    let (stop, shutdown) = watch::channel(false);
    let url = format!("rtsp://127.0.0.1:{}/cam1", relay.port);
    let mut config = camera("broken", &url, false, Sampling::Keyframes);
    config.timeouts.stall = Duration::from_secs(2);
    let mut cam = spawn(config, shutdown);
    let state = tokio::time::timeout(
        Duration::from_secs(20),
        cam.state
            .wait_for(|s| matches!(s, sharpeyes_ingest::CameraState::Backoff { .. })),
    )
    .await
    .expect("it gives up on the stream")
    .unwrap()
    .clone();
    let sharpeyes_ingest::CameraState::Backoff { error, .. } = state else {
        unreachable!()
    };
    assert_eq!(
        error.kind(),
        &ErrorKind::Stall(Duration::from_secs(2)),
        "{error}"
    );
    stop.send_replace(true);
    sim.stop();
}

/// An RTSP server on loopback whose one shared stream switches from 320x240 to 480x360 after
/// `after`, as a camera does when someone changes its encoder settings while clients watch:
/// the encoder restarts with a new SPS, in-band. Stops with `stop`.
fn resolution_switching_server(
    after: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u16, std::thread::JoinHandle<()>) {
    use gstreamer as gst;
    use gstreamer::glib;
    use gstreamer::prelude::*;
    use gstreamer_rtsp_server as rtsp;
    use gstreamer_rtsp_server::prelude::*;

    gst::init().unwrap();
    let (ready, port) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let context = glib::MainContext::new();
        context
            .with_thread_default(|| {
                let server = rtsp::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service("0");
                let factory = rtsp::RTSPMediaFactory::new();
                factory.set_launch(
                    "( videotestsrc is-live=true pattern=ball ! video/x-raw,framerate=10/1 \
                     ! videoscale ! capsfilter name=size caps=video/x-raw,width=320,height=240 \
                     ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 \
                     ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
                );
                factory.set_shared(true);
                factory.connect_media_configure(move |_, media| {
                    let size = media
                        .element()
                        .downcast::<gst::Bin>()
                        .ok()
                        .and_then(|b| b.by_name("size"))
                        .expect("the capsfilter");
                    std::thread::spawn(move || {
                        std::thread::sleep(after);
                        let bigger = gst::Caps::builder("video/x-raw")
                            .field("width", 480)
                            .field("height", 360)
                            .build();
                        size.set_property("caps", &bigger);
                    });
                });
                server
                    .mount_points()
                    .unwrap()
                    .add_factory("/switch", factory);
                let _source = server.attach(Some(&context)).unwrap();
                ready.send(server.bound_port() as u16).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    context.iteration(false);
                    std::thread::sleep(Duration::from_millis(5));
                }
                server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
                while context.iteration(false) {}
            })
            .unwrap();
    });
    (port.recv_timeout(Duration::from_secs(10)).unwrap(), thread)
}

/// The camera's resolution changes mid-stream (a new SPS): the decoder is rebuilt for the new
/// size, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_switch_mid_stream_rebuilds_the_decoder_without_reconnecting() {
    let stop_server = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (port, server) = resolution_switching_server(Duration::from_secs(3), stop_server.clone());
    let (stop, shutdown) = watch::channel(false);
    let mut config = camera(
        "switching",
        &format!("rtsp://127.0.0.1:{port}/switch"),
        false,
        Sampling::Keyframes,
    );
    config.detect_side = 640;
    let cam = spawn(config, shutdown);
    let mut sizes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !sizes.contains(&(480, 360)) {
        if let Ok(f) = tokio::time::timeout(Duration::from_secs(5), cam.frames.next()).await {
            sizes.push((f.width, f.height));
        }
    }
    stop.send_replace(true);
    stop_server.store(true, Ordering::SeqCst);
    let _ = server.join();
    assert_eq!(sizes.first(), Some(&(320, 240)), "{sizes:?}");
    assert!(
        sizes.contains(&(480, 360)),
        "the new size came through: {sizes:?}"
    );
    assert_eq!(reconnects(&cam), 0, "a new SPS is no reason to reconnect");
}
