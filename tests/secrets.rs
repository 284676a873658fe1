//! No secret leaves the service: a real `sharpeyes run` holding a camera login, a wrong
//! camera password, an MQTT password, a Redis password and API tokens, with its logs at
//! debug level. Everything it emitted (every log line, every API answer, every MQTT
//! message on every topic) is searched for each secret's value.

use std::time::Duration;

use sharpeyes_ingest::simulator::Credentials;
use sharpeyes_ingest::{Simulator, SimulatorConfig};
use sharpeyes_testkit::config::{FIRE, GRID, GRID_TOPIC, GRIDS, role_token};
use sharpeyes_testkit::http::{get, get_as, post};
use sharpeyes_testkit::{Mosquitto, Redis, Service, Subscriber};

const PREFIX: &str = "se-secrets";
const CAMERA_PW: &str = "Cam-Pw-5150";
const WRONG_PW: &str = "Wrong-Pw-8086";
const MQTT_PW: &str = "Mqtt-Pw-6502";
const REDIS_PW: &str = "Redis-Pw-6809";
const ADMIN_TOKEN: &str = "Admin-Tok-68000";
const VIEWER_TOKEN: &str = "Viewer-Tok-Z80";

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn payload(m: &sharpeyes_testkit::Message) -> String {
    text(&m.payload)
}

/// Needs `make setup` (ONNX Runtime and the models).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_api_answers_or_mqtt_messages() {
    let cache = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimulatorConfig {
        cameras: 2,
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        port: 0,
        scenario: vec!["fire@0s:cam1".parse().unwrap()],
        credentials: Some(Credentials {
            user: "admin".into(),
            password: CAMERA_PW.into(),
        }),
        cache_dir: Some(cache.path().to_owned()),
        ..SimulatorConfig::default()
    })
    .unwrap();
    let broker = Mosquitto::start(false, &[("sharpeyes", MQTT_PW), ("centre", "centre-pw")]);
    let redis = Redis::start(Some(REDIS_PW));
    // The centre hears every topic the service publishes on.
    let centre = Subscriber::connect(
        broker.port,
        "centre-all",
        "#",
        Some(("centre", "centre-pw")),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        format!("${{file:{}}}", path.display())
    };
    let text_config = format!(
        r#"[node]
id = "secrets-node"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
username = "sharpeyes"
password = "{mqtt_pw}"
prefix = "{PREFIX}"

[redis]
url = "redis://:{redis_pw}@127.0.0.1:{redis}/0"
key_prefix = "secrets"

[http]
listen = "127.0.0.1:0"
token = "{admin}"
{viewer}
[credentials.cam]
user = "admin"
password = "{camera_pw}"
networks = ["127.0.0.0/8"]

{GRIDS}
{FIRE}
[[cameras]]
id = "cam-login"
name = "东元超市门口"
kind = "social-unit"
unit = "东元超市"
url = "{url1}"
credentials = "cam"
grid = "{GRID}"
hazards = ["fire"]

[[cameras]]
id = "cam-wrong"
name = "东元超市后门"
kind = "social-unit"
unit = "东元超市"
url = "rtsp://admin:{WRONG_PW}@127.0.0.1:{sim_port}/cam2"
grid = "{GRID}"
hazards = ["fire"]
"#,
        data = dir.path().join("data").display(),
        broker = broker.port,
        mqtt_pw = secret("mqtt-pw", MQTT_PW),
        redis_pw = secret("redis-pw", REDIS_PW),
        redis = redis.port,
        admin = secret("admin-token", ADMIN_TOKEN),
        viewer = role_token(VIEWER_TOKEN, "viewer"),
        camera_pw = secret("camera-pw", CAMERA_PW),
        url1 = sim.url(1),
        sim_port = sim.port(),
    );
    let svc = Service::run(
        env!("CARGO_BIN_EXE_sharpeyes"),
        dir.path(),
        &text_config,
        "debug",
    );
    let http = svc.port();

    // Until the fire is alerted and the camera with the wrong password has said why.
    let alert_topic = format!("{PREFIX}/alerts/{GRID_TOPIC}/fire");
    let wrong_status = format!("{PREFIX}/cameras/cam-wrong/status");
    let got = centre
        .wait_until(Duration::from_secs(60), |m| {
            m.iter().any(|m| m.topic == alert_topic)
                && m.iter()
                    .any(|m| m.topic == wrong_status && payload(m).contains("401"))
        })
        .await;
    let alert_id = got
        .iter()
        .find(|m| m.topic == alert_topic)
        .map_or(String::new(), |m| {
            m.json()["id"].as_str().unwrap().to_owned()
        });

    // Every answer the API gives, to each kind of caller, and its errors.
    let mut answers = Vec::new();
    for path in ["/healthz", "/readyz", "/metrics", "/", "/api/cameras"] {
        answers.push((path.to_owned(), text(&get(http, path).1)));
    }
    for path in [
        "/metrics".to_owned(),
        "/api/cameras".to_owned(),
        "/api/alerts".to_owned(),
        "/api/alerts?hazard=fire".to_owned(),
    ] {
        answers.push((path.clone(), text(&get_as(http, &path, VIEWER_TOKEN).1)));
        answers.push((path.clone(), text(&get_as(http, &path, ADMIN_TOKEN).1)));
    }
    for (path, body) in [
        (
            format!("/api/alerts/{alert_id}/ack"),
            r#"{"by": "张三"}"#.to_owned(),
        ),
        ("/api/reload".to_owned(), String::new()),
        (
            "/api/cameras".to_owned(),
            "id = \"cam-bad\"\nurl = \"rtsp://127.0.0.1:9/x\"\ncredentials = \"cam\"\n".to_owned(),
        ),
        ("/api/cameras".to_owned(), "not toml [".to_owned()),
    ] {
        answers.push((
            path.clone(),
            text(&post(http, &path, Some(ADMIN_TOKEN), &body).1),
        ));
    }
    let (_, log) = svc.stop(Duration::from_secs(30));
    let messages = centre.snapshot();
    sim.stop();

    // The run did what the search needs: a fire alert, the wrong password refused, a log.
    assert!(
        !alert_id.is_empty(),
        "no fire alert within 60 s; log:\n{log}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.topic == wrong_status && payload(m).contains("401")),
        "the wrong password was not refused; log:\n{log}"
    );
    assert!(log.contains("DEBUG"), "the log is at debug level");

    let mut emitted: Vec<(String, String)> = vec![("log".into(), log)];
    emitted.extend(answers);
    emitted.extend(
        messages
            .iter()
            .map(|m| (format!("MQTT {}", m.topic), payload(m))),
    );
    for secret in [
        CAMERA_PW,
        WRONG_PW,
        MQTT_PW,
        REDIS_PW,
        ADMIN_TOKEN,
        VIEWER_TOKEN,
    ] {
        for (what, content) in &emitted {
            assert!(
                !content.contains(secret),
                "{what} holds the secret {secret}:\n{}",
                excerpt(content, secret)
            );
        }
    }
}

/// The lines of `content` that hold `needle`, for the failure message.
fn excerpt(content: &str, needle: &str) -> String {
    content
        .lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}
