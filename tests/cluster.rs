//! Three `sharpeyes run` processes sharing nine cameras through a real redis-server: each
//! camera runs on exactly one node, a SIGKILLed node's cameras move once its leases expire,
//! a SIGTERMed node's move at once, and the shared cooldown keeps each fire to one alert
//! across the moves; every node lists every node's alerts and cameras; the alerts a node
//! killed during a broker outage left unsent go out from a survivor; cameras changed over
//! one node's API change on every node; a Redis restart mid-run loses neither leases nor
//! cooldowns; fires that start after a kill are alerted by the survivors; a node frozen past
//! its leases counts them lost and stops them; a joining node takes only its share; a node
//! cut off from Redis stops its cameras before another takes them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sharpeyes_testkit::config::{fire_camera, service};
use sharpeyes_testkit::http::{delete, get_as, post};
use sharpeyes_testkit::{Fault, FaultProxy, Mosquitto, Redis, Service, Subscriber, fire_cameras};

const PREFIX: &str = "se-cluster";
const TOKEN: &str = "cluster-test-token";
const CAMERAS: usize = 9;
/// Short, so the test is: a dead node's cameras move within this (plus a step).
const LEASE: &str = "3s";

fn camera_id(i: usize) -> String {
    format!("3213220053132000{i:04}")
}

/// One node's configuration: its own data directory, the shared broker, Redis and cameras.
fn node_config(dir: &Path, broker: u16, redis: u16, sim: &sharpeyes_ingest::Simulator) -> String {
    let mut text = service(dir, "sharpeyes-1", broker, PREFIX, Some(TOKEN));
    text = text.replacen(
        "[http]",
        &format!(
            "[redis]\nurl = \"redis://127.0.0.1:{redis}/0\"\nkey_prefix = \"{PREFIX}\"\n\n[cluster]\nlease = \"{LEASE}\"\ncapacity = 10\n\n[http]"
        ),
        1,
    );
    for i in 1..=CAMERAS {
        text += &fire_camera(&camera_id(i), &sim.url(i));
    }
    // A water level the first two cameras watch: they and the sensor go to one node.
    text += &format!(
        "\n[[sensors]]\nid = \"{SENSOR}\"\ntype = \"water_level\"\nunit = \"m\"\ngrid = \"321322-001-003-07\"\ncameras = [\"{}\", \"{}\"]\nabove = 5.0\ninterval = \"1h\"\n\n[fusion]\nwait = \"2s\"\n",
        camera_id(1),
        camera_id(2)
    );
    text
}

const SENSOR: &str = "water-shuhe-01";

/// `sharpeyes run` as node `id` of configuration `text`, written with its data to `dir`.
fn start_node(dir: &Path, text: &str, id: &str) -> Service {
    let path = dir.join("service.toml");
    std::fs::write(&path, text).unwrap();
    let bin = env!("CARGO_BIN_EXE_sharpeyes");
    Service::start_with(bin, &path, dir, "info", &["--node-id", id])
}

/// `GET /api/cluster` of a node: (its id, the cameras it runs, the members it sees).
fn view(http: u16) -> (String, Vec<String>, usize) {
    let (status, body) = get_as(http, "/api/cluster", TOKEN);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let cameras = v["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (
        v["node"]["id"].as_str().unwrap().to_owned(),
        cameras,
        v["nodes"].as_array().unwrap().len(),
    )
}

/// A node's `sharpeyes_camera_handoff_seconds`: (count, sum).
fn handoffs(http: u16) -> (u64, f64) {
    let (status, body) = get_as(http, "/metrics", TOKEN);
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics"))
    };
    (
        value("sharpeyes_camera_handoff_seconds_count ") as u64,
        value("sharpeyes_camera_handoff_seconds_sum "),
    )
}

