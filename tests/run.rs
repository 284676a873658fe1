//! `sharpeyes run` end to end: a simulated RTSP camera showing a fire, the real detector, a
//! real mosquitto. The fire arrives as an alert on its grid topic, the camera's state is
//! retained, and SIGTERM stops the service cleanly (node status offline, exit 0).

use std::time::Duration;

use sharpeyes_testkit::config::{CAMERA, GRID_TOPIC, fire_camera, role_token, service, with};
use sharpeyes_testkit::http::{delete, get, get_as, post};
use sharpeyes_testkit::{
    Message, Mosquitto, Redis, Service, Subscriber, fire_cameras, schema_errors,
};

const TOKEN: &str = "run-test-token";
const PREFIX: &str = "se-run";

/// Needs `make setup` (ONNX Runtime and the models).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_on_a_live_camera_arrives_as_an_alert_and_sigterm_stops_cleanly() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 1, "0s");
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(broker.port, "centre-run", &format!("{PREFIX}/#"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "run-node", broker.port, PREFIX, Some(TOKEN))
        + &fire_camera(CAMERA, &sim.url(1));
    // The API on a port of its own choosing, reported in the ready file.
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "info");
    let http = svc.port();

    let alert_topic = format!("{PREFIX}/alerts/{GRID_TOPIC}/fire");
    let got = centre
        .wait_until(Duration::from_secs(60), |m| {
            m.iter().any(|m| m.topic == alert_topic)
        })
        .await;
    let alert = got
        .iter()
        .find(|m| m.topic == alert_topic)
        .map(|m| m.json());
    let status_topic = format!("{PREFIX}/cameras/{CAMERA}/status");
    let streaming = got
        .iter()
        .any(|m| m.topic == status_topic && m.json()["state"] == "streaming");
    // While it runs: ready, metrics of what it did, the snapshot the alert points at.
    let readyz = get(http, "/readyz");
    let metrics = String::from_utf8_lossy(&get(http, "/metrics").1).into_owned();
    let id = alert
        .as_ref()
        .map_or(String::new(), |a| a["id"].as_str().unwrap().to_owned());
    let ack_path = format!("/api/alerts/{id}/ack");
    let ack_without_token = post(http, &ack_path, None, "").0;
    let ack = post(http, &ack_path, Some(TOKEN), r#"{"by": "网格员张三"}"#);
    // Then the operator's verdict, with a note; a verdict that is none of the three is
    // refused and changes nothing.
    let bad_verdict = post(http, &ack_path, Some(TOKEN), r#"{"verdict": "sunset"}"#);
    let judged = post(
        http,
        &ack_path,
        Some(TOKEN),
        r#"{"verdict": "false-alarm", "note": "夕阳照在玻璃上"}"#,
    );
    let verdict_metrics = String::from_utf8_lossy(&get_as(http, "/metrics", TOKEN).1).into_owned();
    let unauthenticated = get(http, "/api/alerts").0;
    let listed = get_as(http, "/api/alerts?hazard=fire&grid=321322-001-003", TOKEN);
    let cameras = get_as(http, "/api/cameras", TOKEN);
    let snapshot = alert.as_ref().map(|a| {
        get_as(
            http,
            &format!("/api/alerts/{}/snapshot", a["id"].as_str().unwrap()),
            TOKEN,
        )
    });

    // Stop it the way systemd does.
    let (exit, log) = svc.stop(Duration::from_secs(30));
    sim.stop();

    let alert = alert.unwrap_or_else(|| panic!("no fire alert within 60 s; log:\n{log}"));
    let errors = schema_errors(&alert);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(alert["source"], "video");
    assert_eq!(alert["node"], "run-node", "the node that detected it");
    assert_eq!(alert["camera"]["id"], CAMERA);
    assert_eq!(alert["boxes"][0]["class"], "fire");
    assert!(
        alert["snapshot"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{alert}"
    );
    assert!(
        streaming,
        "camera status `streaming` was published; log:\n{log}"
    );
    assert_eq!(readyz, (200, b"ready\n".to_vec()));
    assert_eq!(
        unauthenticated, 401,
        "with a token configured, reads need one too"
    );
    assert_eq!(ack_without_token, 401, "acknowledging needs the token");
    assert_eq!(ack.0, 200, "{}", String::from_utf8_lossy(&ack.1));
    let listed: serde_json::Value = serde_json::from_slice(&listed.1).unwrap();
    assert_eq!(listed[0]["alert"]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["ack"]["by"], "网格员张三", "{listed}");
    assert_eq!(bad_verdict.0, 400);
    let why = String::from_utf8_lossy(&bad_verdict.1);
    assert!(
        why.contains("`confirmed`, `false-alarm`, `handled`"),
        "{why}"
    );
    assert_eq!(judged.0, 200, "{}", String::from_utf8_lossy(&judged.1));
    let judged: serde_json::Value = serde_json::from_slice(&judged.1).unwrap();
    assert_eq!(judged["verdict"], "false-alarm", "{judged}");
    assert_eq!(judged["note"], "夕阳照在玻璃上", "{judged}");
    assert_eq!(
        judged["by"], "网格员张三",
        "who acknowledged first stays: {judged}"
    );
    assert_eq!(listed[0]["ack"]["verdict"], "false-alarm", "{listed}");
    let counted = format!(
        "sharpeyes_alert_verdicts_total{{camera=\"{CAMERA}\",hazard=\"fire\",verdict=\"false-alarm\"}} 1\n"
    );
    assert!(verdict_metrics.contains(&counted), "{verdict_metrics}");
    let cameras: serde_json::Value = serde_json::from_slice(&cameras.1).unwrap();
    assert_eq!(cameras[0]["id"], CAMERA);
    assert_eq!(cameras[0]["state"], "streaming", "{cameras}");
    let snapshot = snapshot.unwrap();
    assert_eq!(snapshot.0, 200);
    assert_eq!(&snapshot.1[..2], b"\xff\xd8", "a JPEG");
    for series in [
        format!("sharpeyes_frames_total{{camera=\"{CAMERA}\",outcome=\"analysed\"}}"),
        format!("sharpeyes_frames_total{{camera=\"{CAMERA}\",outcome=\"decoded\"}}"),
        "sharpeyes_alerts_total{hazard=\"fire\",severity=\"critical\",source=\"video\"}".to_owned(),
        "sharpeyes_stage_seconds_count{stage=\"inference\"}".to_owned(),
        format!("sharpeyes_camera_state{{camera=\"{CAMERA}\",state=\"streaming\"}}"),
        "sharpeyes_mqtt_connected".to_owned(),
    ] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "{series} is {value:?}, expected >= 1:\n{metrics}"
        );
    }
    let exit = exit.unwrap_or_else(|| panic!("still running 30 s after SIGTERM; log:\n{log}"));
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(log.contains("stopping"), "{log}");
    let offline = centre
        .wait_until(Duration::from_secs(5), |m| {
            m.iter().any(|m| {
                m.topic == format!("{PREFIX}/status/run-node") && m.json()["state"] == "offline"
            })
        })
        .await;
    assert!(
        offline
            .iter()
            .any(|m| m.topic == format!("{PREFIX}/status/run-node")
                && m.json()["state"] == "offline"),
        "node status offline on shutdown"
    );
    // In order: the camera said `stopped` before the node said `offline`.
    let order: Vec<String> = offline
        .iter()
        .filter(|m| {
            m.topic == format!("{PREFIX}/status/run-node")
                || m.topic == format!("{PREFIX}/cameras/{CAMERA}/status")
        })
        .map(|m| m.json()["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        order.iter().rev().take(2).collect::<Vec<_>>(),
        ["offline", "stopped"],
        "statuses in the order sent: {order:?}"
    );
}

/// Several nodes share one file: the command line gives each its id (a pod name) and API
/// address over the file's, a reload keeps them, and a bad id is refused naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sets_the_node_id_and_api_address_over_the_file() {
    let broker = Mosquitto::start(false, &[]);
    let centre = Subscriber::connect(
        broker.port,
        "centre-ids",
        &format!("{PREFIX}/status/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The file's address is not on this machine: the service starts only on the override.
    let text = service(dir.path(), "file-node", broker.port, PREFIX, Some(TOKEN))
        .replace("listen = \"127.0.0.1:0\"", "listen = \"10.255.255.1:8080\"");
    let path = dir.path().join("shared.toml");
    std::fs::write(&path, text).unwrap();
    let svc = Service::start_with(
        env!("CARGO_BIN_EXE_sharpeyes"),
        &path,
        dir.path(),
        "warn",
        &["--node-id", "pod-7", "--http-listen", "127.0.0.1:0"],
    );
    let topic = format!("{PREFIX}/status/pod-7");
    let got = centre
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic == topic)
        })
        .await;
    let reload = post(svc.port(), "/api/reload", Some(TOKEN), "");
    let (exit, log) = svc.stop(Duration::from_secs(20));
    assert!(
        got.iter()
            .any(|m| m.topic == topic && m.json()["state"] == "online"),
        "no status under the node id of the command line; log:\n{log}"
    );
    assert!(
        !got.iter().any(|m| m.topic.ends_with("/file-node")),
        "the file's node id was used"
    );
    assert_eq!(reload.0, 200, "{}", String::from_utf8_lossy(&reload.1));
    let reload: serde_json::Value = serde_json::from_slice(&reload.1).unwrap();
    assert_eq!(reload["ignored"], serde_json::Value::Null, "{reload}");
    assert!(exit.is_some_and(|e| e.success()), "{log}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sharpeyes"))
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "a/b",
        ])
        .env_remove("SHARPEYES_NODE_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--node-id (or SHARPEYES_NODE_ID) `a/b`"),
        "{stderr}"
    );

    // Nor may the command line open a file without tokens beyond loopback.
    let open = dir.path().join("open.toml");
    std::fs::write(
        &open,
        service(dir.path(), "open-node", broker.port, PREFIX, None),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sharpeyes"))
        .args(["run", "--config", open.to_str().unwrap()])
        .args(["--http-listen", "0.0.0.0:0"])
        .env_remove("SHARPEYES_NODE_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--http-listen 0.0.0.0:0: the API would listen beyond loopback with no token"
        ),
        "{stderr}"
    );
}

