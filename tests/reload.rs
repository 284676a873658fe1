//! Cameras change while `sharpeyes run` runs: added and removed over the API (a removed one
//! leaves /metrics too), and from the configuration file on SIGHUP, without disturbing the
//! cameras that stay.

use std::time::Duration;

use serde_json::Value;
use sharpeyes_testkit::config::{CAMERA, fire_camera, service};
use sharpeyes_testkit::http::{delete, get_as, post};
use sharpeyes_testkit::{Message, Mosquitto, Service, Subscriber, fire_cameras};

const PREFIX: &str = "se-run";

const TOKEN: &str = "reload-test-token";
const SECOND: &str = "32132200531320000002";
const THIRD: &str = "32132200531320000003";

fn second_camera(url: &str) -> String {
    format!(
        r#"id = "{SECOND}"
name = "东元超市后门"
kind = "social-unit"
unit = "东元超市"
url = "{url}"
grid = "321322-001-003-07"
hazards = ["fire"]
"#
    )
}

fn alert_from(messages: &[Message], camera: &str) -> bool {
    messages
        .iter()
        .filter(|m| m.topic.starts_with(&format!("{PREFIX}/alerts/")))
        .any(|m| m.json()["camera"]["id"] == camera)
}

/// States published for `camera`, in order; a cleared topic (an empty message) reads "".
fn states(messages: &[Message], camera: &str) -> Vec<String> {
    let topic = format!("{PREFIX}/cameras/{camera}/status");
    messages
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| match m.payload.is_empty() {
            true => String::new(),
            false => m.json()["state"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn cameras(http: u16) -> Vec<String> {
    let (_, body) = get_as(http, "/api/cameras", TOKEN);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Needs `make setup` (ONNX Runtime and the models).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_are_added_and_removed_without_a_restart() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 3, "0s");
    let broker = Mosquitto::start(false, &[]);
    let centre =
        Subscriber::connect(broker.port, "centre-reload", &format!("{PREFIX}/#"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "run-node", broker.port, PREFIX, Some(TOKEN))
        + &fire_camera(CAMERA, &sim.url(1));
    let service = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "warn");
    let path = dir.path().join("service.toml");
    let http = service.port();
    let got = centre
        .wait_until(Duration::from_secs(60), |m| alert_from(m, CAMERA))
        .await;
    assert!(alert_from(&got, CAMERA), "the first camera alerts");
    assert_eq!(cameras(http), [CAMERA]);

    // Over the API: refused without the token, refused when wrong (with the field), then added.
    let body = second_camera(&sim.url(2));
    assert_eq!(post(http, "/api/cameras", None, &body).0, 401);
    let (status, why) = post(
        http,
        "/api/cameras",
        Some(TOKEN),
        &body.replace("321322-001-003-07", "321322-999"),
    );
    let why = String::from_utf8_lossy(&why).into_owned();
    assert_eq!(status, 400, "{why}");
    assert!(
        why.contains("grid") && why.contains("321322-999"),
        "the error names the field and the value: {why}"
    );
    let (status, applied) = post(http, "/api/cameras", Some(TOKEN), &body);
    let applied: Value = serde_json::from_slice(&applied).unwrap();
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["added"][0], SECOND, "{applied}");
    let got = centre
        .wait_until(Duration::from_secs(60), |m| alert_from(m, SECOND))
        .await;
    assert!(alert_from(&got, SECOND), "the added camera alerts");
    assert_eq!(cameras(http), [CAMERA, SECOND]);
    let (status, why) = post(http, "/api/cameras", Some(TOKEN), &body);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&why));
    assert!(String::from_utf8_lossy(&why).contains("already exists"));

    // Removed over the API: it stops, the first camera goes on.
    let (status, applied) = delete(http, &format!("/api/cameras/{SECOND}"), Some(TOKEN));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&applied));
    assert_eq!(cameras(http), [CAMERA]);
    // Subscribers see it stop, then its retained status cleared: a dashboard that lists the
    // cameras from `cameras/+/status` does not keep a removed one as `stopped` for good.
    let stopped_then_cleared =
        |m: &[Message]| states(m, SECOND).ends_with(&["stopped".into(), String::new()]);
    let got = centre
        .wait_until(Duration::from_secs(10), |m| stopped_then_cleared(m))
        .await;
    assert!(stopped_then_cleared(&got), "{:?}", states(&got, SECOND));
    let later = Subscriber::connect(
        broker.port,
        "dashboard-after-removal",
        &format!("{PREFIX}/cameras/#"),
        None,
    )
    .await;
    later
        .wait_until(Duration::from_secs(5), |m| !states(m, CAMERA).is_empty())
        .await;
    // The broker sends what it retains at once; a little longer for any straggler.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let retained = later.snapshot();
    assert_eq!(
        states(&retained, CAMERA),
        ["streaming"],
        "the camera that stays"
    );
    let left: Vec<&str> = retained
        .iter()
        .filter(|m| m.topic.contains(SECOND))
        .map(|m| m.topic.as_str())
        .collect();
    assert!(
        left.is_empty(),
        "the removed camera is still retained: {left:?}"
    );
    assert_eq!(delete(http, "/api/cameras/nobody", Some(TOKEN)).0, 400);
    // Its series leave /metrics with it: no `streaming = 1` for a camera that is gone.
    let (_, metrics) = get_as(http, "/metrics", TOKEN);
    let metrics = String::from_utf8_lossy(&metrics);
    let left: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains(&format!("camera=\"{SECOND}\"")))
        .take(3)
        .collect();
    assert!(
        left.is_empty(),
        "the removed camera is still in /metrics: {left:?}"
    );
    assert!(
        metrics.contains(&format!("camera=\"{CAMERA}\"")),
        "the first camera is"
    );

    // From the file on SIGHUP: the second camera comes back, a third is new, and so is a
    // department that takes every fire: the third camera's fire goes to it too.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[[cameras]]\n{body}"));
    text += &fire_camera(THIRD, &sim.url(3));
    text += &format!(
        "\n[[dispatch]]\nname = \"fire-brigade\"\nhazards = [\"fire\"]\ntopic = \"{PREFIX}/dispatch/fire-brigade\"\non = \"every\"\n"
    );
    std::fs::write(&path, text).unwrap();
    service.signal("HUP");
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = cameras(http);
        if listed.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(listed, [CAMERA, SECOND, THIRD], "SIGHUP applied the file");
    let dispatched = |m: &[Message]| {
        m.iter().any(|m| {
            m.topic
                .starts_with(&format!("{PREFIX}/dispatch/fire-brigade/"))
                && m.json()["camera"]["id"] == THIRD
        })
    };
    let got = centre
        .wait_until(Duration::from_secs(60), |m| dispatched(m))
        .await;
    assert!(
        dispatched(&got),
        "the reloaded [[dispatch]] took the new camera's fire"
    );

    // Through all of it the first camera was never restarted.
    let first = states(&centre.snapshot(), CAMERA);
    assert_eq!(
        first.iter().filter(|s| *s == "connecting").count(),
        1,
        "the first camera connected once: {first:?}"
    );
    assert!(!first.iter().any(|s| s == "stopped"), "{first:?}");

    let (exit, log) = service.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}\n{log}");
    sim.stop();
}