/// Polls until `nodes` counted `n` handoffs more than `before` (a camera streams a moment
/// after it starts), within 15 s; the handoffs since, and their mean in seconds.
fn handoffs_since(nodes: &[&Service], before: (u64, f64), n: u64) -> (u64, f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let total = nodes
            .iter()
            .map(|s| handoffs(s.port()))
            .fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let count = total.0 - before.0;
        if count >= n || Instant::now() > deadline {
            return (count, (total.1 - before.1) / count.max(1) as f64);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Camera -> the nodes that run it, over the nodes given.
fn owners(nodes: &[&Service]) -> BTreeMap<String, Vec<String>> {
    let mut owners: BTreeMap<String, Vec<String>> =
        (1..=CAMERAS).map(|i| (camera_id(i), Vec::new())).collect();
    for node in nodes {
        let (id, cameras, _) = view(node.port());
        for c in cameras {
            owners.entry(c).or_default().push(id.clone());
        }
    }
    owners
}

/// Polls until every camera runs on exactly one of `nodes` (never on two at once) and that
/// stays so for longer than two coordination steps, within `limit`; returns when that state
/// was first seen (from the call) and the owners.
fn settle(nodes: &[&Service], limit: Duration) -> (Duration, BTreeMap<String, Vec<String>>) {
    const STABLE: Duration = Duration::from_millis(2500);
    let start = Instant::now();
    let mut since: Option<(Duration, BTreeMap<String, Vec<String>>)> = None;
    loop {
        let owners = owners(nodes);
        for (camera, on) in &owners {
            assert!(on.len() <= 1, "camera {camera} runs on {on:?} at once");
        }
        if owners.values().all(|on| on.len() == 1) {
            match &since {
                Some((first, seen)) if *seen == owners => {
                    if start.elapsed() - *first > STABLE {
                        return (*first, owners);
                    }
                }
                _ => since = Some((start.elapsed(), owners.clone())),
            }
        } else {
            since = None;
        }
        assert!(
            start.elapsed() < limit,
            "the cameras did not settle on the nodes within {limit:?}: {owners:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn on(owners: &BTreeMap<String, Vec<String>>, node: &str) -> Vec<String> {
    owners
        .iter()
        .filter(|(_, on)| on.iter().any(|n| n == node))
        .map(|(c, _)| c.clone())
        .collect()
}

/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_the_cameras_and_take_over_from_a_dead_or_stopping_node() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, CAMERAS, "0s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let centre =
        Subscriber::connect(broker.port, "centre-cluster", &format!("{PREFIX}/#"), None).await;
    let bin = env!("CARGO_BIN_EXE_sharpeyes");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<_> = dirs
        .iter()
        .map(|d| {
            let path = d.path().join("service.toml");
            std::fs::write(&path, node_config(d.path(), broker.port, redis.port, &sim)).unwrap();
            path
        })
        .collect();

    // The file's default node id is refused: two such nodes would share one outbox.
    let refused = std::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(&paths[0])
        .env_remove("SHARPEYES_NODE_ID")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--node-id, SHARPEYES_NODE_ID"), "{stderr}");

    let start = |i: usize, id: &str| {
        Service::start_with(bin, &paths[i], dirs[i].path(), "info", &["--node-id", id])
    };
    let a = start(0, "node-a");
    let b = start(1, "node-b");
    let c = start(2, "node-c");
    // Settled means all three are members and hold their share, not the first to start
    // holding everything: wait for three members everywhere first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while [&a, &b, &c].iter().any(|n| view(n.port()).2 != 3) {
        assert!(Instant::now() < deadline, "the nodes never saw each other");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, owners) = settle(&[&a, &b, &c], Duration::from_secs(30));
    for node in ["node-a", "node-b", "node-c"] {
        assert!(
            !on(&owners, node).is_empty(),
            "{node} runs nothing: {owners:?}"
        );
    }

    // Any node shows the whole cluster: each member with the cameras and sensors it runs
    // (a heartbeat old at most), and every camera with the node that runs it.
    let sensor_node = owners[&camera_id(1)][0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get_as(c.port(), "/api/cluster", TOKEN);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let mut said = BTreeMap::new();
        let mut sensors = BTreeMap::new();
        for n in v["nodes"].as_array().unwrap() {
            let id = n["id"].as_str().unwrap().to_owned();
            assert!(n["capacity"].as_u64().unwrap() > 0, "{n}");
            assert!(
                humantime::parse_rfc3339(n["last_seen"].as_str().unwrap()).is_ok(),
                "{n}"
            );
            for cam in n["cameras"].as_array().unwrap() {
                said.insert(cam.as_str().unwrap().to_owned(), vec![id.clone()]);
            }
            for s in n["sensors"].as_array().unwrap() {
                sensors.insert(s.as_str().unwrap().to_owned(), id.clone());
            }
        }
        if said == owners && v["unassigned"] == serde_json::json!([]) {
            assert_eq!(sensors.get(SENSOR), Some(&sensor_node), "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/api/cluster says {v}; the nodes run {owners:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The same in each node's metrics: three live members, and its own camera count.
    for (node, id) in [(&a, "node-a"), (&b, "node-b"), (&c, "node-c")] {
        let own = format!(
            "sharpeyes_cluster_cameras{{node=\"{id}\"}} {}\n",
            on(&owners, id).len()
        );
        eventually(
            Duration::from_secs(10),
            &format!("{id}'s metrics: 3 members and {own:?}"),
            || {
                let text =
                    String::from_utf8_lossy(&get_as(node.port(), "/metrics", TOKEN).1).into_owned();
                text.contains("\nsharpeyes_cluster_nodes 3\n") && text.contains(&own)
            },
        );
    }
    let (_, body) = get_as(a.port(), "/api/cameras", TOKEN);
    let listed: BTreeMap<String, Vec<String>> = serde_json::from_slice::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap().to_owned();
            (id, vec![c["node"].as_str().unwrap_or("none").to_owned()])
        })
        .collect();
    assert_eq!(listed, owners, "node-a's /api/cameras");

    // The sensor's alarm is raised once, by the node that runs its cameras.
    assert_eq!(owners[&camera_id(2)], owners[&camera_id(1)], "{owners:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let reading = serde_json::json!({ "sensor_id": SENSOR, "type": "water_level", "value": 8.3, "unit": "m", "time": now });
    centre
        .publish(
            &format!("{PREFIX}/sensors/{SENSOR}"),
            reading.to_string().as_bytes(),
        )
        .await;
    let floods = |m: &[sharpeyes_testkit::Message]| -> Vec<Value> { alerts(m, "flood") };
    let got = centre
        .wait_until(Duration::from_secs(20), |m| !floods(m).is_empty())
        .await;
    let flood = floods(&got);
    assert!(!flood.is_empty(), "no flood alert");
    assert_eq!(flood[0]["node"], sensor_node.as_str(), "{:?}", flood[0]);
    // Its node runs the cameras: the alert carries the river camera's frame.
    assert!(flood[0]["snapshot"]["url"].is_string(), "{:?}", flood[0]);

    // Every camera's fire is alerted, by whichever node runs it.
    let fires = fires_by_camera;
    let got = centre
        .wait_until(Duration::from_secs(90), |m| fires(m).len() == CAMERAS)
        .await;
    assert_eq!(fires(&got).len(), CAMERAS, "{:?}", fires(&got));

    // Any node's list shows the county's alerts, whichever node raised them (the shared feed
    // is read every half second).
    for node in [&a, &b, &c] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = get_as(node.port(), "/api/alerts?hazard=fire&limit=100", TOKEN);
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let list: Value = serde_json::from_slice(&body).unwrap();
            let listed: BTreeMap<String, String> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let camera = e["alert"]["camera"]["id"].as_str().unwrap_or_default();
                    let by = e["alert"]["node"].as_str().unwrap_or_default();
                    (camera.to_owned(), by.to_owned())
                })
                .collect();
            let expected: BTreeMap<String, String> = owners
                .iter()
                .map(|(camera, nodes)| (camera.clone(), nodes[0].clone()))
                .collect();
            if listed == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node on port {} lists {listed:?}, the cluster raised {expected:?}",
                node.port()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // SIGKILL: b's cameras wait for its leases to expire, then move to a and c.
    let b_cameras = on(&owners, "node-b");
    let (a0, c0) = (handoffs(a.port()), handoffs(c.port()));
    let killed = Instant::now();
    b.signal("KILL");
    let (moved_after, after_kill) = settle(&[&a, &c], Duration::from_secs(30));
    // Renewed every second on a 3 s lease: nobody takes them before they expire.
    assert!(
        moved_after > Duration::from_millis(1500),
        "a killed node's cameras moved after {moved_after:?}, before its leases expired"
    );
    assert!(killed.elapsed() > moved_after);
    for camera in &b_cameras {
        assert!(!after_kill[camera].contains(&"node-b".to_owned()));
    }
    assert!(
        on(&after_kill, "node-a").len() + on(&after_kill, "node-c").len() == CAMERAS,
        "{after_kill:?}"
    );
    // Each camera taken over counts its handoff, from b's last renewal to streaming again:
    // at least the lease, since nobody may take it sooner.
    let (count, mean) = handoffs_since(
        &[&a, &c],
        (a0.0 + c0.0, a0.1 + c0.1),
        b_cameras.len() as u64,
    );
    assert_eq!(
        count,
        b_cameras.len() as u64,
        "handoffs counted after the kill"
    );
    assert!(
        (2.9..10.0).contains(&mean),
        "a killed node's cameras were handed off in {mean:.2} s on average (lease 3 s)"
    );
    // Nothing else moved: a and c kept what they had.
    for node in ["node-a", "node-c"] {
        for camera in on(&owners, node) {
            assert_eq!(
                after_kill[&camera],
                [node.to_owned()],
                "{camera} moved between live nodes"
            );
        }
    }

    // SIGTERM: c releases its leases as it stops, and a takes them at its next step, well
    // within a lease.
    let c_cameras = on(&after_kill, "node-c");
    let a1 = handoffs(a.port());
    let (exit, log) = c.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    assert!(log.contains("left the cluster"), "{log}");
    let (moved_after_stop, after_stop) = settle(&[&a], Duration::from_secs(10));
    for camera in &c_cameras {
        assert_eq!(after_stop[camera], ["node-a".to_owned()]);
    }
    assert!(
        moved_after_stop < Duration::from_millis(2500),
        "a clean stop's cameras moved after {moved_after_stop:?}; a kill's after {moved_after:?}"
    );
    let (count, mean_after_stop) = handoffs_since(&[&a], a1, c_cameras.len() as u64);
    assert_eq!(
        count,
        c_cameras.len() as u64,
        "handoffs counted after the stop"
    );
    // No lease to wait out: a step, a connection and a keyframe (one a second).
    assert!(
        mean_after_stop < 3.0 && mean_after_stop < mean,
        "a clean stop's cameras were handed off in {mean_after_stop:.2} s on average, a kill's in {mean:.2} s"
    );

    // The cooldown lives in Redis: no camera alerted its fire twice across the moves.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = centre.snapshot();
    for (camera, n) in fires(&all) {
        assert_eq!(n, 1, "camera {camera} alerted {n} times");
    }
    assert_eq!(floods(&all).len(), 1, "one flood alert: {:?}", floods(&all));
    // Only the node that handles the sensor says it is in alarm (the cooldown in Redis alone
    // would hide the other nodes' alerts, not their statuses).
    let alarms = all
        .iter()
        .filter(|m| m.topic == format!("{PREFIX}/sensors/{SENSOR}/status"))
        .filter(|m| m.json()["state"] == "alarm")
        .count();
    assert_eq!(alarms, 1, "alarm statuses of {SENSOR}");
    let (exit, log) = a.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    drop(sim);
}

/// A node whose Redis goes silent stops its cameras before their leases could expire, a
/// node that still reaches Redis takes them once they have, and the first takes its share
/// back when Redis answers again: at no poll does a camera run on both.
///
/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_stops_its_cameras_before_their_leases_expire() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, CAMERAS, "600s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let proxy = FaultProxy::start(redis.port).await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // node-a reaches Redis through the proxy, node-b directly.
    let start = |i: usize, id: &str, redis: u16| {
        start_node(
            dirs[i].path(),
            &node_config(dirs[i].path(), broker.port, redis, &sim),
            id,
        )
    };
    let a = start(0, "node-a", proxy.port);
    let b = start(1, "node-b", redis.port);
    eventually(Duration::from_secs(30), "two members", || {
        [&a, &b].iter().all(|n| view(n.port()).2 == 2)
    });
    let (_, owners) = settle(&[&a, &b], Duration::from_secs(30));
    assert!(!on(&owners, "node-a").is_empty(), "{owners:?}");

    // Redis goes silent for a (packets held, not refused): it cannot renew, and must stop
    // every camera before its leases (3 s) could expire and b take them.
    let cut = Instant::now();
    proxy.set(Fault::Blackhole);
    while !view(a.port()).1.is_empty() {
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "still running {:?}",
            view(a.port())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_after = cut.elapsed();
    // Measured from the cut, which came after the last renewal: an upper bound.
    assert!(
        stopped_after < Duration::from_secs(3),
        "stopped {stopped_after:?} after Redis went silent: later than the 3 s lease"
    );
    let (status, body) = sharpeyes_testkit::http::get(a.port(), "/readyz");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("the cluster's Redis does not answer"),
        "{body}"
    );
    // b takes them once a's leases have expired (renewed every second, so 2 to 3 s after
    // the cut); never while a still ran them.
    let asked = cut.elapsed();
    let (first, taken) = settle(&[&a, &b], Duration::from_secs(15));
    assert_eq!(on(&taken, "node-b").len(), CAMERAS, "{taken:?}");
    assert!(
        asked + first > Duration::from_millis(1500),
        "b had every camera {:?} after the cut, before a's leases could expire",
        asked + first
    );

    // Redis answers a again: it takes its share back by the usual handover.
    proxy.set(Fault::None);
    proxy.cut();
    let (_, back) = settle(&[&a, &b], Duration::from_secs(30));
    assert_eq!(back, owners, "the cameras are not back where they were");
    let (exit, log) = a.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    assert!(log.contains("cut off from Redis for too long"), "{log}");
    let (exit, log) = b.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    drop(sim);
}

/// The alert ids waiting in `node`'s outbox stream in Redis, oldest first.
fn outbox_ids(redis: u16, node: &str) -> Vec<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.to_string(), "--raw", "XRANGE"])
        .arg(format!("{PREFIX}:outbox:{node}"))
        .args(["-", "+"])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "alert_id")
        .map(|w| w[1].to_owned())
        .collect()
}

