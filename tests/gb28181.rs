//! `sharpeyes run` with `[gb28181]` against the test kit's GB/T 28181 platform: the node
//! registers, lists its camera in the Catalog as ON once it streams, and a fire on the
//! camera arrives at the platform as an Alarm within a second of its MQTT publication, read
//! as WVP reads it.
//!
//! Needs `make setup` (ONNX Runtime and the fire model).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sharpeyes_testkit::config::{CAMERA, GRID_TOPIC, fire_camera, service};
use sharpeyes_testkit::http::get;
use sharpeyes_testkit::{Mosquitto, Redis, Service, SipPlatform, Subscriber, fire_cameras};

const PREFIX: &str = "se-gb";
const REALM: &str = "3213220000";
const SERVER: &str = "32132200002000000001";
const DEVICE: &str = "32132200001180000001";
/// A water gauge registered as an alarm input (type 134).
const GAUGE: &str = "32132200001340000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_reaches_the_county_platform_as_an_alarm_beside_mqtt() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 1, "3s");
    let broker = Mosquitto::start(false, &[]);
    let platform = SipPlatform::start(REALM, "platform-pw").await;
    let centre = Subscriber::connect(
        broker.port,
        "centre-gb",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("gb-password");
    std::fs::write(&secret, "platform-pw").unwrap();
    let text = service(dir.path(), "gb-node", broker.port, PREFIX, None)
        .replacen(
            "[http]",
            &format!(
                "[gb28181]\nserver_id = \"{SERVER}\"\nserver_domain = \"{REALM}\"\nserver = \"udp://127.0.0.1:{}\"\ndevice_id = \"{DEVICE}\"\npassword = \"${{file:{}}}\"\nlisten = \"127.0.0.1:0\"\nkeepalive = \"5s\"\n\n[http]",
                platform.port,
                secret.display()
            ),
            1,
        )
        + &fire_camera(CAMERA, &sim.url(1))
        + &format!(
            "\n[[sensors]]\nid = \"{GAUGE}\"\ntype = \"water_level\"\nunit = \"m\"\ngrid = \"321322-001-003-07\"\nposition = {{ lat = 34.13, lon = 118.77 }}\ncameras = [\"{CAMERA}\"]\nabove = 5.0\ninterval = \"1h\"\n"
        );
    let path = dir.path().join("service.toml");
    std::fs::write(&path, &text).unwrap();
    let svc = Service::start_with(
        env!("CARGO_BIN_EXE_sharpeyes"),
        &path,
        dir.path(),
        "info",
        &[],
    );
    let http = svc.port();

    let seen = platform
        .wait_until(Duration::from_secs(30), |s| s.registered >= 1)
        .await;
    assert_eq!(seen.usernames.first().map(String::as_str), Some(DEVICE));

    // The fire: on MQTT and at the platform, each time taken as it is first seen.
    let topic = format!("{PREFIX}/alerts/{GRID_TOPIC}/fire");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut on_mqtt, mut on_platform) = (None, None);
    while Instant::now() < deadline && (on_mqtt.is_none() || on_platform.is_none()) {
        if on_mqtt.is_none() && centre.snapshot().iter().any(|m| m.topic == topic) {
            on_mqtt = Some(Instant::now());
        }
        if on_platform.is_none() && !platform.seen().alarms.is_empty() {
            on_platform = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = String::from_utf8_lossy(&get(http, "/metrics").1).into_owned();
    let readyz = get(http, "/readyz");
    platform.query("Catalog", 7, DEVICE).await;
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| !s.responses.is_empty())
        .await;
    // The alarm's 200 OK came back long ago; the counter follows within its 5 s refresh.
    let delivered = "sharpeyes_gb28181_alarms_total{outcome=\"delivered\"} 1";
    let mut later = String::new();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until && !later.contains(delivered) {
        later = String::from_utf8_lossy(&get(http, "/metrics").1).into_owned();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (exit, log) = svc.stop(Duration::from_secs(30));
    sim.stop();

    let (Some(on_mqtt), Some(on_platform)) = (on_mqtt, on_platform) else {
        panic!("fire on MQTT {on_mqtt:?}, at the platform {on_platform:?}; log:\n{log}");
    };
    assert!(
        on_platform <= on_mqtt + Duration::from_secs(1),
        "the alarm came {:?} after the MQTT alert",
        on_platform - on_mqtt
    );
    let alarm = &seen.alarms[0];
    assert_eq!(alarm.device_id, CAMERA);
    assert_eq!((alarm.priority.as_str(), alarm.method.as_str()), ("1", "5"));
    assert_eq!(alarm.alarm_type.as_deref(), Some("11"));
    assert_eq!(
        alarm.time.len(),
        "2026-12-03T15:04:05".len(),
        "{}",
        alarm.time
    );
    assert!(
        alarm.description.starts_with("fire: 东元超市门口"),
        "{}",
        alarm.description
    );
    assert!(
        alarm.description.contains("/api/alerts/"),
        "{}",
        alarm.description
    );
    assert_eq!(
        seen.alarms.len(),
        1,
        "one fire, one alarm: {:?}",
        seen.alarms
    );
    assert!(!seen.password_seen);

    let catalog = &seen.responses[0];
    assert!(
        catalog.contains(&format!("<DeviceID>{CAMERA}</DeviceID>")),
        "{catalog}"
    );
    assert!(catalog.contains("<Status>ON</Status>"), "{catalog}");
    // The water gauge, an alarm input with a 20-digit id, is a channel too.
    assert!(catalog.contains("<SumNum>2</SumNum>"), "{catalog}");
    let gauge = catalog
        .split("<Item>")
        .find(|i| i.contains(&format!("<DeviceID>{GAUGE}</DeviceID>")))
        .unwrap_or_else(|| panic!("no gauge channel: {catalog}"));
    assert!(gauge.contains("<Status>ON</Status>"), "{gauge}");
    assert!(
        gauge.contains("<Longitude>118.770000</Longitude>"),
        "{gauge}"
    );

    assert!(
        metrics.contains("sharpeyes_gb28181_registered 1"),
        "{metrics}"
    );
    assert!(later.contains(delivered), "{later}");
    assert_eq!(readyz.0, 200, "{}", String::from_utf8_lossy(&readyz.1));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    assert!(!log.contains("platform-pw"), "the password in the log");
}

/// Two nodes of a cluster with the same `[gb28181]`: one registers the device and relays
/// every node's fires; SIGKILLed, the other registers within a lease and a step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_node_is_the_device_and_another_takes_over_when_it_dies() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 4, "2s");
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let platform = SipPlatform::start(REALM, "platform-pw").await;
    let bin = env!("CARGO_BIN_EXE_sharpeyes");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize, id: &str| {
        let dir = dirs[i].path();
        let mut text = service(dir, "unused", broker.port, PREFIX, None).replacen(
            "[http]",
            &format!(
                "[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nkey_prefix = \"se-gb\"\n\n[cluster]\nlease = \"3s\"\ncapacity = 10\n\n[gb28181]\nserver_id = \"{SERVER}\"\nserver_domain = \"{REALM}\"\nserver = \"udp://127.0.0.1:{}\"\ndevice_id = \"{DEVICE}\"\npassword = \"platform-pw\"\nlisten = \"127.0.0.1:0\"\n\n[http]",
                redis.port, platform.port
            ),
            1,
        );
        for c in 1..=4 {
            text += &fire_camera(&format!("3213220053132000{c:04}"), &sim.url(c));
        }
        let path = dir.join("service.toml");
        std::fs::write(&path, text).unwrap();
        Service::start_with(bin, &path, dir, "info", &["--node-id", id])
    };
    let a = start(0, "node-a");
    let b = start(1, "node-b");
    let seen = platform
        .wait_until(Duration::from_secs(90), |s| {
            let cameras: BTreeSet<&str> = s.alarms.iter().map(|a| a.device_id.as_str()).collect();
            cameras.len() == 4
        })
        .await;
    let sources: BTreeSet<_> = seen.sources.iter().collect();
    assert_eq!(sources.len(), 1, "one device, registered from {sources:?}");
    let cameras: BTreeSet<&str> = seen.alarms.iter().map(|a| a.device_id.as_str()).collect();
    assert_eq!(cameras.len(), 4, "every node's fires: {:?}", seen.alarms);
    let registered = |node: &Service| {
        String::from_utf8_lossy(&get(node.port(), "/metrics").1)
            .contains("sharpeyes_gb28181_registered 1")
    };
    let (device, other) = match (registered(&a), registered(&b)) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        both => {
            let seen = platform.seen();
            let (_, la) = a.stop(Duration::from_secs(10));
            let (_, lb) = b.stop(Duration::from_secs(10));
            let pick = |l: &str| {
                l.lines()
                    .filter(|l| l.contains("gb28181"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "registered on (a, b): {both:?}; sources {:?}\na:\n{}\nb:\n{}",
                seen.sources,
                pick(&la),
                pick(&lb)
            );
        }
    };
    let before = seen.registered;
    device.signal("KILL");
    let after = platform
        .wait_until(Duration::from_secs(20), |s| s.registered > before)
        .await;
    assert!(after.registered > before, "nobody took over the device");
    let new_source = *after.sources.last().unwrap();
    assert!(
        !sources.contains(&new_source),
        "the same node registered again"
    );
    let (exit, log) = other.stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    drop(device);
    drop(sim);
}

/// `sharpeyes gb28181 listen` as an integrator uses it: a device registers with it, its
/// Catalog is asked for and printed, and its alarm comes out as a JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gb28181_listen_prints_what_a_device_sends() {
    use sharpeyes_gb28181::{Alarm, Channel, Charset, Protocol, Settings, Upstream};
    use std::io::BufRead;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sharpeyes"))
        .args([
            "gb28181",
            "listen",
            "--listen",
            "127.0.0.1:0",
            "--realm",
            REALM,
            "--password",
            "listen-pw",
            "--for",
            "60s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let next = |event: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(v) if v["event"] == event => return v,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no {event} line within 20 s");
    };
    let listening = next("listening");
    let addr: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let upstream = Upstream::start(Settings {
        server_id: SERVER.into(),
        server_domain: REALM.into(),
        server: addr,
        protocol: Protocol::Udp,
        device_id: DEVICE.into(),
        password: "listen-pw".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        expires: Duration::from_secs(3600),
        keepalive: Duration::from_secs(60),
        charset: Charset::Gb2312,
    })
    .await
    .unwrap();
    upstream.set_channels(|| {
        vec![Channel {
            id: CAMERA.into(),
            name: "东元超市门口".into(),
            civil_code: "321322".into(),
            online: true,
            location: None,
        }]
    });
    assert_eq!(next("registered")["device"], DEVICE);
    let response = next("response");
    assert!(
        response["xml"].as_str().unwrap().contains(CAMERA),
        "{response}"
    );
    upstream.send(Alarm {
        alert_id: "a1".into(),
        device_id: CAMERA.into(),
        priority: 1,
        method: 5,
        time: "2026-12-03T15:04:05".into(),
        description: "fire: 东元超市门口".into(),
        alarm_type: Some(11),
        event_type: None,
        location: None,
    });
    let alarm = next("alarm");
    assert_eq!(alarm["device_id"], CAMERA);
    assert_eq!(alarm["type"], "11");
    assert_eq!(alarm["description"], "fire: 东元超市门口");
    let _ = child.kill();
    let _ = child.wait();
}

