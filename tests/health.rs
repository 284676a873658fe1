//! Camera health through the whole service: a real `sharpeyes run`, simulated cameras over
//! real RTSP whose pictures go bad in each of the ways the diagnosis knows, a camera that is
//! not there at all, and a real mosquitto where a maintenance team subscribes.

use std::collections::BTreeMap;
use std::time::Duration;

use sharpeyes_ingest::simulator::SceneKind;
use sharpeyes_testkit::config::{GRID_TOPIC, fire_camera, service};
use sharpeyes_testkit::http::{get_as, post};
use sharpeyes_testkit::{Mosquitto, Service, Subscriber, health_schema_errors};

const PREFIX: &str = "se-health";
const TOKEN: &str = "health-t0ken";

/// Which problem each simulated fault must raise.
fn expected(scene: SceneKind) -> &'static str {
    match scene {
        SceneKind::Dark => "dark",
        SceneKind::Covered => "occluded",
        SceneKind::Blurred => "blurred",
        SceneKind::Frozen => "frozen",
        SceneKind::Moved => "moved",
        SceneKind::ColorCast => "color-cast",
        other => panic!("{other} is not a picture fault"),
    }
}

/// Needs `make setup` (ONNX Runtime and the models).
///
/// Seven cameras show the street for 8 s (the diagnosis learns each one's baseline), then
/// six of them turn dark, covered, blurred, frozen, moved and colour-cast; the seventh stays
/// healthy, and the dark one's light comes back at 22 s. An eighth camera's address has nothing behind it. With `hold = "3s"` and
/// `offline_after = "10s"`, each fault must be reported once as exactly its own problem, the
/// dead camera as video-loss, and the healthy one never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_picture_fault_and_a_dead_camera_are_reported_as_their_own_problem() {
    let cache = tempfile::tempdir().unwrap();
    let faults = SceneKind::PICTURE_FAULTS;
    let mut scenario: Vec<String> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| match f {
            // The dark camera's light comes back after 14 s.
            SceneKind::Dark => format!("{f}@8s+14s:cam{}", i + 2),
            _ => format!("{f}@8s:cam{}", i + 2),
        })
        .collect();
    scenario.push("street@0s:cam1".into());
    let sim = sharpeyes_ingest::Simulator::start(sharpeyes_ingest::SimulatorConfig {
        cameras: faults.len() + 1,
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        port: 0,
        grain: 4,
        scenario: scenario
            .iter()
            .map(|s| s.parse().expect("a scene"))
            .collect(),
        cache_dir: Some(cache.path().to_owned()),
        ..sharpeyes_ingest::SimulatorConfig::default()
    })
    .expect("the simulator starts");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };

    let broker = Mosquitto::start(false, &[]);
    let team = Subscriber::connect(
        broker.port,
        "maintenance",
        &format!("{PREFIX}/health/#"),
        None,
    )
    .await;
    let retained = Subscriber::connect(
        broker.port,
        "retained-health",
        &format!("{PREFIX}/cameras/+/health"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = service(dir.path(), "health-node", broker.port, PREFIX, Some(TOKEN))
        + "\n[health]\nhold = \"3s\"\noffline_after = \"10s\"\n";
    for i in 1..=faults.len() + 1 {
        text += &fire_camera(&format!("cam{i}"), &sim.url(i));
    }
    text += &fire_camera("cam-dead", &format!("rtsp://127.0.0.1:{dead}/nothing"));
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "info");

    let fault_cameras: Vec<(String, &str)> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("cam{}", i + 2), expected(*f)))
        .collect();
    let said = |m: &[sharpeyes_testkit::Message], camera: &str, problem: &str, state: &str| {
        m.iter().any(|m| {
            let v = m.json();
            v["camera"]["id"] == camera && v["problem"] == problem && v["state"] == state
        })
    };
    let started = |m: &[sharpeyes_testkit::Message], camera: &str, problem: &str| {
        said(m, camera, problem, "started")
    };
    team.wait_until(Duration::from_secs(90), |m| {
        fault_cameras.iter().all(|(c, p)| started(m, c, p))
            && started(m, "cam-dead", "video-loss")
            && said(m, "cam2", "dark", "ended")
    })
    .await;
    // A few seconds more, for a wrong problem or a repeat to show itself.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = team.messages.lock().unwrap().clone();
    let mut by_id = BTreeMap::new();
    for m in &got {
        by_id.insert(
            m.json()["id"].as_str().unwrap_or_default().to_owned(),
            m.clone(),
        );
    }
    let cameras = get_as(svc.port(), "/api/cameras", TOKEN);
    let metrics = String::from_utf8_lossy(&get_as(svc.port(), "/metrics", TOKEN).1).into_owned();
    let snapshot = by_id.values().find_map(|m| {
        let v = m.json();
        v["snapshot"]["url"].as_str().map(str::to_owned)
    });
    let jpeg = snapshot.as_deref().map(|url| {
        let path = &url[url.find("/api/").expect("an API path")..];
        get_as(svc.port(), path, TOKEN)
    });
    let retained_states = retained.messages.lock().unwrap().clone();
    // The history is flushed every 10 s: wait for one flush after the last change.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (status, body) = get_as(
        svc.port(),
        "/api/health/report?level=camera&since=1h",
        TOKEN,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let by_camera: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (status, body) = get_as(svc.port(), "/api/health/report?level=town", TOKEN);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let by_town: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (status, _) = get_as(svc.port(), "/api/health/report?level=province", TOKEN);
    assert_eq!(status, 400, "an unknown level is refused");
    for since in ["soon", "999d", "18446744073709551615s"] {
        let (status, body) = get_as(
            svc.port(),
            &format!("/api/health/report?since={since}"),
            TOKEN,
        );
        assert_eq!(
            status,
            400,
            "since={since}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            !String::from_utf8_lossy(&body).contains(since),
            "the caller's text is not echoed"
        );
    }
    // A camera removed over the API takes its problems out of /metrics with it.
    let (status, body) =
        sharpeyes_testkit::http::delete(svc.port(), "/api/cameras/cam3", Some(TOKEN));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics =
            String::from_utf8_lossy(&get_as(svc.port(), "/metrics", TOKEN).1).into_owned();
        if !metrics.contains("sharpeyes_camera_problem{camera=\"cam3\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cam3 is still in /metrics 10 s after its removal:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The moved camera was re-aimed on purpose: an operator accepts its new view, and
    // `moved` ends (it would stay otherwise: the picture still differs from the old view).
    let moved = (fault_cameras.iter())
        .find(|(_, p)| *p == "moved")
        .map(|(c, _)| c.clone())
        .expect("a moved camera");
    let (status, body) = post(svc.port(), "/api/cameras/no-such-cam/view", Some(TOKEN), "");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(
        !body.contains("no-such-cam"),
        "the caller's text is not echoed"
    );
    let (status, body) = post(svc.port(), &format!("/api/cameras/{moved}/view"), None, "");
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (status, body) = post(
        svc.port(),
        &format!("/api/cameras/{moved}/view"),
        Some(TOKEN),
        "",
    );
    let accepted: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&body)));
    assert_eq!((status, &accepted["camera"]), (200, &moved.as_str().into()));
    let ended = team
        .wait_until(Duration::from_secs(30), |m| {
            said(m, &moved, "moved", "ended")
        })
        .await;
    assert!(
        said(&ended, &moved, "moved", "ended"),
        "{moved} is still moved 30 s after its view was accepted"
    );
    let (_, log) = svc.stop(Duration::from_secs(30));
    sim.stop();
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_sharpeyes"))
        .args([
            "report",
            "--config",
            "service.toml",
            "--since",
            "1h",
            "--csv",
        ])
        .current_dir(dir.path())
        .output()
        .expect("sharpeyes report runs");

    let seen: Vec<String> = by_id
        .values()
        .map(|m| {
            let v = m.json();
            format!("{} {} {}", v["camera"]["id"], v["problem"], v["state"])
        })
        .collect();
    for (camera, problem) in &fault_cameras {
        assert!(
            started(&got, camera, problem),
            "{camera} did not report {problem}; seen: {seen:?}\nlog:\n{log}"
        );
    }
    assert!(
        started(&got, "cam-dead", "video-loss"),
        "no video-loss for the dead camera; seen: {seen:?}"
    );
    // Nothing else started: each fault is its own problem, and the healthy camera has none.
    for m in by_id.values() {
        let v = m.json();
        assert!(
            health_schema_errors(&v).is_empty(),
            "{:?}: {v}",
            health_schema_errors(&v)
        );
        let camera = v["camera"]["id"].as_str().unwrap();
        let problem = v["problem"].as_str().unwrap();
        let fine = fault_cameras
            .iter()
            .any(|(c, p)| c == camera && p == &problem)
            || (camera == "cam-dead" && problem == "video-loss");
        assert!(fine, "unexpected {problem} on {camera}; seen: {seen:?}");
        assert_eq!(v["node"], "health-node");
        assert!(
            m.topic
                .starts_with(&format!("{PREFIX}/health/{GRID_TOPIC}/"))
                && m.topic.ends_with(&format!("/{problem}")),
            "{}",
            m.topic
        );
    }
    // Exactly one start per problem (the hold keeps a flickering measure from repeating
    // it), and one end for the camera whose light came back, with the start's `since`.
    assert_eq!(
        by_id.len(),
        fault_cameras.len() + 2,
        "one message per change; seen: {seen:?}"
    );
    let dark: Vec<serde_json::Value> = by_id
        .values()
        .map(|m| m.json())
        .filter(|v| v["camera"]["id"] == "cam2")
        .collect();
    assert_eq!(dark.len(), 2, "{dark:?}");
    assert_eq!(dark[0]["since"], dark[1]["since"], "{dark:?}");
    assert_eq!(
        (&dark[0]["state"], &dark[1]["state"]),
        (&"started".into(), &"ended".into())
    );
    // A picture problem comes with the frame that showed it.
    let (status, body) = jpeg.expect("a picture problem has a snapshot");
    assert_eq!(status, 200);
    assert_eq!(&body[..3], &[0xff, 0xd8, 0xff], "a JPEG");

    // The report: the dead camera was never online; a healthy one was online and usable
    // for as long as it streamed; the covered one online but not usable since it was covered.
    let row = |id: &str| {
        by_camera["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {by_camera}"))
    };
    let rate = |id: &str, which: &str| row(id)[which].as_f64().unwrap();
    assert_eq!(rate("cam-dead", "online_rate"), 0.0, "{by_camera}");
    assert_eq!(
        by_camera["rows"][0]["id"], "cam-dead",
        "worst first: {by_camera}"
    );
    assert!(rate("cam1", "online_rate") > 0.8, "{by_camera}");
    assert_eq!(rate("cam1", "usable_rate"), rate("cam1", "online_rate"));
    assert!(
        rate("cam3", "usable_rate") < rate("cam3", "online_rate") - 0.2,
        "{by_camera}"
    );
    let town = &by_town["rows"][0];
    assert_eq!(town["cameras"], faults.len() + 2, "{by_town}");
    assert_eq!(town["worst"][0], "cam-dead", "{by_town}");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let csv = String::from_utf8_lossy(&cli.stdout);
    let dead_line = csv
        .lines()
        .find(|l| l.contains(",cam-dead,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(dead_line.ends_with(",0.0000,0.0000"), "{csv}");
    assert_eq!(
        csv.lines().count(),
        faults.len() + 3,
        "a header and a line per camera: {csv}"
    );

    let (status, body) = cameras;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let health_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["health"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        health_of("cam3")["problems"],
        serde_json::json!(["occluded"])
    );
    assert_eq!(health_of("cam2")["problems"], serde_json::json!([]));
    assert_eq!(health_of("cam1")["problems"], serde_json::json!([]));
    assert!(
        health_of("cam1")["measures"]["brightness"]
            .as_f64()
            .unwrap()
            > 60.0
    );
    let ratio = health_of("cam-dead")["online_ratio_24h"].as_f64().unwrap();
    assert!(ratio < 0.01, "the dead camera was online {ratio}");
    assert!(
        metrics.contains("sharpeyes_camera_problem{camera=\"cam3\",problem=\"occluded\"} 1")
            && metrics.contains("sharpeyes_camera_problem{camera=\"cam2\",problem=\"dark\"} 0"),
        "{metrics}"
    );
    assert!(
        retained_states.iter().any(|m| {
            let v = m.json();
            v["camera"] == "cam3" && v["problems"] == serde_json::json!(["occluded"])
        }),
        "the covered camera's state is retained"
    );
}

/// Needs `make setup`.
///
/// The hazard scenes are not picture faults: a fire, a person, a crowd or a coffee cup in
/// front of the street (each showing from 3 s on, for longer than `hold`) must raise no
/// health problem. This is the diagnosis' false-problem check on the demo's own scenes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hazard_scenes_raise_no_health_problem() {
    let cache = tempfile::tempdir().unwrap();
    let scenes = [
        SceneKind::Street,
        SceneKind::Fire,
        SceneKind::Person,
        SceneKind::Crowd,
        SceneKind::Coffee,
    ];
    let sim = sharpeyes_ingest::Simulator::start(sharpeyes_ingest::SimulatorConfig {
        cameras: scenes.len(),
        width: 640,
        height: 360,
        fps: 10,
        gop: 10,
        port: 0,
        grain: 4,
        scenario: scenes
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s}@3s:cam{}", i + 1).parse().expect("a scene"))
            .collect(),
        cache_dir: Some(cache.path().to_owned()),
        ..sharpeyes_ingest::SimulatorConfig::default()
    })
    .expect("the simulator starts");
    let broker = Mosquitto::start(false, &[]);
    let team = Subscriber::connect(
        broker.port,
        "maintenance",
        &format!("{PREFIX}/health/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = service(dir.path(), "health-node", broker.port, PREFIX, Some(TOKEN))
        + "\n[health]\nhold = \"3s\"\n";
    for i in 1..=scenes.len() {
        text += &fire_camera(&format!("cam{i}"), &sim.url(i));
    }
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "info");
    // 3 s of street, then 30 s of each scene: ten times the hold.
    let got = team
        .wait_until(Duration::from_secs(33), |m| !m.is_empty())
        .await;
    let cameras = get_as(svc.port(), "/api/cameras", TOKEN);
    let (_, log) = svc.stop(Duration::from_secs(30));
    sim.stop();
    let seen: Vec<String> = got
        .iter()
        .map(|m| {
            let v = m.json();
            format!(
                "{} {} {} {}",
                v["camera"]["id"], v["problem"], v["state"], v["measures"]
            )
        })
        .collect();
    assert!(
        seen.is_empty(),
        "false problems: {seen:?}\n{}",
        String::from_utf8_lossy(&cameras.1)
    );
    // The diagnosis ran: every camera has measures.
    let list: serde_json::Value = serde_json::from_slice(&cameras.1).unwrap();
    for c in list.as_array().unwrap() {
        assert!(
            c["health"]["measures"]["sharpness"].as_f64().is_some(),
            "{c}\n{log}"
        );
    }
}