/// A node killed while the broker is down leaves its alerts in its outbox in Redis: once its
/// membership expires a survivor adopts them, and they reach the centre when the broker is
/// back, still saying which node detected them.
///
/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_unsent_alerts_are_published_by_a_survivor() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, CAMERAS, "0s");
    let mut broker = Mosquitto::start(true, &[]);
    let redis = Redis::start(None);
    let centre = Subscriber::connect(
        broker.port,
        "centre-adopt",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    broker.stop();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let texts: Vec<String> = (dirs.iter())
        .map(|d| node_config(d.path(), broker.port, redis.port, &sim))
        .collect();
    // Both at once: with the broker down each waits 5 s for its subscriptions before it
    // says it is ready, and a node alone that long alerts for every camera first (the
    // cooldown is the cluster's, so the other's alerts would be suppressed).
    let (a, b) = std::thread::scope(|s| {
        let start = |i: usize, id: &'static str| {
            let (dir, text) = (dirs[i].path(), &texts[i]);
            s.spawn(move || start_node(dir, text, id))
        };
        let (a, b) = (start(0, "node-a"), start(1, "node-b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (_, owners) = settle(&[&a, &b], Duration::from_secs(40));
    let b_cameras = on(&owners, "node-b").len();
    assert!(b_cameras > 0, "{owners:?}");

    // With the broker gone, each of b's cameras' fires waits in b's outbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_ids(redis.port, "node-b").len() < b_cameras {
        assert!(
            Instant::now() < deadline,
            "node-b queued {:?} for {b_cameras} cameras",
            outbox_ids(redis.port, "node-b")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.signal("KILL");
    let unsent = outbox_ids(redis.port, "node-b");
    assert!(unsent.len() >= b_cameras, "{unsent:?}");

    // b's heartbeat expires within the 3 s lease; a adopts at its next step.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !outbox_ids(redis.port, "node-b").is_empty() {
        assert!(Instant::now() < deadline, "nobody adopted node-b's outbox");
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.start_again();
    let got = centre
        .wait_until(Duration::from_secs(30), |m| {
            let ids = sharpeyes_testkit::alert_ids(m);
            unsent.iter().all(|id| ids.contains_key(id))
        })
        .await;
    let by_id: BTreeMap<String, Value> = got
        .iter()
        .map(|m| m.json())
        .filter_map(|v| Some((v["id"].as_str()?.to_owned(), v)))
        .collect();
    for id in &unsent {
        let alert = by_id
            .get(id)
            .unwrap_or_else(|| panic!("alert {id} that node-b left unsent never arrived"));
        assert_eq!(alert["node"], "node-b", "{alert}");
    }
    let (exit, log) = a.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    assert!(
        log.contains("publishing alerts that nodes gone from the cluster left unsent"),
        "{log}"
    );
    drop(sim);
}

/// A counter or gauge `name` (no labels) in a node's `/metrics`.
fn metric(http: u16, name: &str) -> f64 {
    let (status, body) = get_as(http, "/metrics", TOKEN);
    assert_eq!(status, 200);
    let prefix = format!("{name} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

/// The fires of a killed node's cameras that start after the kill, while its leases are still
/// running out and nobody watches those cameras, are alerted by the survivors that take them
/// over; the other cameras' fires by the nodes that ran them all along.
///
/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_that_start_after_a_kill_are_alerted_by_the_survivors() {
    /// Simulator time of the kill: the nodes settle well before it (within 30 s elsewhere).
    const KILL_AT: Duration = Duration::from_secs(40);
    let cache = tempfile::tempdir().unwrap();
    let begun = Instant::now();
    // Every camera's fire starts a second after the kill: within the dead node's leases.
    let sim = fire_cameras(&cache, CAMERAS, "41s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let centre = Subscriber::connect(
        broker.port,
        "centre-after",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Service> = ["node-a", "node-b", "node-c"]
        .iter()
        .zip(&dirs)
        .map(|(id, dir)| {
            let text = node_config(dir.path(), broker.port, redis.port, &sim);
            start_node(dir.path(), &text, id)
        })
        .collect();
    let all: Vec<&Service> = nodes.iter().collect();
    eventually(Duration::from_secs(30), "three members", || {
        all.iter().all(|n| view(n.port()).2 == 3)
    });
    let (_, owners) = settle(&all, Duration::from_secs(30));
    let busiest = ["node-a", "node-b", "node-c"]
        .into_iter()
        .enumerate()
        .max_by_key(|(_, id)| on(&owners, id).len())
        .map(|(i, _)| i)
        .unwrap();
    let dead = format!("node-{}", ["a", "b", "c"][busiest]);
    let orphans = on(&owners, &dead);
    assert!(!orphans.is_empty(), "{owners:?}");
    let settled = begun.elapsed();
    assert!(
        settled < KILL_AT,
        "the nodes took {settled:?} to settle; the kill is due at {KILL_AT:?} and the fires a second later"
    );
    tokio::time::sleep(KILL_AT - settled).await;
    assert!(
        fires_by_camera(&centre.snapshot()).is_empty(),
        "a fire was alerted before any burned"
    );
    nodes[busiest].signal("KILL");
    let killed = Instant::now();

    let got = centre
        .wait_until(Duration::from_secs(60), |m| {
            fires_by_camera(m).len() == CAMERAS
        })
        .await;
    let fires = alerts(&got, "fire");
    let by: BTreeMap<String, String> = fires
        .iter()
        .map(|a| {
            let camera = a["camera"]["id"].as_str().unwrap_or_default().to_owned();
            (camera, a["node"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        by.len(),
        CAMERAS,
        "fires alerted after {dead} was killed: {by:?}; it ran {orphans:?}"
    );
    for (camera, node) in &by {
        if orphans.contains(camera) {
            assert_ne!(node, &dead, "{camera}'s fire came from the dead node");
        } else {
            assert_eq!(
                node, &owners[camera][0],
                "{camera} moved between live nodes"
            );
        }
    }
    // The fires did start after the kill: what the test claims to show.
    let log = sim.scene_log();
    for camera in 1..=CAMERAS {
        let lit = log
            .iter()
            .find(|c| c.camera == camera && c.scene == sharpeyes_ingest::simulator::SceneKind::Fire)
            .unwrap_or_else(|| panic!("cam{camera} never sent its fire: {log:?}"));
        assert!(
            lit.instant > killed,
            "cam{camera}'s fire began before the kill"
        );
    }
    for (i, node) in nodes.into_iter().enumerate() {
        if i != busiest {
            let (exit, log) = node.stop(Duration::from_secs(30));
            assert!(exit.is_some_and(|e| e.success()), "{log}");
        }
    }
    drop(sim);
}

/// A node paused past its leases (a stalled VM, a debugger, SIGSTOP) finds on waking that
/// another node has taken its cameras: it counts each in `sharpeyes_lease_lost_total` and
/// stops it at its first step, and the hash then hands them back to it. A third node that
/// joins then takes only its share.
///
/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_leases_counts_them_lost_and_stops_them() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, CAMERAS, "600s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize, id: &str| {
        let text = node_config(dirs[i].path(), broker.port, redis.port, &sim);
        start_node(dirs[i].path(), &text, id)
    };
    let a = start(0, "node-a");
    let b = start(1, "node-b");
    eventually(Duration::from_secs(30), "two members", || {
        [&a, &b].iter().all(|n| view(n.port()).2 == 2)
    });
    let (_, owners) = settle(&[&a, &b], Duration::from_secs(30));
    let paused = on(&owners, "node-a");
    assert!(!paused.is_empty(), "{owners:?}");
    assert_eq!(metric(a.port(), "sharpeyes_lease_lost_total"), 0.0);

    // a is frozen: its leases run out (3 s) and b takes its cameras.
    a.signal("STOP");
    let (_, taken) = settle(&[&b], Duration::from_secs(15));
    assert_eq!(on(&taken, "node-b").len(), CAMERAS, "{taken:?}");

    // a wakes with leases it still thinks it holds: its first step finds them b's.
    a.signal("CONT");
    eventually(
        Duration::from_secs(5),
        "node-a counts its leases lost",
        || metric(a.port(), "sharpeyes_lease_lost_total") == paused.len() as f64,
    );
    // Then the hash gives a its share again, by the usual handover: never two at once.
    let (_, back) = settle(&[&a, &b], Duration::from_secs(20));
    assert_eq!(back, owners, "the cameras are not back where they were");
    assert_eq!(
        metric(a.port(), "sharpeyes_lease_lost_total"),
        paused.len() as f64,
        "lost once each"
    );

    // A third node joins: it takes only its share, and nothing moves between a and b.
    let c = start(2, "node-c");
    eventually(Duration::from_secs(30), "three members", || {
        [&a, &b, &c].iter().all(|n| view(n.port()).2 == 3)
    });
    let (_, joined) = settle(&[&a, &b, &c], Duration::from_secs(30));
    assert!(!on(&joined, "node-c").is_empty(), "{joined:?}");
    for (camera, now) in &joined {
        if now != &owners[camera] {
            assert_eq!(
                now,
                &["node-c".to_owned()],
                "{camera} moved between a and b"
            );
        }
    }
    for node in [a, b, c] {
        let (exit, log) = node.stop(Duration::from_secs(30));
        assert!(exit.is_some_and(|e| e.success()), "{log}");
    }
    drop(sim);
}

/// Camera -> the nodes whose `/api/cluster` says they run it, over `nodes`.
fn running(nodes: &[&Service]) -> BTreeMap<String, Vec<String>> {
    let mut on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in nodes {
        let (id, cameras, _) = view(node.port());
        for c in cameras {
            on.entry(c).or_default().push(id.clone());
        }
    }
    on
}

/// `/api/cameras` of a node: camera -> the node it says runs it.
fn listed(http: u16) -> BTreeMap<String, String> {
    let (status, body) = get_as(http, "/api/cameras", TOKEN);
    assert_eq!(status, 200);
    serde_json::from_slice::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let node = c["node"].as_str().unwrap_or("unassigned").to_owned();
            (c["id"].as_str().unwrap().to_owned(), node)
        })
        .collect()
}

/// Polls `check` every 200 ms until it holds, within `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A camera added over the API of one node runs on whichever node the assignment gives it,
/// every node lists it, a second add of its id on another node is refused, a file camera
/// removed over one node's API stops wherever it ran, and the changes outlive a restart.
///
/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_changed_over_one_nodes_api_change_on_every_node() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 4, "600s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let bin = env!("CARGO_BIN_EXE_sharpeyes");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<_> = dirs
        .iter()
        .map(|d| {
            // The first three cameras in the file; the fourth comes over the API.
            let text: String = node_config(d.path(), broker.port, redis.port, &sim)
                .split("\n[[cameras]]")
                .take(4)
                .collect::<Vec<_>>()
                .join("\n[[cameras]]");
            let path = d.path().join("service.toml");
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let start = |i: usize, id: &str| {
        Service::start_with(bin, &paths[i], dirs[i].path(), "info", &["--node-id", id])
    };
    let a = start(0, "node-a");
    let b = start(1, "node-b");
    let file: Vec<String> = (1..=3).map(camera_id).collect();
    eventually(Duration::from_secs(30), "the file's cameras run", || {
        let on = running(&[&a, &b]);
        file.iter().all(|c| on.get(c).is_some_and(|n| n.len() == 1))
    });

    let added = camera_id(4);
    let body = format!(
        "id = \"{added}\"\nname = \"东元超市后门\"\nkind = \"social-unit\"\nunit = \"东元超市\"\nurl = \"{}\"\ngrid = \"321322-001-003-07\"\nhazards = [\"fire\"]\n",
        sim.url(4)
    );
    let (status, applied) = post(a.port(), "/api/cameras", Some(TOKEN), &body);
    let applied = String::from_utf8_lossy(&applied).into_owned();
    assert_eq!(status, 200, "{applied}");
    assert!(applied.contains("shared with every node"), "{applied}");
    eventually(
        Duration::from_secs(15),
        "the added camera runs on one node and both list it",
        || {
            let on = running(&[&a, &b]);
            let runner = on
                .get(&added)
                .filter(|n| n.len() == 1)
                .map(|n| n[0].clone());
            runner.is_some_and(|r| {
                listed(a.port()).get(&added) == Some(&r) && listed(b.port()).get(&added) == Some(&r)
            })
        },
    );
    let (status, why) = post(b.port(), "/api/cameras", Some(TOKEN), &body);
    let why = String::from_utf8_lossy(&why).into_owned();
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("already"), "{why}");

    // A file camera removed over b's API stops wherever it ran, and leaves both lists.
    let gone = camera_id(1);
    let (status, applied) = delete(b.port(), &format!("/api/cameras/{gone}"), Some(TOKEN));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&applied));
    eventually(Duration::from_secs(15), "the removed camera stops", || {
        !running(&[&a, &b]).contains_key(&gone)
            && !listed(a.port()).contains_key(&gone)
            && !listed(b.port()).contains_key(&gone)
    });

    // Both changes are in Redis: a restarted node starts from them.
    let (exit, log) = a.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    let a = start(0, "node-a");
    eventually(
        Duration::from_secs(30),
        "the restarted node has the changes",
        || {
            let list = listed(a.port());
            list.contains_key(&added) && !list.contains_key(&gone) && list.len() == 3
        },
    );
    for node in [a, b] {
        let (exit, log) = node.stop(Duration::from_secs(30));
        assert!(exit.is_some_and(|e| e.success()), "{log}");
    }
    drop(sim);
}

/// The `hazard` alerts among `messages`, once per alert id, as a subscriber keeps them:
/// delivery is at least once, and a copy (a node killed between the broker's PUBACK and the
/// outbox removal, a QoS 1 resend) carries the same id. A second alert is a new id.
fn alerts(messages: &[sharpeyes_testkit::Message], hazard: &str) -> Vec<Value> {
    let suffix = format!("/{hazard}");
    let mut seen = std::collections::BTreeSet::new();
    messages
        .iter()
        .filter(|m| m.topic.ends_with(&suffix))
        .map(|m| m.json())
        .filter(|alert| seen.insert(alert["id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Fire alerts (distinct ids) per camera among `messages`.
fn fires_by_camera(messages: &[sharpeyes_testkit::Message]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for alert in alerts(messages, "fire") {
        let camera = alert["camera"]["id"].as_str().unwrap_or("?").to_owned();
        *count.entry(camera).or_insert(0) += 1;
    }
    count
}

/// Redis restarted in the middle of a run, down for longer than a lease (with its
/// append-only file, as production Redis must run): every camera settles on one node again,
/// never two at once; then one node stops and the other takes its cameras, and none of them
/// alerts its burning fire a second time, since the cooldowns came back with Redis. Without
/// persistence the moved cameras alert again.
///
/// Needs `make setup` (ONNX Runtime and the fire model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_keeps_the_leases_and_cooldowns() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 4, "0s");
    let broker = Mosquitto::start(false, &[]);
    let mut redis = Redis::start_persistent();
    let centre = Subscriber::connect(
        broker.port,
        "centre-redis-restart",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize, id: &str| {
        let text: String = node_config(dirs[i].path(), broker.port, redis.port, &sim)
            .split("\n[[cameras]]")
            .take(5)
            .collect::<Vec<_>>()
            .join("\n[[cameras]]");
        start_node(dirs[i].path(), &text, id)
    };
    let a = start(0, "node-a");
    let b = start(1, "node-b");
    let got = centre
        .wait_until(Duration::from_secs(90), |m| fires_by_camera(m).len() == 4)
        .await;
    assert_eq!(
        fires_by_camera(&got).len(),
        4,
        "{:?}",
        fires_by_camera(&got)
    );

    // Down for longer than a lease: every node stops its cameras and takes them again.
    redis.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.start_again();
    let cameras: Vec<String> = (1..=4).map(camera_id).collect();
    eventually(
        Duration::from_secs(30),
        "every camera on one node again",
        || {
            let on = running(&[&a, &b]);
            for (camera, nodes) in &on {
                assert!(nodes.len() <= 1, "{camera} runs on {nodes:?} at once");
            }
            cameras.iter().all(|c| on.contains_key(c))
        },
    );
    // Node-a's cameras move to node-b, whose memory has no cooldown of theirs.
    let (exit, log) = a.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    eventually(Duration::from_secs(30), "every camera on node-b", || {
        running(&[&b]).len() == cameras.len()
    });
    // Long enough for a moved camera's fire to be confirmed again (a keyframe a second).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all = centre.snapshot();
    for (camera, n) in fires_by_camera(&all) {
        let theirs: Vec<String> = all
            .iter()
            .filter(|m| m.topic.ends_with("/fire") && m.json()["camera"]["id"] == camera.as_str())
            .map(|m| {
                let v = m.json();
                format!("{} from {}", v["id"], v["node"])
            })
            .collect();
        assert_eq!(
            n, 1,
            "camera {camera} alerted {n} times across the Redis restart: {theirs:?}"
        );
    }
    let (exit, log) = b.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    drop(sim);
}