/// The platform away, the node stopped and started again: the alarm it could not deliver
/// before the restart reaches the platform after it (kept under `[node] data_dir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_the_platform_never_answered_outlives_a_restart() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 1, "2s");
    let broker = Mosquitto::start(false, &[]);
    let mut platform = SipPlatform::start(REALM, "platform-pw").await;
    platform.stop();
    let centre = Subscriber::connect(
        broker.port,
        "centre-gb-restart",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "gb-restart", broker.port, PREFIX, None).replacen(
        "[http]",
        &format!(
            "[gb28181]\nserver_id = \"{SERVER}\"\nserver_domain = \"{REALM}\"\nserver = \"udp://127.0.0.1:{}\"\ndevice_id = \"{DEVICE}\"\npassword = \"platform-pw\"\nlisten = \"127.0.0.1:0\"\n\n[http]",
            platform.port
        ),
        1,
    ) + &fire_camera(CAMERA, &sim.url(1));
    let path = dir.path().join("service.toml");
    std::fs::write(&path, &text).unwrap();
    let bin = env!("CARGO_BIN_EXE_sharpeyes");
    let svc = Service::start_with(bin, &path, dir.path(), "info", &[]);
    let got = centre
        .wait_until(Duration::from_secs(60), |m| !m.is_empty())
        .await;
    let first = got
        .first()
        .map(|m| m.json()["id"].as_str().unwrap().to_owned());
    // Alerts flow on MQTT, but the platform never answered: not ready, and it says why.
    let readyz = get(svc.port(), "/readyz");
    let (exit, log) = svc.stop(Duration::from_secs(30));
    let first = first.unwrap_or_else(|| panic!("no fire alert; log:\n{log}"));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
    assert!(platform.seen().alarms.is_empty());
    let why = String::from_utf8_lossy(&readyz.1);
    assert_eq!(readyz.0, 503, "{why}");
    assert!(why.contains("GB/T 28181 platform"), "{why}");

    platform.start_again().await;
    let svc = Service::start_with(bin, &path, dir.path(), "info", &[]);
    let seen = platform
        .wait_until(Duration::from_secs(30), |s| {
            s.alarms.iter().any(|a| a.description.contains(&first))
        })
        .await;
    let (_, log) = svc.stop(Duration::from_secs(30));
    drop(sim);
    let of_first = seen
        .alarms
        .iter()
        .filter(|a| a.description.contains(&first))
        .count();
    assert_eq!(
        of_first, 1,
        "alert {first} at the platform: {:?}\n{log}",
        seen.alarms
    );
}
