//! The RTSP simulator against a real GStreamer RTSP client, over loopback sockets.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use sharpeyes_ingest::simulator::{SceneKind, SimError, Simulator, SimulatorConfig};

/// Small and fast: 1 s GOP so scene switches land within a second.
const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const FPS: u32 = 10;
const GOP: u32 = 10;

/// Bound on any wait for a client's first frames (connection, DESCRIBE, first keyframe).
const CONNECT_LIMIT: Duration = Duration::from_secs(15);

fn config(cameras: usize, cache: &tempfile::TempDir) -> SimulatorConfig {
    SimulatorConfig {
        cameras,
        width: WIDTH,
        height: HEIGHT,
        fps: FPS,
        gop: GOP,
        port: 0,
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    }
}

/// What a client saw: decoded RGB frames (sizes and their count of flame-coloured pixels).
#[derive(Debug, Default)]
struct Watched {
    frames: usize,
    size: Option<(i32, i32)>,
    /// Per frame: pixels that are red-orange-yellow like the flame fixture, with the time
    /// since the watch started.
    hot_pixels: Vec<(Duration, usize)>,
}

/// Plays `url` with rtspsrc over TCP until `frames` frames are decoded or `limit` passes.
/// Err carries the client's error (with GStreamer's debug text, which has the RTSP status).
fn watch(
    url: &str,
    login: Option<(&str, &str)>,
    frames: usize,
    limit: Duration,
) -> Result<Watched, String> {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc name=src location={url} protocols=tcp latency=0 \
         ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert \
         ! video/x-raw,format=RGB ! appsink name=sink sync=false max-buffers=4"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    if let Some((user, password)) = login {
        let src = pipeline.by_name("src").unwrap();
        src.set_property("user-id", user);
        src.set_property("user-pw", password);
    }
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();

    let start = Instant::now();
    let mut seen = Watched::default();
    let result = loop {
        if seen.frames >= frames {
            break Ok(());
        }
        if start.elapsed() > limit {
            break Err(format!(
                "only {} of {frames} frames from {url} within {limit:?}",
                seen.frames
            ));
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            break Err(match msg.view() {
                gst::MessageView::Error(e) => {
                    format!("{} ({})", e.error(), e.debug().unwrap_or_default())
                }
                _ => format!("end of stream from {url} after {} frames", seen.frames),
            });
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
        seen.size = Some((caps.get("width").unwrap(), caps.get("height").unwrap()));
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let hot = map
            .chunks_exact(3)
            .filter(|p| p[0] > 200 && p[1] > 80 && p[2] < 100)
            .count();
        seen.hot_pixels.push((start.elapsed(), hot));
        seen.frames += 1;
    };
    pipeline.set_state(gst::State::Null).unwrap();
    result.map(|()| seen)
}

#[test]
fn every_camera_streams_decodable_frames_and_is_in_the_config_block() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(config(3, &cache)).unwrap();
    assert_ne!(sim.port(), 0);
    for camera in 1..=3 {
        let seen = watch(&sim.url(camera), None, 5, CONNECT_LIMIT).unwrap();
        assert_eq!(
            seen.size,
            Some((WIDTH as i32, HEIGHT as i32)),
            "cam{camera}"
        );
    }

    let block = sim.config_block();
    assert_eq!(block.matches("[[cameras]]").count(), 3, "{block}");
    for camera in 1..=3 {
        assert!(
            block.contains(&format!("url = \"{}\"", sim.url(camera))),
            "{block}"
        );
        assert!(
            block.contains(&format!("id = \"32132200001320{camera:06}\"")),
            "{block}"
        );
    }
    assert!(
        block.contains("kind = \"sharp-eyes\"") && block.contains("grid = \"321322\""),
        "{block}"
    );

    // Each watched camera logged the street when its stream started, and nothing else.
    let log = sim.scene_log();
    let cams: Vec<_> = log.iter().map(|c| (c.camera, c.scene)).collect();
    assert_eq!(
        cams,
        vec![
            (1, SceneKind::Street),
            (2, SceneKind::Street),
            (3, SceneKind::Street)
        ]
    );
}