/// An operator mutes a false alarm's region from the API. That camera's fire is no longer
/// alerted there, the same fire on another camera still is, and removing the mute brings
/// the alerts back. The mute lives in a real Redis, read by the node's poller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_false_alarm_stops_that_cameras_alerts_there_until_it_is_removed() {
    const OTHER: &str = "32132200531320000002";
    const PREFIX: &str = "se-mute";
    let (operator, viewer) = ("mute-operator-token", "mute-viewer-token");
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 2, "0s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let centre = Subscriber::connect(
        broker.port,
        "centre-mute",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // A fire every few seconds per camera: every keyframe analysed, a short cooldown.
    let text = service(dir.path(), "mute-node", broker.port, PREFIX, None)
        + &role_token(operator, "operator")
        + &role_token(viewer, "viewer")
        + &format!(
            "\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"{PREFIX}\"\n\n[motion]\nenabled = false\n",
            redis.port
        )
        + &fire_camera(CAMERA, &sim.url(1))
        + &fire_camera(OTHER, &sim.url(2));
    let text = with(&text, "cooldown", "\"3s\"");
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "info");
    let http = svc.port();
    let camera_alerts = |got: &[Message], camera: &str| -> Vec<String> {
        (got.iter().map(Message::json))
            .filter(|a| a["camera"]["id"] == camera)
            .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    let got = centre
        .wait_until(Duration::from_secs(60), |m| {
            !camera_alerts(m, CAMERA).is_empty()
        })
        .await;
    let first = camera_alerts(&got, CAMERA)
        .first()
        .cloned()
        .unwrap_or_default();
    let mute_path = format!("/api/alerts/{first}/mute");
    let as_viewer = post(http, &mute_path, Some(viewer), "").0;
    let unjudged = post(http, &mute_path, Some(operator), "");
    let ack_path = format!("/api/alerts/{first}/ack");
    let judged = post(
        http,
        &ack_path,
        Some(operator),
        r#"{"verdict": "false-alarm"}"#,
    )
    .0;
    let muted = post(http, &mute_path, Some(operator), r#"{"by": "值班员李四"}"#);
    // Again: the mute it has. A caller who sends a region of their own, a name that is not
    // text, or an id that is not an alert's is refused.
    let again = post(http, &mute_path, Some(operator), "");
    let own_region = post(
        http,
        &mute_path,
        Some(operator),
        r#"{"region": [[0, 0], [1, 0], [1, 1], [0, 1]]}"#,
    )
    .0;
    let not_text = post(http, &mute_path, Some(operator), r#"{"by": 5}"#).0;
    let not_an_id = post(http, "/api/alerts/..%2F..%2Fmutes/mute", Some(operator), "").0;
    let listed = get_as(http, "/api/mutes", viewer);
    // The false alarm, exported as learning material from the same Redis; beside it, a
    // record someone else wrote there whose alert id would name a file outside the export.
    let mut redis_conn = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let kept: String = redis::cmd("GET")
        .arg(format!("{PREFIX}:judged:{first}"))
        .query(&mut redis_conn)
        .unwrap_or_default();
    let mut forged: serde_json::Value = serde_json::from_str(&kept).unwrap_or_default();
    forged["alert"]["id"] = "../../escaped".into();
    let forged_key = "01JD0000000000000000000000";
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{PREFIX}:judged:{forged_key}"))
        .arg(forged.to_string())
        .cmd("SET")
        .arg(format!("{PREFIX}:judged-frame:{forged_key}"))
        .arg("not a jpeg")
        .cmd("ZADD")
        .arg(format!("{PREFIX}:judged"))
        .arg(now_ms)
        .arg(forged_key)
        .query(&mut redis_conn)
        .unwrap();
    let dataset = dir.path().join("dataset");
    let exported = std::process::Command::new(env!("CARGO_BIN_EXE_sharpeyes"))
        .args([
            "export",
            "--config",
            "service.toml",
            "--verdict",
            "false-alarm",
        ])
        .arg(&dataset)
        .current_dir(dir.path())
        .output()
        .unwrap();
    // The poller reads Redis every 2 s; a frame in flight may still confirm.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = centre.snapshot().len();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let window = centre.snapshot()[before..].to_vec();

    let mute: serde_json::Value = serde_json::from_slice(&muted.1).unwrap_or_default();
    let mute_id = mute["id"].as_str().unwrap_or_default().to_owned();
    let unmute_path = format!("/api/mutes/{mute_id}");
    let unmute_as_viewer = delete(http, &unmute_path, Some(viewer)).0;
    let unmuted = delete(http, &unmute_path, Some(operator)).0;
    let after = centre.snapshot().len();
    let back = centre
        .wait_until(Duration::from_secs(20), |m| {
            !camera_alerts(&m[after.min(m.len())..], CAMERA).is_empty()
        })
        .await;
    let back = camera_alerts(&back[after.min(back.len())..], CAMERA);
    let (_, log) = svc.stop(Duration::from_secs(30));
    sim.stop();

    assert!(!first.is_empty(), "no fire alert within 60 s; log:\n{log}");
    assert_eq!(as_viewer, 403, "muting needs the operator role");
    assert_eq!(unjudged.0, 409, "{}", String::from_utf8_lossy(&unjudged.1));
    assert_eq!(judged, 200);
    assert_eq!(muted.0, 201, "{}", String::from_utf8_lossy(&muted.1));
    assert_eq!(mute["camera"], CAMERA, "{mute}");
    assert_eq!(mute["hazard"], "fire", "{mute}");
    assert_eq!(mute["alert_id"], first.as_str(), "{mute}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.1).unwrap_or_default();
    assert_eq!(listed[0]["id"], mute_id.as_str(), "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(again.0, 200, "{}", String::from_utf8_lossy(&again.1));
    let again: serde_json::Value = serde_json::from_slice(&again.1).unwrap_or_default();
    assert_eq!(again["id"], mute_id.as_str(), "the same mute: {again}");
    assert_eq!((own_region, not_text, not_an_id), (400, 400, 400));
    let (here, other) = (
        camera_alerts(&window, CAMERA),
        camera_alerts(&window, OTHER),
    );
    assert!(here.is_empty(), "muted, yet alerted: {here:?}; log:\n{log}");
    assert!(
        other.len() >= 2,
        "the other camera's fire goes on alerting: {other:?}; log:\n{log}"
    );
    assert_eq!(unmute_as_viewer, 403, "unmuting needs the operator role");
    assert_eq!(unmuted, 204);
    assert!(
        !back.is_empty(),
        "unmuted, the fire is alerted again; log:\n{log}"
    );
    assert!(log.contains("region muted"), "{log}");

    // The export: the false alarm's clean frame, its boxes as YOLO labels, the names.
    let said = String::from_utf8_lossy(&exported.stdout);
    assert!(
        said.contains("1 more matched"),
        "the forged record is skipped: {said}"
    );
    assert!(!dir.path().join("escaped.jpg").exists() && !dataset.join("escaped.jpg").exists());
    assert!(
        exported.status.success() && said.starts_with("exported 1 judged alerts"),
        "{said}{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let alert = (got.iter().map(Message::json))
        .find(|a| a["id"] == first.as_str())
        .unwrap();
    let (w, h) = (
        alert["frame"]["width"].as_f64().unwrap(),
        alert["frame"]["height"].as_f64().unwrap(),
    );
    let image = image::open(dataset.join(format!("images/{first}.jpg"))).unwrap();
    assert_eq!(
        (f64::from(image.width()), f64::from(image.height())),
        (w, h)
    );
    let label = std::fs::read_to_string(dataset.join(format!("labels/{first}.txt"))).unwrap();
    let boxes = alert["boxes"].as_array().unwrap();
    assert_eq!(label.lines().count(), boxes.len(), "{label}");
    for (line, b) in label.lines().zip(boxes) {
        let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let [x1, y1, x2, y2] = [0, 1, 2, 3].map(|i| b["box"][i].as_f64().unwrap());
        assert_eq!(v[0], 1.0, "fire is class 1 of the fire model: {line}");
        let want = [
            (x1 + x2) / 2.0 / w,
            (y1 + y2) / 2.0 / h,
            (x2 - x1) / w,
            (y2 - y1) / h,
        ];
        for (got, want) in v[1..].iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{line} against {b}");
        }
    }
    let yaml = std::fs::read_to_string(dataset.join("data.yaml")).unwrap();
    assert!(yaml.contains("  0: \"smoke\"\n  1: \"fire\"\n"), "{yaml}");
    let manifest = std::fs::read_to_string(dataset.join("manifest.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(manifest.trim()).unwrap();
    assert_eq!(line["verdict"], "false-alarm", "{line}");
    assert_eq!(line["camera"], CAMERA, "{line}");
}