/// The hours every node counted add up in Redis, and the file a node without Redis keeps
/// gives the same sums; hours before the window are left out.
#[tokio::test]
async fn the_health_history_sums_every_nodes_seconds_in_redis_and_on_disk() {
    use sharpeyes::health_history::{HealthHistory, Tally, hour_of};
    use std::time::SystemTime;

    let redis = sharpeyes_testkit::Redis::start(None);
    let dir = tempfile::tempdir().unwrap();
    let parse = |redis_section: &str| {
        let text = format!(
            "[node]\nid = \"h\"\ndata_dir = \"{}\"\n{redis_section}",
            dir.path().display()
        );
        sharpeyes_config::Config::parse(&text, std::path::Path::new("h.toml"), &[])
            .expect("a valid configuration")
            .config
    };
    let with_redis = parse(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"se-hist\"\n",
        redis.port
    ));
    let on_disk = parse("");
    let now = hour_of(SystemTime::now());
    let tally = |w, o, u| Tally {
        watched: w,
        online: o,
        usable: u,
    };
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for config in [&with_redis, &on_disk] {
        let mut node_a = HealthHistory::open(config).await;
        let mut node_b = HealthHistory::open(config).await;
        let this_hour = BTreeMap::from([("cam1".to_owned(), tally(60, 50, 40))]);
        node_a.add(now, &this_hour).await.unwrap();
        // The camera moved to node B within the hour; another camera is B's alone.
        let more = BTreeMap::from([
            ("cam1".to_owned(), tally(60, 60, 60)),
            ("cam2".to_owned(), tally(10, 0, 0)),
        ]);
        node_b.add(now, &more).await.unwrap();
        // Three hours ago: outside a two-hour window.
        node_b.add(now - 3, &this_hour).await.unwrap();
        let sums = node_a.read(two_hours_ago).await.unwrap();
        assert_eq!(
            sums["cam1"],
            tally(120, 110, 100),
            "with Redis: {}",
            config.redis.is_some()
        );
        assert_eq!(sums["cam2"], tally(10, 0, 0));
        let all = node_a
            .read(SystemTime::now() - Duration::from_secs(4 * 3600))
            .await
            .unwrap();
        assert_eq!(all["cam1"], tally(180, 160, 140));
    }
    assert!(dir.path().join("health-hours.json").exists());
}