#[test]
fn a_scheduled_fire_is_sent_and_logged_at_its_time_then_ends() {
    let cache = tempfile::tempdir().unwrap();
    let mut cfg = config(2, &cache);
    cfg.scenario = vec!["fire@2s+2s:cam2".parse().unwrap()];
    let started = Instant::now();
    let sim = Simulator::start(cfg).unwrap();
    let ready = started.elapsed();

    // 6 s of video at 10 fps: through the fire (2 s to 4 s) and back to the street.
    let seen = watch(&sim.url(2), None, 60, CONNECT_LIMIT).unwrap();

    let log: Vec<_> = sim
        .scene_log()
        .into_iter()
        .filter(|c| c.camera == 2)
        .collect();
    let scenes: Vec<_> = log.iter().map(|c| c.scene).collect();
    assert_eq!(
        scenes,
        vec![SceneKind::Street, SceneKind::Fire, SceneKind::Street],
        "{log:?}"
    );
    // Switches wait for a keyframe: at most one GOP (1 s) late, plus scheduling slack.
    let since_start = |i: usize| log[i].instant.duration_since(started);
    let late = Duration::from_secs(1) + Duration::from_millis(300) + ready;
    assert!(
        since_start(1) >= Duration::from_secs(2) && since_start(1) <= Duration::from_secs(2) + late,
        "{log:?}"
    );
    assert!(
        since_start(2) >= Duration::from_secs(4) && since_start(2) <= Duration::from_secs(4) + late,
        "{log:?}"
    );

    // And the client really decoded the flame, only around the scheduled time.
    let hot: Vec<_> = seen.hot_pixels.iter().filter(|(_, n)| *n > 500).collect();
    assert!(
        hot.len() >= 10,
        "{} frames with the flame: {:?}",
        hot.len(),
        seen.hot_pixels
    );
    assert!(
        seen.hot_pixels.first().unwrap().1 < 50,
        "the stream starts with the street"
    );
    assert!(seen.hot_pixels.last().unwrap().1 < 50, "the fire ends");
}

#[test]
fn two_clients_of_one_camera_both_get_frames_and_a_later_client_restarts_it() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(config(1, &cache)).unwrap();
    let url = sim.url(1);
    let together: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || watch(&url, None, 10, CONNECT_LIMIT))
        })
        .collect();
    for client in together {
        client.join().unwrap().unwrap();
    }
    // After both left, the stream stopped; a new client starts it again.
    watch(&url, None, 3, CONNECT_LIMIT).unwrap();
    // One scene entry: a restarted stream with the same scene is not a change.
    assert_eq!(sim.scene_log().len(), 1, "{:?}", sim.scene_log());
}

#[test]
fn an_unknown_camera_path_is_not_found() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(config(1, &cache)).unwrap();
    let err = watch(&sim.url(2), None, 1, CONNECT_LIMIT).unwrap_err();
    assert!(err.contains("Not Found") || err.contains("404"), "{err}");
}

#[test]
fn credentials_are_enforced_when_configured() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(config(1, &cache).with_credentials("admin", "s3cret")).unwrap();
    let url = sim.url(1);
    let limit = Duration::from_secs(10);

    let err = watch(&url, None, 1, limit).unwrap_err();
    assert!(
        err.contains("Unauthorized") || err.contains("401"),
        "no credentials: {err}"
    );
    let err = watch(&url, Some(("admin", "wrong")), 1, limit).unwrap_err();
    assert!(
        err.contains("Unauthorized") || err.contains("401"),
        "wrong password: {err}"
    );
    watch(&url, Some(("admin", "s3cret")), 3, CONNECT_LIMIT).unwrap();

    assert!(sim.config_block().contains(&format!(
        "url = \"rtsp://admin:s3cret@127.0.0.1:{}/cam1\"",
        sim.port()
    )));
}

