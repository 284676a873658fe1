//! Skipping quiet keyframes through the whole service: a real `sharpeyes run` with
//! `[motion] skip_quiet_keyframes`, simulated still cameras (constant quality, no traffic)
//! over real RTSP, one of which catches fire, and a real mosquitto.

use std::time::{Duration, Instant};

use sharpeyes_ingest::simulator::SceneKind;
use sharpeyes_testkit::config::{GRID_TOPIC, fire_camera, service};
use sharpeyes_testkit::http::get_as;
use sharpeyes_testkit::{Mosquitto, Service, Subscriber};

const PREFIX: &str = "se-quiet";
const TOKEN: &str = "quiet-t0ken";
const FORCED: Duration = Duration::from_secs(5);

fn metric(metrics: &str, camera: &str, outcome: &str) -> f64 {
    let series = format!("sharpeyes_frames_total{{camera=\"{camera}\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Needs `make setup` (ONNX Runtime and the fire model).
///
/// Two still cameras (a keyframe a second); cam1 catches fire 20 s in. The still one
/// decodes only some of its keyframes, and the burning one is alerted within the forced
/// interval plus its confirmation (two positive frames of three: analytics asks for every
/// keyframe once the first is positive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_camera_skips_its_keyframes_and_a_fire_is_still_alerted() {
    let cache = tempfile::tempdir().unwrap();
    let sim = sharpeyes_ingest::Simulator::start(sharpeyes_ingest::SimulatorConfig {
        cameras: 2,
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        port: 0,
        grain: 4,
        traffic: false,
        constant_quality: true,
        scenario: vec!["fire@20s:cam1".parse().unwrap()],
        cache_dir: Some(cache.path().to_owned()),
        ..sharpeyes_ingest::SimulatorConfig::default()
    })
    .expect("the simulator starts");
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(
        broker.port,
        "grid-centre",
        &format!("{PREFIX}/alerts/{GRID_TOPIC}/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "quiet-node", broker.port, PREFIX, Some(TOKEN))
        + &format!(
            "\n[motion]\nforced_interval = \"{}s\"\nskip_quiet_keyframes = true\n",
            FORCED.as_secs()
        )
        + &fire_camera("cam1", &sim.url(1))
        + &fire_camera("cam2", &sim.url(2));
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "info");

    let got = centre
        .wait_until(Duration::from_secs(90), |m| {
            m.iter().any(|m| m.topic.ends_with("/fire"))
        })
        .await;
    let alerted = Instant::now();
    let alerts: Vec<serde_json::Value> = got
        .iter()
        .filter(|m| m.topic.ends_with("/fire"))
        .map(|m| m.json())
        .collect();
    assert!(!alerts.is_empty(), "no fire alert");
    assert_eq!(alerts[0]["camera"]["id"], "cam1", "{:?}", alerts[0]);
    let fire = sim
        .scene_log()
        .into_iter()
        .find(|c| c.camera == 1 && c.scene == SceneKind::Fire)
        .expect("cam1 caught fire");
    let took = alerted.saturating_duration_since(fire.instant);
    // The forced look, then two more keyframes to confirm, and the trip to the broker.
    assert!(
        took < FORCED + Duration::from_secs(5),
        "the fire was alerted {took:?} after it started"
    );

    // Two forced looks more for the still camera.
    tokio::time::sleep(2 * FORCED).await;
    let (status, body) = get_as(svc.port(), "/metrics", TOKEN);
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body).into_owned();
    let (quiet, decoded) = (
        metric(&metrics, "cam2", "quiet"),
        metric(&metrics, "cam2", "decoded"),
    );
    // About 35 keyframes by now: learning takes 3, then one decoded per forced interval.
    assert!(
        quiet >= 15.0 && decoded <= quiet,
        "the still camera decoded {decoded} keyframes and skipped {quiet}"
    );
    assert!(
        !got.iter()
            .any(|m| m.topic.ends_with("/fire") && m.json()["camera"]["id"] == "cam2"),
        "the still camera alerted"
    );
    let (exit, log) = svc.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    drop(sim);
}