#[test]
fn stopping_frees_the_port_and_a_taken_port_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(config(1, &cache)).unwrap();
    let port = sim.port();
    watch(&sim.url(1), None, 2, CONNECT_LIMIT).unwrap();

    // While it runs, a second simulator on the same port is refused, naming the address.
    let err = Simulator::start(SimulatorConfig {
        port,
        ..config(1, &cache)
    })
    .unwrap_err();
    assert!(matches!(err, SimError::Server { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    sim.stop();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the port is free after stop");
    drop(listener);

    // And a new simulator can take it over.
    let again = Simulator::start(SimulatorConfig {
        port,
        ..config(1, &cache)
    })
    .unwrap();
    assert_eq!(again.port(), port);
    watch(&again.url(1), None, 2, CONNECT_LIMIT).unwrap();
}

/// One RTSP exchange over `stream`: sends `request` and reads the response head, skipping
/// interleaved RTP frames; returns the head and body.
fn exchange(stream: &mut std::net::TcpStream, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    // Interleaved data ('$', channel, 16-bit length) may arrive before the response.
    loop {
        stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'$' && bytes.is_empty() {
            let mut header = [0u8; 3];
            stream.read_exact(&mut header).unwrap();
            let mut skip = vec![0u8; usize::from(u16::from_be_bytes([header[1], header[2]]))];
            stream.read_exact(&mut skip).unwrap();
            continue;
        }
        bytes.push(byte[0]);
        if bytes.ends_with(b"\r\n\r\n") {
            break;
        }
        assert!(bytes.len() < 16_384, "an RTSP response head over 16 KiB");
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length:"))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// Connects, plays `path` over interleaved TCP and reads some of the stream; returns the
/// socket with data still unread, so that dropping it resets the connection.
fn play_raw(port: u16, path: &str) -> std::net::TcpStream {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(CONNECT_LIMIT)).unwrap();
    let url = format!("rtsp://127.0.0.1:{port}{path}");
    let (head, sdp) = exchange(
        &mut s,
        &format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"),
    );
    assert!(head.starts_with("RTSP/1.0 200"), "{head}");
    let control = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=control:"))
        .filter(|c| *c != "*")
        .unwrap_or("stream=0")
        .trim()
        .to_owned();
    let (head, _) = exchange(
        &mut s,
        &format!(
            "SETUP {url}/{control} RTSP/1.0\r\nCSeq: 2\r\n\
             Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        ),
    );
    assert!(head.starts_with("RTSP/1.0 200"), "{head}");
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("Session:"))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .trim()
        .to_owned();
    let (head, _) = exchange(
        &mut s,
        &format!("PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"),
    );
    assert!(head.starts_with("RTSP/1.0 200"), "{head}");
    let mut some = [0u8; 64];
    s.read_exact(&mut some).unwrap();
    s
}

/// Clients of a shared camera come and go abruptly (a killed node resets its connections)
/// while another keeps watching, and the simulator is stopped with clients attached: the
/// server must neither crash (gst-rtsp-server 1.22 aborted in `get_data_seq` when a client
/// was freed under a stream thread still sending to it) nor stop the other client's stream.
#[test]
fn clients_that_vanish_mid_stream_neither_crash_the_server_nor_stop_the_others() {
    let cache = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let sim = Simulator::start(config(1, &cache)).unwrap();
        let (port, url) = (sim.port(), sim.url(1));
        let watcher = std::thread::spawn(move || watch(&url, None, 40, CONNECT_LIMIT));
        for _ in 0..25 {
            let a = play_raw(port, "/cam1");
            let b = play_raw(port, "/cam1");
            drop(a);
            std::thread::sleep(Duration::from_millis(5));
            drop(b);
        }
        let watched = watcher.join().unwrap();
        assert!(watched.is_ok(), "round {round}: {watched:?}");
        // Stopped while clients are still playing.
        let _attached: Vec<_> = (0..3).map(|_| play_raw(port, "/cam1")).collect();
        sim.stop();
    }
}
