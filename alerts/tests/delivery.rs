//! Alert delivery against real servers: mosquitto and redis-server on free loopback ports.
//!
//! Alerts arrive on their grid topic and validate against the schema; the cooldown holds back
//! repeats; stopping the broker mid-burst or killing the publishing process loses nothing;
//! unacknowledged alerts climb to the county and acknowledged ones stay put, once per level and
//! once per ack with three nodes on one Redis; a broker silent
//! for long costs one reconnect, not a storm; no credential shows in any message or log line.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sharpeyes_alerts::message::{OutboxRecord, StoreFuture};
use sharpeyes_alerts::{
    AckRequest, AlertSettings, Alerts, CameraPhase, JudgedAlert, MemoryStore, MqttSettings, Mute,
    RedisStore, StateStore, Submitted, render,
};
use sharpeyes_config::{Config, Redis as RedisConfig, SecretUrl};
use sharpeyes_testkit::{
    ClientCerts, Fault, FaultProxy, LogBuffer, Message, Mosquitto, Redis, Subscriber, alert_ids,
    schema_errors,
};
use support::*;
use tokio::sync::watch;

/// Every log line of this test binary, at every level, for the credential check.
fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

fn settings() -> AlertSettings {
    AlertSettings {
        snapshot_base_url: "http://127.0.0.1:8080".into(),
        inline_snapshots: false,
        snapshot_ttl: Duration::from_secs(60),
        escalation_tick: Duration::from_millis(100),
        subscriptions: Vec::new(),
    }
}

struct Running {
    alerts: Alerts,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: Arc<Config>, store: Arc<dyn StateStore>, mqtt: MqttSettings) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let (alerts, task) = Alerts::start(config, store, mqtt, settings(), shutdown)
            .await
            .expect("alert service starts");
        Self { alerts, stop, task }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the service stops within 10 s")
            .unwrap();
    }
}

fn plain(port: u16) -> MqttSettings {
    MqttSettings::plain("127.0.0.1", port, PREFIX, "test-node")
}

/// A store on the test redis-server on `port`, its keys under `prefix`, as node `node`.
async fn redis_store(port: u16, prefix: &str, node: &str) -> Arc<dyn StateStore> {
    let url = SecretUrl::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    Arc::new(
        RedisStore::connect(&RedisConfig::new(url, prefix), node)
            .await
            .unwrap(),
    )
}

async fn submit(alerts: &Alerts, config: &Config, hazard: &str, zone: Option<&str>) -> String {
    match alerts
        .submit(alert(config, hazard, zone), None)
        .await
        .unwrap()
    {
        Submitted::Queued { id, durable, .. } => {
            assert!(durable, "the outbox must take the alert");
            id
        }
        Submitted::Suppressed => panic!("{hazard} alert unexpectedly suppressed"),
        Submitted::Refused { waiting } => {
            panic!("{hazard} alert refused with {waiting} alerts waiting")
        }
    }
}

async fn wait_outbox_empty(store: &dyn StateStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = store.outbox_len().await.unwrap();
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} records still in the outbox after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_all_arrived(sent: &[String], got: &[Message]) {
    let ids = alert_ids(got);
    let missing: Vec<&String> = sent.iter().filter(|id| !ids.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} alerts never arrived, e.g. {:?}",
        missing.len(),
        sent.len(),
        &missing[..missing.len().min(5)]
    );
    for m in got.iter().filter(|m| m.topic.contains("/alerts/")) {
        let errors = schema_errors(&m.json());
        assert!(
            errors.is_empty(),
            "message on {} breaks the schema: {errors:?}",
            m.topic
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_arrive_on_their_grid_topic_with_status_and_snapshot() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(broker.port, "centre-1", &format!("{PREFIX}/#"), None).await;
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;

    let rgb = vec![90u8; 64 * 48 * 3];
    let snap = render(&rgb, 64, 48, &[[5.0, 5.0, 30.0, 40.0]], 100_000).unwrap();
    let submitted = svc
        .alerts
        .submit(alert(&config, "fire", None), Some(&snap))
        .await
        .unwrap();
    let Submitted::Queued { id, topic, .. } = submitted else {
        panic!("suppressed")
    };
    let want_topic = format!("{PREFIX}/alerts/321322/321322-001/321322-001-003/{GRID}/fire");
    assert_eq!(topic, want_topic);
    svc.alerts.camera_status(
        CAMERA,
        CameraPhase::Reconnecting,
        Some("connection refused by 10.0.0.9"),
    );

    let camera_topic = format!("{PREFIX}/cameras/{CAMERA}/status");
    let got = sub
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic == want_topic) && m.iter().any(|m| m.topic == camera_topic)
        })
        .await;
    let msg = got
        .iter()
        .find(|m| m.topic == want_topic)
        .expect("the alert arrives on its grid topic");
    let json = msg.json();
    assert!(
        schema_errors(&json).is_empty(),
        "{:?}",
        schema_errors(&json)
    );
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["schema"], "sharpeyes.alert/1");
    assert_eq!(json["grid"]["path"][0]["name"], "沭阳县");
    assert_eq!(json["escalation_level"], 0);
    let snapshot = &json["snapshot"];
    assert_eq!(
        snapshot["url"],
        format!("http://127.0.0.1:8080/api/alerts/{id}/snapshot")
    );
    assert_eq!(snapshot["sha256"], snap.sha256.as_str());
    assert_eq!(
        store.snapshot(&id).await.unwrap().as_deref(),
        Some(snap.jpeg.as_slice()),
        "the snapshot is stored under the alert id"
    );

    let camera = got.iter().find(|m| m.topic == camera_topic).unwrap();
    assert!(camera.retain || camera.json()["state"] == "reconnecting");
    assert_eq!(camera.json()["state"], "reconnecting");
    assert_eq!(camera.json()["reason"], "connection refused by 10.0.0.9");
    let node_topic = format!("{PREFIX}/status/test-node");
    let online = got
        .iter()
        .find(|m| m.topic == node_topic)
        .expect("node status");
    // The first word is "online": no connection was dropped half-open (which fires the will).
    assert_eq!(online.json()["state"], "online");
    wait_outbox_empty(store.as_ref()).await;

    // Retained: a centre that connects later still learns the state of node and camera.
    let late =
        Subscriber::connect(broker.port, "centre-late", &format!("{PREFIX}/+/#"), None).await;
    let retained = late
        .wait_until(Duration::from_secs(5), |m| {
            m.iter().any(|m| m.topic == camera_topic) && m.iter().any(|m| m.topic == node_topic)
        })
        .await;
    assert!(retained.iter().all(|m| m.retain), "{retained:?}");
    assert!(retained.iter().any(|m| m.topic == camera_topic));

    // A clean shutdown says offline (retained), in place of the last will.
    svc.shutdown().await;
    let after = late
        .wait_until(Duration::from_secs(5), |m| {
            m.iter()
                .any(|m| m.topic == node_topic && m.json()["state"] == "offline")
        })
        .await;
    assert!(
        after
            .iter()
            .any(|m| m.topic == node_topic && m.json()["state"] == "offline"),
        "node status offline after shutdown"
    );
}

/// A centre acknowledges as soon as an alert arrives. The broker drops an acknowledgement that
/// no subscription takes, so on every connection the service's SUBSCRIBE must reach the broker
/// before its first PUBLISH (CI once lost an acknowledgement this way, and it escalated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_to_acknowledgements_before_it_publishes_on_every_connection() {
    logs();
    let mut broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-order",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let mut ids = vec![
        submit(&svc.alerts, &config, "fire", None).await,
        submit(&svc.alerts, &config, "fire", None).await,
    ];
    let arrived = |ids: &[String], m: &[Message]| {
        let got = alert_ids(m);
        ids.iter().all(|id| got.contains_key(id))
    };
    sub.wait_until(Duration::from_secs(10), |m| arrived(&ids, m))
        .await;
    // A broker that restarts without persistence forgets the service's subscriptions; the
    // alerts submitted meanwhile wait, and go out on the new connection.
    broker.stop();
    ids.push(submit(&svc.alerts, &config, "fire", None).await);
    ids.push(submit(&svc.alerts, &config, "fire", None).await);
    broker.start_again();
    let got = sub
        .wait_until(Duration::from_secs(20), |m| arrived(&ids, m))
        .await;
    assert!(arrived(&ids, &got), "every alert arrives: {ids:?}");
    svc.shutdown().await;

    let log = broker.log();
    let mut connections = 0;
    let mut subscribed = false;
    for line in log.lines() {
        if line.contains("New client connected") && line.contains(" as sharpeyes-test-node ") {
            connections += 1;
            subscribed = false;
        } else if line.contains("Received SUBSCRIBE from sharpeyes-test-node") {
            subscribed = true;
        } else if line.contains("Received PUBLISH from sharpeyes-test-node") {
            assert!(
                subscribed,
                "connection {connections}: a PUBLISH before the SUBSCRIBE: {line}"
            );
        }
    }
    assert!(connections >= 2, "the service connected twice:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_holds_back_repeats_per_camera_hazard_and_zone_in_redis() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let sub =
        Subscriber::connect(broker.port, "centre-2", &format!("{PREFIX}/alerts/#"), None).await;
    let config = config();
    let store = redis_store(redis.port, "cooldown-test", "n1").await;
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;

    let first = submit(&svc.alerts, &config, "smoke", Some("door")).await;
    let again = svc
        .alerts
        .submit(alert(&config, "smoke", Some("door")), None)
        .await
        .unwrap();
    assert_eq!(
        again,
        Submitted::Suppressed,
        "same camera, hazard and zone within the cooldown"
    );
    let other_zone = submit(&svc.alerts, &config, "smoke", Some("yard")).await;
    let no_cooldown = [
        submit(&svc.alerts, &config, "fire", Some("door")).await,
        submit(&svc.alerts, &config, "fire", Some("door")).await,
    ];

    // The cooldown lives in Redis: a second node (or a restarted one) honours it too.
    let svc2 = Running::start(config.clone(), store.clone(), {
        let mut s = plain(broker.port);
        s.client_id = "sharpeyes-other-node".into();
        s
    })
    .await;
    let from_other_node = svc2
        .alerts
        .submit(alert(&config, "smoke", Some("door")), None)
        .await
        .unwrap();
    assert_eq!(from_other_node, Submitted::Suppressed);

    let got = sub
        .wait_until(Duration::from_secs(10), |m| alert_ids(m).len() >= 4)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sub
        .snapshot()
        .into_iter()
        .chain(got.into_iter().take(0))
        .collect::<Vec<_>>();
    let ids = alert_ids(&got);
    let want: HashSet<&String> = [&first, &other_zone, &no_cooldown[0], &no_cooldown[1]].into();
    assert_eq!(ids.keys().collect::<HashSet<_>>(), want);
    assert_eq!(svc.alerts.stats().suppressed, 1);
    wait_outbox_empty(store.as_ref()).await;
    svc.shutdown().await;
    svc2.shutdown().await;
}

/// Submits `count` fire alerts 10 ms apart; calls `during(i)` before each.
async fn burst(
    alerts: &Alerts,
    config: &Config,
    count: usize,
    mut during: impl FnMut(usize),
) -> Vec<String> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        during(i);
        sent.push(submit(alerts, config, "fire", None).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_burst_loses_no_alert() {
    logs();
    // A production-like broker: sessions and queued messages survive its restart.
    let mut broker = Mosquitto::start(true, &[]);
    let sub =
        Subscriber::connect(broker.port, "centre-3", &format!("{PREFIX}/alerts/#"), None).await;
    let config = config();
    let spool = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::with_spool(spool.path()).unwrap());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;

    let mut down_at = None;
    let sent = burst(&svc.alerts, &config, 150, |i| {
        if i == 40 {
            broker.stop();
            down_at = Some(Instant::now());
        }
        if i == 110 {
            broker.start_again();
        }
    })
    .await;
    let outage = down_at.unwrap().elapsed();
    assert!(
        outage > Duration::from_millis(500),
        "the broker was down {outage:?}"
    );

    let got = sub
        .wait_until(Duration::from_secs(30), |m| {
            let ids = alert_ids(m);
            sent.iter().all(|id| ids.contains_key(id))
        })
        .await;
    assert_all_arrived(&sent, &got);
    wait_outbox_empty(store.as_ref()).await;
    svc.shutdown().await;
}

/// A broker that goes silent (packets dropped, not refused) for several times the publish
/// timeout, with publishes in flight: when it answers again the node reconnects once, not
/// once per second it missed, and its retained status does not flip while it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_silent_for_long_costs_one_reconnect_when_it_returns() {
    logs();
    let broker = Mosquitto::start(true, &[]);
    let proxy = FaultProxy::start(broker.port).await;
    let sub = Subscriber::connect(broker.port, "centre-6", &format!("{PREFIX}/#"), None).await;
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let mut mqtt = plain(proxy.port);
    mqtt.client_id = "sharpeyes-silent-broker".into();
    // Two-second keepalive: a publish is given up on after 4 s.
    mqtt.keep_alive = Duration::from_secs(2);
    let svc = Running::start(config.clone(), store.clone(), mqtt).await;
    let first = submit(&svc.alerts, &config, "fire", None).await;
    let got = sub
        .wait_until(Duration::from_secs(10), |m| {
            alert_ids(m).contains_key(&first)
        })
        .await;
    assert!(alert_ids(&got).contains_key(&first), "the link works");

    proxy.set(Fault::Blackhole);
    let mut sent = burst(&svc.alerts, &config, 5, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    // The silence ends; what was held in it is gone, as on a network that dropped it.
    proxy.cut();
    proxy.set(Fault::None);
    let accepted_before = proxy.accepted();
    let heard_before = sub.snapshot().len();
    sent.push(first);
    let got = sub
        .wait_until(Duration::from_secs(20), |m| {
            let ids = alert_ids(m);
            sent.iter().all(|id| ids.contains_key(id))
        })
        .await;
    assert_all_arrived(&sent, &got);
    // Time for a storm of reconnects to show, were there one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reconnects = proxy.accepted() - accepted_before;
    let status_topic = format!("{PREFIX}/status/test-node");
    let after: Vec<String> = sub.snapshot()[heard_before..]
        .iter()
        .filter(|m| m.topic == status_topic)
        .map(|m| m.json()["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        reconnects <= 2,
        "{reconnects} connections after the broker answered again; node status since: {after:?}"
    );
    assert!(
        !after.iter().any(|s| s == "offline") && after.last().map(String::as_str) == Some("online"),
        "the node's status flipped after the broker answered again: {after:?}"
    );
    wait_outbox_empty(store.as_ref()).await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_without_sessions_loses_no_alert_and_no_secret_leaks() {
    let logs = logs();
    const MQTT_PASSWORD: &str = "mqtt-Pa55-7f3a9c";
    const REDIS_PASSWORD: &str = "redis-Pa55-2b8e41";
    let secrets = tempfile::tempdir().unwrap();
    let mqtt_pw = secrets.path().join("mqtt_password");
    let redis_pw = secrets.path().join("redis_password");
    std::fs::write(&mqtt_pw, MQTT_PASSWORD).unwrap();
    std::fs::write(&redis_pw, REDIS_PASSWORD).unwrap();

    // No persistence: the restarted broker knows no session, and rumqttc drops what it
    // would have re-sent; the link must send it again. The node reaches the broker through a
    // proxy that partitions the network first, so publishes are in flight when it fails.
    let users = [("sharpeyes", MQTT_PASSWORD), ("centre", "centre-pw")];
    let mut broker = Mosquitto::start(false, &users);
    let proxy = FaultProxy::start(broker.port).await;
    let redis = Redis::start(Some(REDIS_PASSWORD));
    let sub = Subscriber::connect(
        broker.port,
        "centre-4",
        &format!("{PREFIX}/alerts/#"),
        Some(("centre", "centre-pw")),
    )
    .await;

    // Credentials as an operator writes them: references, expanded only to connect.
    let text = format!(
        "{CONFIG}\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nusername = \"sharpeyes\"\nclient_id = \"sharpeyes-secret-test\"\npassword = \"${{file:{mqtt}}}\"\nprefix = \"{PREFIX}\"\n\n[redis]\nurl = \"redis://:${{file:{redis}}}@127.0.0.1:{rport}/0\"\nkey_prefix = \"secret-test\"\n",
        port = proxy.port,
        mqtt = mqtt_pw.display(),
        redis = redis_pw.display(),
        rport = redis.port,
    );
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("m.onnx"), b"").unwrap();
    let config = Arc::new(
        Config::parse(&text, Path::new("secret.toml"), &[models.path().to_owned()])
            .unwrap()
            .config,
    );
    let mqtt = MqttSettings::from_config(config.mqtt.as_ref().unwrap(), &config.node.id).unwrap();
    assert!(!format!("{mqtt:?}").contains(MQTT_PASSWORD));
    let store = sharpeyes_alerts::open_store(&config).await.unwrap();
    assert!(!store.describe().contains(REDIS_PASSWORD));
    let svc = Running::start(config.clone(), store.clone(), mqtt).await;

    let subscribed_before = sub.subacks.load(std::sync::atomic::Ordering::SeqCst);
    let sent = burst(&svc.alerts, &config, 120, |i| {
        if i == 30 {
            proxy.set(Fault::Blackhole);
        }
        if i == 60 {
            broker.stop();
            proxy.cut();
            proxy.set(Fault::None);
        }
        if i == 80 {
            // Back, but only the centre may log in at first: the centre subscribes again
            // before the node can publish, as a grid centre would be there all along.
            broker.set_users(&users[1..]);
            broker.start_again();
        }
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sub.subacks.load(std::sync::atomic::Ordering::SeqCst) == subscribed_before {
        assert!(
            Instant::now() < deadline,
            "the centre did not subscribe again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.set_users(&users);

    let got = sub
        .wait_until(Duration::from_secs(30), |m| {
            let ids = alert_ids(m);
            sent.iter().all(|id| ids.contains_key(id))
        })
        .await;
    assert_all_arrived(&sent, &got);
    wait_outbox_empty(store.as_ref()).await;
    // The restarted broker lost the retained state; the node published it again: a centre
    // that subscribes now finds the node online.
    let late = Subscriber::connect(
        broker.port,
        "centre-late",
        &format!("{PREFIX}/status/#"),
        Some(("centre", "centre-pw")),
    )
    .await;
    let status = late
        .wait_until(Duration::from_secs(10), |m| m.iter().any(|m| m.retain))
        .await;
    assert!(
        status
            .iter()
            .any(|m| m.retain && m.json()["state"] == "online"),
        "the node's retained status after the broker's restart"
    );
    svc.shutdown().await;
    let log = logs.text();
    let lost_line = log
        .lines()
        .find(|l| l.contains("MQTT connection lost") && l.contains("sharpeyes-secret-test"))
        .expect("the outage is logged");
    assert!(
        !lost_line.contains("in_flight=0"),
        "publishes were in flight when the connection failed: {lost_line}"
    );

    for m in &got {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(!text.contains(MQTT_PASSWORD) && !text.contains(REDIS_PASSWORD));
    }
    assert!(
        log.lines().any(|l| l.contains("sharpeyes-secret-test")
            && l.contains("connection restored")
            && l.contains("session_present=false")),
        "the node came back to a broker without its session"
    );
    for secret in [MQTT_PASSWORD, REDIS_PASSWORD] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(
            leaks.is_empty(),
            "a credential appears in the log: {leaks:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_alert_climbs_to_the_county_acknowledged_one_stays() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub =
        Subscriber::connect(broker.port, "centre-5", &format!("{PREFIX}/alerts/#"), None).await;
    let config = config();
    let redis = Redis::start(None);
    let store = redis_store(redis.port, "escalation-test", "n1").await;
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;

    let acked = submit(&svc.alerts, &config, "fallen-person", Some("a")).await;
    let ignored = submit(&svc.alerts, &config, "fallen-person", Some("b")).await;
    sub.wait_until(Duration::from_secs(5), |m| {
        alert_ids(m).contains_key(&acked)
    })
    .await;
    let by = "网格员张三";
    sub.publish(
        &format!("{PREFIX}/acks/{acked}"),
        serde_json::json!({ "by": by }).to_string().as_bytes(),
    )
    .await;
    // Not an alert id: ignored with a warning, nothing stops.
    sub.publish(&format!("{PREFIX}/acks/not-an-id"), b"{}")
        .await;

    // 1 s per level: grid -> village -> town -> county.
    let county = format!("{PREFIX}/alerts/321322/-/-/-/fallen-person");
    let got = sub
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic == county)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got: Vec<Message> = sub
        .snapshot()
        .into_iter()
        .chain(got.into_iter().take(0))
        .collect();

    let of = |id: &str| -> Vec<(u64, String)> {
        got.iter()
            .filter(|m| m.json()["id"] == id)
            .map(|m| {
                (
                    m.json()["escalation_level"].as_u64().unwrap(),
                    m.topic.clone(),
                )
            })
            .collect()
    };
    let climbed = of(&ignored);
    let levels: Vec<u64> = climbed.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        levels,
        [0, 1, 2, 3],
        "one message per level, up to the county: {climbed:?}"
    );
    assert_eq!(
        climbed[1].1,
        format!("{PREFIX}/alerts/321322/321322-001/321322-001-003/-/fallen-person")
    );
    assert_eq!(climbed[3].1, county);
    let escalated_json = got.iter().find(|m| m.topic == county).unwrap().json();
    assert!(schema_errors(&escalated_json).is_empty());
    assert_eq!(escalated_json["grid"]["centre"], "县中心");

    assert_eq!(
        of(&acked).len(),
        1,
        "the acknowledged alert is not escalated"
    );
    let ack = store
        .acknowledgement(&acked)
        .await
        .unwrap()
        .expect("ack recorded");
    assert_eq!(ack.by.as_deref(), Some(by));
    assert!(ack.time_to_ack_ms < 10_000, "{ack:?}");
    let stats = svc.alerts.stats();
    assert_eq!(stats.acknowledged, 1);
    assert_eq!(stats.escalated, 3);
    svc.shutdown().await;
}

/// Three nodes on one Redis, each subscribed to the acknowledgements and each running its
/// escalation timer: an alert nobody acknowledges climbs one level at a time with one message
/// per level (each due escalation is taken by one node), and an acknowledgement every node
/// hears is recorded once and keeps its alert where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_escalate_an_alert_once_per_level_and_record_an_ack_once() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-3n",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let config = config();
    let redis = Redis::start(None);
    let mut nodes = Vec::new();
    for node in ["n1", "n2", "n3"] {
        let store = redis_store(redis.port, "escalation-3n", node).await;
        let mqtt = MqttSettings::plain("127.0.0.1", broker.port, PREFIX, node);
        nodes.push((
            Running::start(config.clone(), store.clone(), mqtt).await,
            store,
        ));
    }

    // Raised on different nodes, so that the escalations are not all one node's.
    let acked = submit(&nodes[0].0.alerts, &config, "fallen-person", Some("a")).await;
    let ignored = submit(&nodes[1].0.alerts, &config, "fallen-person", Some("b")).await;
    sub.wait_until(Duration::from_secs(5), |m| {
        alert_ids(m).contains_key(&acked)
    })
    .await;
    // With a verdict, which every node hears too: recorded and counted once.
    sub.publish(
        &format!("{PREFIX}/acks/{acked}"),
        serde_json::json!({ "by": "网格员李四", "verdict": "confirmed" })
            .to_string()
            .as_bytes(),
    )
    .await;

    // 1 s per level: grid -> village -> town -> county, then a second more for any repeat.
    let county = format!("{PREFIX}/alerts/321322/-/-/-/fallen-person");
    sub.wait_until(Duration::from_secs(10), |m| {
        m.iter().any(|m| m.topic == county)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = sub.snapshot();
    let levels = |id: &str| -> Vec<u64> {
        got.iter()
            .filter(|m| m.json()["id"] == id)
            .map(|m| m.json()["escalation_level"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        levels(&ignored),
        [0, 1, 2, 3],
        "one message per level across three nodes"
    );
    assert_eq!(
        levels(&acked),
        [0],
        "the acknowledged alert is not escalated"
    );
    let sum = |f: fn(&sharpeyes_alerts::AlertStats) -> u64| -> u64 {
        nodes.iter().map(|(n, _)| f(&n.alerts.stats())).sum()
    };
    assert_eq!(
        sum(|s| s.acknowledged),
        1,
        "acknowledgements recorded by the three nodes"
    );
    assert_eq!(
        sum(|s| s.escalated),
        3,
        "escalations published by the three nodes"
    );
    for (_, store) in &nodes {
        let ack = store
            .acknowledgement(&acked)
            .await
            .unwrap()
            .expect("ack recorded");
        assert_eq!(ack.by.as_deref(), Some("网格员李四"));
    }
    let verdicts = || -> u64 {
        nodes
            .iter()
            .flat_map(|(n, _)| n.alerts.verdict_counts())
            .map(|(_, count)| count)
            .sum()
    };
    assert_eq!(
        verdicts(),
        1,
        "a verdict every node heard, counted by the three"
    );
    // A later verdict, heard by all three, replaces it once.
    sub.publish(
        &format!("{PREFIX}/acks/{acked}"),
        br#"{"verdict": "handled"}"#,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while verdicts() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(verdicts(), 2, "two verdicts, each counted once");
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

/// An operator's verdict over MQTT: it rides the acknowledgement, a later one replaces it
/// (who acknowledged first, and when, stay), one that is none of the three or whose note is
/// not text is ignored whole, and a plain acknowledgement after it changes nothing. Each
/// verdict is counted by the alert's hazard and camera. The same in Redis (a script) and in
/// memory.
async fn verdicts_ride_acknowledgements(store: Arc<dyn StateStore>, client: &str) {
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(broker.port, client, &format!("{PREFIX}/alerts/#"), None).await;
    let config = config();
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let id = submit(&svc.alerts, &config, "fire", None).await;
    sub.wait_until(Duration::from_secs(5), |m| alert_ids(m).contains_key(&id))
        .await;
    let topic = format!("{PREFIX}/acks/{id}");
    let said = |store: Arc<dyn StateStore>, id: String| async move {
        store.acknowledgement(&id).await.unwrap()
    };
    let until = |want: &'static str| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let ack = said(store.clone(), id.clone()).await;
                if ack.as_ref().and_then(|a| a.verdict).map(|v| v.as_str()) == Some(want) {
                    return ack.unwrap();
                }
                assert!(
                    Instant::now() < deadline,
                    "verdict {want} not recorded: {ack:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // A note with a control character and far too long: the character goes, and the note
    // is cut to MAX_NOTE characters.
    let long = format!("明火\u{7}，已通知{}", "火".repeat(400));
    let first = serde_json::json!({ "by": "网格员张三", "verdict": "confirmed", "note": long });
    sub.publish(&topic, first.to_string().as_bytes()).await;
    let ack = until("confirmed").await;
    assert_eq!(ack.by.as_deref(), Some("网格员张三"));
    let note = ack.note.clone().unwrap_or_default();
    assert!(
        note.starts_with("明火，已通知火"),
        "control characters dropped: {note}"
    );
    assert_eq!(note.chars().count(), sharpeyes_alerts::MAX_NOTE, "{note}");

    // Neither of these changes anything; the third does.
    sub.publish(&topic, br#"{"verdict": "sunset"}"#).await;
    sub.publish(&topic, br#"{"verdict": "handled", "note": 5}"#)
        .await;
    sub.publish(
        &topic,
        r#"{"verdict": "handled", "note": "消防已到场"}"#.as_bytes(),
    )
    .await;
    let later = until("handled").await;
    assert_eq!(later.by.as_deref(), Some("网格员张三"), "{later:?}");
    assert_eq!(later.at, ack.at, "{later:?}");
    assert_eq!(later.note.as_deref(), Some("消防已到场"));
    sub.publish(&topic, b"{}").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(said(store.clone(), id.clone()).await, Some(later.clone()));

    let counts = svc.alerts.verdict_counts();
    let camera = "32132200531320000001".to_owned();
    assert_eq!(
        counts,
        [
            (("fire".into(), camera.clone(), "confirmed".into()), 1),
            (("fire".into(), camera, "handled".into()), 1),
        ],
        "verdicts by hazard, camera and verdict"
    );
    assert_eq!(svc.alerts.stats().acknowledged, 1);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_ride_acknowledgements_in_redis() {
    logs();
    let redis = Redis::start(None);
    let store = redis_store(redis.port, "verdict-test", "n1").await;
    verdicts_ride_acknowledgements(store, "centre-verdict-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_ride_acknowledgements_in_memory() {
    logs();
    verdicts_ride_acknowledgements(Arc::new(MemoryStore::new()), "centre-verdict-memory").await;
}

/// Departments take over the hazards they deal with: the fire brigade gets every fire as it
/// is raised, the health centre a fallen person only once an operator confirms it, and a
/// department of another town nothing from this one. Each gets the alert itself (same id,
/// same JSON) on its own topic, through the outbox, and the list says where it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_receive_exactly_the_hazards_they_take() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let departments = Subscriber::connect(broker.port, "departments", "sy/dispatch/#", None).await;
    let centre = Subscriber::connect(
        broker.port,
        "centre-dispatch",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"").unwrap();
    let text = format!(
        "{CONFIG}{}",
        r#"
[[grids]]
id = "321322-002"
name = "章集街道"
centre = "章集中心"

[[dispatch]]
name = "fire-brigade"
hazards = ["fire"]
topic = "sy/dispatch/fire-brigade"
on = "every"

[[dispatch]]
name = "health-centre"
hazards = ["fallen-person"]
grid = "321322-001"
topic = "sy/dispatch/health"

[[dispatch]]
name = "zhangji"
hazards = ["fire", "smoke", "fallen-person"]
grid = "321322-002"
topic = "sy/dispatch/zhangji"
on = "every"
"#
    );
    let config = Arc::new(
        Config::parse(&text, Path::new("test.toml"), &[dir.path().to_owned()])
            .unwrap_or_else(|p| panic!("{p}"))
            .config,
    );
    let svc = Running::start(
        config.clone(),
        Arc::new(MemoryStore::new()),
        plain(broker.port),
    )
    .await;

    let fire = submit(&svc.alerts, &config, "fire", None).await;
    let smoke = submit(&svc.alerts, &config, "smoke", None).await;
    let fallen = submit(&svc.alerts, &config, "fallen-person", None).await;
    centre
        .wait_until(Duration::from_secs(5), |m| {
            alert_ids(m).contains_key(&fallen)
        })
        .await;
    // Raised, not yet confirmed: only the fire has gone on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = departments.snapshot();
    let ids: Vec<String> = got
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&fire),
        "before any verdict: {got:?}"
    );

    // A verdict other than confirmed sends nothing; confirmed sends it once.
    let judge = |id: String, verdict: sharpeyes_alerts::Verdict| {
        let alerts = svc.alerts.clone();
        async move {
            let request = AckRequest {
                verdict: Some(verdict),
                ..AckRequest::default()
            };
            alerts.acknowledge(&id, request, None).await.unwrap()
        }
    };
    judge(smoke.clone(), sharpeyes_alerts::Verdict::Confirmed).await;
    judge(fallen.clone(), sharpeyes_alerts::Verdict::FalseAlarm).await;
    judge(fallen.clone(), sharpeyes_alerts::Verdict::Confirmed).await;
    departments
        .wait_until(Duration::from_secs(5), |m| m.len() >= 2)
        .await;
    // Anything more would come within this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = departments.snapshot();
    let grid = "321322/321322-001/321322-001-003/321322-001-003-07";
    let said: Vec<(String, String)> = got
        .iter()
        .map(|m| (m.topic.clone(), m.json()["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        said,
        [
            (
                format!("sy/dispatch/fire-brigade/{grid}/fire"),
                fire.clone()
            ),
            (
                format!("sy/dispatch/health/{grid}/fallen-person"),
                fallen.clone()
            ),
        ],
        "exactly the hazards each department takes"
    );
    // The same alert as the centre got, not a new one.
    let original = centre
        .snapshot()
        .into_iter()
        .find(|m| m.json()["id"] == fire.as_str())
        .unwrap();
    assert_eq!(got[0].json(), original.json());
    assert!(schema_errors(&got[1].json()).is_empty());

    let went = |id: &str| -> Vec<String> {
        svc.alerts
            .recent(&sharpeyes_alerts::AlertFilter::default())
            .into_iter()
            .find(|e| e.alert.id == id)
            .map(|e| e.dispatched)
            .unwrap_or_default()
    };
    assert_eq!(went(&fire), ["fire-brigade"]);
    assert_eq!(went(&fallen), ["health-centre"]);
    assert!(went(&smoke).is_empty());
    svc.shutdown().await;
}

/// Escalations outlive a restart of a node on the disk spool: an alert nobody acknowledged
/// before the restart still climbs after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_outlives_a_restart_on_the_disk_spool() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub =
        Subscriber::connect(broker.port, "centre-7", &format!("{PREFIX}/alerts/#"), None).await;
    let config = config();
    let spool = tempfile::tempdir().unwrap();
    let escalated = |m: &[Message], id: &str| {
        m.iter()
            .any(|m| m.json()["id"] == id && m.json()["escalation_level"].as_u64() >= Some(1))
    };

    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::with_spool(spool.path()).unwrap());
    let svc = Running::start(config.clone(), store, plain(broker.port)).await;
    // Escalates after 1 s; the node stops before that.
    let id = submit(&svc.alerts, &config, "fallen-person", None).await;
    sub.wait_until(Duration::from_secs(5), |m| alert_ids(m).contains_key(&id))
        .await;
    svc.shutdown().await;
    assert!(
        !escalated(&sub.snapshot(), &id),
        "the escalation came before the restart; the test shows nothing"
    );

    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::with_spool(spool.path()).unwrap());
    let svc = Running::start(config.clone(), store, plain(broker.port)).await;
    let got = sub
        .wait_until(Duration::from_secs(10), |m| escalated(m, &id))
        .await;
    assert!(
        escalated(&got, &id),
        "the alert did not climb after the restart: {:?}",
        got.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    svc.shutdown().await;
}

/// An alert the outbox could not take does not hold its cooldown: the next detection of the
/// same hazard is not suppressed on account of an alert that may never go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_is_released_when_the_outbox_refuses_the_alert() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let config = config();
    let redis = Redis::start(None);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let store: Arc<dyn StateStore> = Arc::new(
        RedisStore::connect(
            &RedisConfig::new(SecretUrl::parse(&url).unwrap(), "release-test"),
            "n1",
        )
        .await
        .unwrap(),
    );
    let svc = Running::start(config.clone(), store, plain(broker.port)).await;
    // The outbox stream's key holds a string, so every XADD fails.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let outbox = "release-test:outbox:n1";
    redis::cmd("SET")
        .arg(outbox)
        .arg("not a stream")
        .query::<()>(&mut conn)
        .unwrap();

    // smoke: a one-minute cooldown.
    let refused = svc.alerts.submit(alert(&config, "smoke", None), None).await;
    assert!(
        matches!(refused, Ok(Submitted::Queued { durable: false, .. })),
        "{refused:?}"
    );
    redis::cmd("DEL")
        .arg(outbox)
        .query::<()>(&mut conn)
        .unwrap();
    let next = svc.alerts.submit(alert(&config, "smoke", None), None).await;
    assert!(
        matches!(next, Ok(Submitted::Queued { durable: true, .. })),
        "the refused alert still held the cooldown: {next:?}"
    );
    let repeat = svc.alerts.submit(alert(&config, "smoke", None), None).await;
    assert_eq!(
        repeat.ok(),
        Some(Submitted::Suppressed),
        "a durable alert holds it"
    );
    svc.shutdown().await;
}

/// A shutdown that cannot drain its backlog in time still leaves the node `offline` on the
/// broker: a clean DISCONNECT sent ahead of the offline status would discard the will and
/// leave `online` retained for a node that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_behind_a_backlog_still_leaves_the_node_offline() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let proxy = FaultProxy::start(broker.port).await;
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store, plain(proxy.port)).await;
    let status = format!("{PREFIX}/status/test-node");
    let online = Subscriber::connect(broker.port, "centre-8", &status, None).await;
    online
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().any(|m| m.json()["state"] == "online")
        })
        .await;

    // A slow path: every chunk waits a second each way, so 150 alerts take longer than the
    // drain allows.
    proxy.delay(Duration::from_secs(1));
    burst(&svc.alerts, &config, 150, |_| {}).await;
    svc.shutdown().await;
    proxy.delay(Duration::ZERO);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        // What a centre that connects now is told.
        let fresh = Subscriber::connect(broker.port, "centre-9", &status, None).await;
        let got = fresh
            .wait_until(Duration::from_secs(2), |m| !m.is_empty())
            .await;
        last = got
            .last()
            .map(|m| m.json()["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        if last == "offline" {
            break;
        }
        drop(fresh);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last, "offline", "the retained node status after a shutdown");
}

/// The publishing process of `killed_publisher_loses_no_alert`, run as a child of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by killed_publisher_loses_no_alert as its child process"]
async fn publisher_child() {
    let Ok(params) = std::env::var("SHARPEYES_ALERTS_CHILD") else {
        return;
    };
    let p: serde_json::Value = serde_json::from_str(&params).unwrap();
    let config = config();
    let store: Arc<dyn StateStore> = match p["redis_port"].as_u64() {
        Some(port) => redis_store(u16::try_from(port).unwrap(), "kill-test", "n1").await,
        None => Arc::new(MemoryStore::with_spool(Path::new(p["spool"].as_str().unwrap())).unwrap()),
    };
    let svc = Running::start(
        config.clone(),
        store.clone(),
        plain(p["mqtt_port"].as_u64().unwrap() as u16),
    )
    .await;
    let mut ids = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p["ids"].as_str().unwrap())
        .unwrap();
    for _ in 0..p["count"].as_u64().unwrap() {
        let id = submit(&svc.alerts, &config, "fire", None).await;
        ids.write_all(format!("{id}\n").as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_outbox_empty(store.as_ref()).await;
    svc.shutdown().await;
}

fn run_child(params: &serde_json::Value) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["publisher_child", "--exact", "--ignored", "--quiet"])
        .env("SHARPEYES_ALERTS_CHILD", params.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn killed_publisher(redis: Option<&Redis>) {
    logs();
    let mut broker = Mosquitto::start(true, &[]);
    let sub =
        Subscriber::connect(broker.port, "centre-6", &format!("{PREFIX}/alerts/#"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let ids_file = dir.path().join("ids");
    let mut params = serde_json::json!({
        "mqtt_port": broker.port,
        "redis_port": redis.map(|r| r.port),
        "spool": dir.path().join("spool"),
        "ids": ids_file,
        "count": 300,
    });
    let read_ids = || -> Vec<String> {
        std::fs::read_to_string(&ids_file)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.len() == 26)
            .map(str::to_owned)
            .collect()
    };
    let wait_ids = |first: &mut std::process::Child, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_ids().len() < n {
            assert!(Instant::now() < deadline, "the publisher did not get going");
            assert!(
                first.try_wait().unwrap().is_none(),
                "the publisher exited early"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // Some alerts go out, then the broker goes away and the outbox fills, then the process is
    // killed (SIGKILL: no drain, no goodbye) with alerts in the outbox only.
    let mut first = run_child(&params);
    wait_ids(&mut first, 40);
    broker.stop();
    wait_ids(&mut first, 90);
    first.kill().unwrap();
    first.wait().unwrap();
    let sent = read_ids();
    assert!(sent.len() < 300, "killed mid-burst");
    broker.start_again();
    let before_restart = sub
        .wait_until(Duration::from_secs(3), |m| alert_ids(m).len() >= 40)
        .await;
    let delivered_before = alert_ids(&before_restart);
    let waiting = sent
        .iter()
        .filter(|id| !delivered_before.contains_key(*id))
        .count();
    assert!(
        waiting >= 40,
        "only {waiting} alerts were left to the restart"
    );

    params["count"] = 0.into();
    let mut second = run_child(&params);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted publisher did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the restarted publisher failed");

    let got = sub
        .wait_until(Duration::from_secs(10), |m| {
            let ids = alert_ids(m);
            sent.iter().all(|id| ids.contains_key(id))
        })
        .await;
    assert_all_arrived(&sent, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publisher_loses_no_alert_with_the_disk_spool() {
    killed_publisher(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publisher_loses_no_alert_with_the_redis_stream() {
    let redis = Redis::start(None);
    killed_publisher(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_carries_alerts_and_status() {
    logs();
    let broker = sharpeyes_alerts::EmbeddedBroker::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = broker.addr.port();
    let sub = Subscriber::connect(port, "centre-7", &format!("{PREFIX}/#"), None).await;
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), plain(port)).await;
    let sent = burst(&svc.alerts, &config, 20, |_| {}).await;
    let got = sub
        .wait_until(Duration::from_secs(10), |m| {
            let ids = alert_ids(m);
            sent.iter().all(|id| ids.contains_key(id))
        })
        .await;
    assert_all_arrived(&sent, &got);
    assert!(
        got.iter()
            .any(|m| m.topic == format!("{PREFIX}/status/test-node")
                && m.json()["state"] == "online")
    );
    wait_outbox_empty(store.as_ref()).await;
    svc.shutdown().await;

    // Only loopback: the embedded broker is never a public service.
    assert!(sharpeyes_alerts::EmbeddedBroker::start("0.0.0.0:0".parse().unwrap()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_over_tls_with_a_private_ca_and_a_password() {
    logs();
    let users = [("sharpeyes", "tls-Pa55"), ("centre", "centre-pw")];
    let (broker, ca) = Mosquitto::start_tls(&users);
    let sub = Subscriber::connect(
        broker.port,
        "centre-8",
        &format!("{PREFIX}/alerts/#"),
        Some(("centre", "centre-pw")),
    )
    .await;
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("m.onnx"), b"").unwrap();
    let with_ca = |ca: &Path| {
        let text = format!(
            "{CONFIG}\n[mqtt]\nurl = \"mqtts://sharpeyes:tls-Pa55@127.0.0.1:{}\"\nca_file = \"{}\"\nprefix = \"{PREFIX}\"\n",
            broker.tls_port.unwrap(),
            ca.display()
        );
        Arc::new(
            Config::parse(&text, Path::new("tls.toml"), &[models.path().to_owned()])
                .unwrap()
                .config,
        )
    };

    let config = with_ca(&ca);
    let mqtt = MqttSettings::from_config(config.mqtt.as_ref().unwrap(), "test-node").unwrap();
    assert!(mqtt.tls && mqtt.username.as_deref() == Some("sharpeyes"));
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), mqtt).await;
    let sent = burst(&svc.alerts, &config, 5, |_| {}).await;
    let got = sub
        .wait_until(Duration::from_secs(10), |m| alert_ids(m).len() >= 5)
        .await;
    assert_all_arrived(&sent, &got);
    svc.shutdown().await;

    // A CA file that is not there: refused at start, naming the field and the fix.
    let missing = with_ca(Path::new("/nonexistent/ca.pem"));
    let mqtt = MqttSettings::from_config(missing.mqtt.as_ref().unwrap(), "test-node").unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let err = Alerts::start(
        missing,
        Arc::new(MemoryStore::new()),
        mqtt,
        settings(),
        shutdown,
    )
    .await
    .err()
    .expect("no start without the CA file");
    assert!(
        err.to_string()
            .contains("[mqtt] ca_file /nonexistent/ca.pem"),
        "{err}"
    );
}

/// A broker that asks every client for a certificate from its CA (mutual TLS): without one
/// nothing is delivered and nothing is lost; with one, everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_over_mutual_tls_with_a_client_certificate() {
    logs();
    let users = [("sharpeyes", "mtls-Pa55"), ("centre", "centre-pw")];
    let (broker, files) = Mosquitto::start_mutual_tls(&users);
    let sub = Subscriber::connect(
        broker.port,
        "centre-mtls",
        &format!("{PREFIX}/alerts/#"),
        Some(("centre", "centre-pw")),
    )
    .await;
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("m.onnx"), b"").unwrap();
    let with = |client: &str| {
        let text = format!(
            "{CONFIG}\n[mqtt]\nurl = \"mqtts://sharpeyes:mtls-Pa55@127.0.0.1:{}\"\nca_file = \"{}\"\nprefix = \"{PREFIX}\"\n{client}",
            broker.tls_port.unwrap(),
            files.ca.display()
        );
        Arc::new(
            Config::parse(&text, Path::new("mtls.toml"), &[models.path().to_owned()])
                .unwrap()
                .config,
        )
    };

    // No client certificate: the broker refuses the handshake; the alerts wait.
    let config = with("");
    let mqtt = MqttSettings::from_config(config.mqtt.as_ref().unwrap(), "mtls-node").unwrap();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), mqtt).await;
    let sent = burst(&svc.alerts, &config, 3, |_| {}).await;
    let got = sub
        .wait_until(Duration::from_secs(3), |m| !alert_ids(m).is_empty())
        .await;
    assert!(
        alert_ids(&got).is_empty(),
        "delivered without a certificate"
    );
    assert_eq!(
        store.outbox_len().await.unwrap(),
        3,
        "the alerts wait in the outbox"
    );
    svc.shutdown().await;

    // With it, the same outbox is delivered.
    let config = with(&format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        files.client_cert.display(),
        files.client_key.display()
    ));
    let mqtt = MqttSettings::from_config(config.mqtt.as_ref().unwrap(), "mtls-node").unwrap();
    let svc = Running::start(config.clone(), store.clone(), mqtt).await;
    let got = sub
        .wait_until(Duration::from_secs(10), |m| alert_ids(m).len() >= 3)
        .await;
    assert_all_arrived(&sent, &got);
    wait_outbox_empty(store.as_ref()).await;
    svc.shutdown().await;
}

/// Only a centre of an alert's grid acknowledges it. The broker's ACL lets each centre's
/// account (named by its grid id) write acknowledgements only under its own topic level,
/// `{prefix}/acks/{grid}/{alert_id}`; the service accepts one there only for an alert in that
/// grid's subtree, and records the grid. The same in both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_centre_of_the_alerts_grid_can_acknowledge_it() {
    let logs = logs();
    let acl = format!(
        "user sharpeyes\ntopic readwrite {PREFIX}/#\n\n\
         pattern read {PREFIX}/alerts/#\npattern write {PREFIX}/acks/%u/#\n"
    );
    let users = [
        ("sharpeyes", "svc-pw"),
        ("321322-001", "town-pw"),
        ("321322-002", "other-town-pw"),
    ];
    let broker = Mosquitto::start_with_acl(&users, &acl);
    let redis = Redis::start(None);
    let stores: [Arc<dyn StateStore>; 2] = [
        Arc::new(MemoryStore::new()),
        redis_store(redis.port, "acl-test", "n1").await,
    ];
    let config = config();
    let topic = format!("{PREFIX}/alerts/#");
    let town = Subscriber::connect(broker.port, "town", &topic, Some(users[1])).await;
    let other = Subscriber::connect(broker.port, "other-town", &topic, Some(users[2])).await;
    for store in stores {
        let mqtt = MqttSettings {
            username: Some("sharpeyes".into()),
            password: Some("svc-pw".into()),
            ..plain(broker.port)
        };
        let svc = Running::start(config.clone(), store.clone(), mqtt).await;
        let id = submit(&svc.alerts, &config, "fallen-person", Some("a")).await;
        town.wait_until(Duration::from_secs(5), |m| alert_ids(m).contains_key(&id))
            .await;
        let by = |who: &str| serde_json::json!({ "by": who }).to_string();
        // The other town, on its own level, which its account may write: the alert is not
        // in its grid.
        other
            .publish(
                &format!("{PREFIX}/acks/321322-002/{id}"),
                by("other").as_bytes(),
            )
            .await;
        // On the alert's town's level, or without a level: the broker drops both.
        other
            .publish(
                &format!("{PREFIX}/acks/321322-001/{id}"),
                by("spoof").as_bytes(),
            )
            .await;
        other
            .publish(&format!("{PREFIX}/acks/{id}"), by("spoof").as_bytes())
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            store.acknowledgement(&id).await.unwrap(),
            None,
            "{}",
            store.describe()
        );
        assert!(
            logs.text()
                .contains("the alert is not in the acknowledging centre's grid"),
            "the other town's own-level acknowledgement reached the service and was refused"
        );

        // The alert's own town.
        town.publish(
            &format!("{PREFIX}/acks/321322-001/{id}"),
            by("张三").as_bytes(),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let ack = loop {
            if let Some(ack) = store.acknowledgement(&id).await.unwrap() {
                break ack;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not acknowledged",
                store.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(ack.by.as_deref(), Some("张三"));
        assert_eq!(ack.grid.as_deref(), Some("321322-001"));
        svc.shutdown().await;
    }
}

/// The test configuration with its spool under `data` and `[redis]` on loopback `port`.
fn with_redis(data: &tempfile::TempDir, port: u16, prefix: &str) -> Config {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("m.onnx"), b"").unwrap();
    let text = CONFIG.replacen(
        "id = \"test-node\"\n",
        &format!(
            "id = \"test-node\"\ndata_dir = \"{}\"\n",
            data.path().display()
        ),
        1,
    ) + &format!(
        "\n[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"{prefix}\"\n"
    );
    Config::parse(&text, Path::new("redis.toml"), &[models.path().to_owned()])
        .unwrap()
        .config
}

/// Redis down at start-up, back, and down again at run time: alerting never stops. While
/// Redis is away the outbox is on the local disk spool; once it is back, new alerts' state is
/// in Redis and the spool drains. Every alert arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerting_goes_on_while_redis_is_down_at_start_and_at_run_time() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-redis-down",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let mut redis = Redis::start(None);
    redis.stop();
    let data = tempfile::tempdir().unwrap();
    let config = Arc::new(with_redis(&data, redis.port, "down-test"));
    // Redis is not there: the service starts anyway, on the spool.
    let store = sharpeyes_alerts::open_store(&config).await.unwrap();
    assert!(store.ping().await.is_err(), "{}", store.describe());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let mut sent = burst(&svc.alerts, &config, 5, |_| {}).await;
    sub.wait_until(Duration::from_secs(10), |m| alert_ids(m).len() >= 5)
        .await;

    // Redis comes back: within a few seconds the store uses it.
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "Redis not used again after 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = burst(&svc.alerts, &config, 5, |_| {}).await;
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let in_redis = |id: &str| format!("down-test:issued:{id}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(in_redis(&back[4]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        exists,
        "an alert issued while Redis is up is recorded there"
    );
    sent.extend(back);

    // Down again at run time: alerts still go out.
    redis.stop();
    let started = Instant::now();
    sent.extend(burst(&svc.alerts, &config, 5, |_| {}).await);
    let took = started.elapsed();
    let got = sub
        .wait_until(Duration::from_secs(20), |m| alert_ids(m).len() >= 15)
        .await;
    assert_all_arrived(&sent, &got);
    assert!(
        took < Duration::from_secs(15),
        "5 alerts took {took:?} to submit with Redis down"
    );
    // What was spooled is published and removed: nothing waits but what Redis holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = store.outbox_pending().await.unwrap();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} records still pending",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.shutdown().await;
}

/// A cooldown this node took in Redis still holds while Redis is down: a fire that burns
/// through an outage is not alerted again from the local spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_taken_in_redis_holds_while_redis_is_down() {
    logs();
    let mut redis = Redis::start(None);
    let data = tempfile::tempdir().unwrap();
    let config = with_redis(&data, redis.port, "cooldown-outage");
    let store = sharpeyes_alerts::open_store(&config).await.unwrap();
    store.ping().await.unwrap();
    let ttl = Duration::from_secs(300);
    assert!(store.claim_cooldown("cam/fire", ttl).await.unwrap());

    redis.stop();
    assert!(
        store.cooldown_held("cam/fire").await.unwrap(),
        "the cooldown taken in Redis is forgotten while Redis is down"
    );
    assert!(!store.claim_cooldown("cam/fire", ttl).await.unwrap());
    // One taken during the outage holds too.
    assert!(store.claim_cooldown("cam/smoke", ttl).await.unwrap());
    assert!(store.cooldown_held("cam/smoke").await.unwrap());
}

/// With the broker gone, alerts wait up to `[alerts] outbox_limit`; past it the least severe
/// are refused first (minor at the limit, major at 1.25 times, critical at 1.5 times),
/// counted, and shown; everything accepted arrives once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_the_least_severe_alerts_first() {
    logs();
    let mut broker = Mosquitto::start(true, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-full",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    broker.stop();
    let config = {
        let mut c = (*config()).clone();
        c.alerts.outbox_limit = 8;
        Arc::new(c)
    };
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for severity in ["minor"; 9]
        .into_iter()
        .chain(["major"; 3])
        .chain(["critical"; 3])
    {
        let mut a = alert(&config, "fire", None);
        a.severity = severity.into();
        match svc.alerts.submit(a, None).await.unwrap() {
            Submitted::Queued { id, .. } => {
                accepted.push(id);
                // The link takes it in its own time: count it before the next.
                let deadline = Instant::now() + Duration::from_secs(5);
                while svc.alerts.stats().alerts_waiting < accepted.len() {
                    assert!(Instant::now() < deadline, "the link did not take it");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Submitted::Refused { waiting } => refused.push((severity, waiting)),
            Submitted::Suppressed => panic!("no cooldown on fire"),
        }
    }
    assert_eq!(
        refused,
        [("minor", 8), ("major", 10), ("critical", 12)],
        "accepted {}",
        accepted.len()
    );
    assert_eq!(accepted.len(), 12);
    assert!(svc.alerts.outbox_full());
    let stats = svc.alerts.stats();
    assert_eq!(
        stats.refused,
        [
            ("critical".to_owned(), 1),
            ("major".to_owned(), 1),
            ("minor".to_owned(), 1)
        ]
    );

    broker.start_again();
    let got = sub
        .wait_until(Duration::from_secs(20), |m| {
            let ids = alert_ids(m);
            accepted.iter().all(|id| ids.contains_key(id))
        })
        .await;
    assert_all_arrived(&accepted, &got);
    assert!(!svc.alerts.outbox_full());
    svc.shutdown().await;
}

/// Another store with faults put in: removals that take `removal_delay` each (a Redis at the
/// end of a slow link), and outbox writes that never finish while `appends_hang` is set (the
/// process dies in the middle of one).
struct Faulty {
    inner: Arc<dyn StateStore>,
    removal_delay: Duration,
    appends_hang: bool,
}

impl Faulty {
    fn new(inner: Arc<dyn StateStore>) -> Self {
        Self {
            inner,
            removal_delay: Duration::ZERO,
            appends_hang: false,
        }
    }
}

impl StateStore for Faulty {
    fn describe(&self) -> String {
        format!("{} with faults", self.inner.describe())
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }
    fn cooldown_held<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        self.inner.cooldown_held(key)
    }
    fn claim_cooldown<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        self.inner.claim_cooldown(key, ttl)
    }
    fn outbox_append<'a>(&'a self, record: &'a OutboxRecord) -> StoreFuture<'a, String> {
        if self.appends_hang {
            return Box::pin(std::future::pending());
        }
        self.inner.outbox_append(record)
    }
    fn outbox_pending(&self) -> StoreFuture<'_, Vec<(String, OutboxRecord)>> {
        self.inner.outbox_pending()
    }
    fn outbox_remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            tokio::time::sleep(self.removal_delay).await;
            self.inner.outbox_remove(key).await
        })
    }
    fn outbox_len(&self) -> StoreFuture<'_, usize> {
        self.inner.outbox_len()
    }
    fn outbox_adopt<'a>(
        &'a self,
        live: &'a [String],
    ) -> StoreFuture<'a, Vec<(String, OutboxRecord)>> {
        self.inner.outbox_adopt(live)
    }
    fn feed_push<'a>(&'a self, event: &'a str) -> StoreFuture<'a, ()> {
        self.inner.feed_push(event)
    }
    fn feed_read<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, String)>> {
        self.inner.feed_read(after, limit)
    }
    fn schedule_escalation<'a>(
        &'a self,
        alert_id: &'a str,
        due: std::time::SystemTime,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.inner.schedule_escalation(alert_id, due, alert_json)
    }
    fn take_due_escalations(
        &self,
        now: std::time::SystemTime,
        limit: usize,
    ) -> StoreFuture<'_, Vec<String>> {
        self.inner.take_due_escalations(now, limit)
    }
    fn record_issued<'a>(
        &'a self,
        alert_id: &'a str,
        grid: &'a str,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        self.inner.record_issued(alert_id, grid, alert_json)
    }
    fn issued_alert<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.issued_alert(alert_id)
    }
    fn acknowledge<'a>(
        &'a self,
        ack: &'a sharpeyes_alerts::Ack,
    ) -> StoreFuture<'a, sharpeyes_alerts::AckOutcome> {
        self.inner.acknowledge(ack)
    }
    fn acknowledgement<'a>(
        &'a self,
        alert_id: &'a str,
    ) -> StoreFuture<'a, Option<sharpeyes_alerts::Ack>> {
        self.inner.acknowledgement(alert_id)
    }
    fn put_snapshot<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.inner.put_snapshot(alert_id, jpeg, ttl)
    }
    fn snapshot<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.inner.snapshot(alert_id)
    }
    fn put_mute<'a>(&'a self, mute: &'a Mute) -> StoreFuture<'a, ()> {
        self.inner.put_mute(mute)
    }
    fn remove_mute<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.remove_mute(id)
    }
    fn mutes(&self) -> StoreFuture<'_, Vec<Mute>> {
        self.inner.mutes()
    }
    fn accept_view<'a>(&'a self, camera: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        self.inner.accept_view(camera, at_ms)
    }
    fn accepted_views(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, u64>> {
        self.inner.accepted_views()
    }
    fn put_frame<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.inner.put_frame(alert_id, jpeg, ttl)
    }
    fn frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.inner.frame(alert_id)
    }
    fn keep_judged<'a>(
        &'a self,
        judged: &'a JudgedAlert,
        frame: Option<&'a [u8]>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.inner.keep_judged(judged, frame, ttl)
    }
    fn judged_since(&self, since: std::time::SystemTime) -> StoreFuture<'_, Vec<JudgedAlert>> {
        self.inner.judged_since(since)
    }
    fn judged_frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.inner.judged_frame(alert_id)
    }
}

/// A process that dies after the cooldown check and before its alert is in the outbox sent
/// nothing, so it must not hold back the next alert: with Redis the cooldown outlives the
/// process, and a cooldown claimed first would silence the camera for its whole length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_dying_before_its_alert_is_durable_does_not_suppress_the_next() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-crash-window",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let config = config();
    let redis = Redis::start(None);
    let redis_store = redis_store(redis.port, "crash-window", "n1").await;

    // The first life: the outbox write never finishes, and the process "dies" there.
    let mut dying = Faulty::new(redis_store.clone());
    dying.appends_hang = true;
    let first = Running::start(config.clone(), Arc::new(dying), plain(broker.port)).await;
    let cut = tokio::time::timeout(
        Duration::from_secs(2),
        first.alerts.submit(alert(&config, "smoke", None), None),
    )
    .await;
    assert!(cut.is_err(), "the outbox write was meant to hang: {cut:?}");
    first.shutdown().await;
    assert_eq!(redis_store.outbox_len().await.unwrap(), 0);

    // The next life, on the same Redis: the camera still shows smoke (one-minute cooldown).
    let second = Running::start(config.clone(), redis_store.clone(), plain(broker.port)).await;
    let next = second
        .alerts
        .submit(alert(&config, "smoke", None), None)
        .await;
    let Ok(Submitted::Queued { id, durable, .. }) = next else {
        panic!("the alert that never went out still holds the cooldown: {next:?}");
    };
    assert!(durable);
    let got = sub
        .wait_until(Duration::from_secs(10), |m| alert_ids(m).contains_key(&id))
        .await;
    assert_all_arrived(std::slice::from_ref(&id), &got);
    let repeat = second
        .alerts
        .submit(alert(&config, "smoke", None), None)
        .await;
    assert_eq!(
        repeat.ok(),
        Some(Submitted::Suppressed),
        "a sent alert holds it"
    );
    second.shutdown().await;
}

/// Repeats of one camera and hazard submitted at once (over Redis, so they interleave):
/// one alert goes out, and the outbox keeps nothing of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_raise_one_alert_and_leave_no_other_outbox_entry() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-repeats",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let config = config();
    let redis = Redis::start(None);
    let store = redis_store(redis.port, "repeats", "n1").await;
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let attempts = (0..8).map(|_| svc.alerts.submit(alert(&config, "smoke", None), None));
    let results = futures_util::future::join_all(attempts).await;
    let queued = results
        .iter()
        .filter(|r| matches!(r, Ok(Submitted::Queued { .. })))
        .count();
    let suppressed = results
        .iter()
        .filter(|r| matches!(r, Ok(Submitted::Suppressed)))
        .count();
    assert_eq!((queued, suppressed), (1, 7), "{results:?}");
    wait_outbox_empty(store.as_ref()).await;
    assert_eq!(svc.alerts.stats().submitted, 1);
    let got = sub
        .wait_until(Duration::from_secs(2), |m| alert_ids(m).len() > 1)
        .await;
    assert_eq!(alert_ids(&got).len(), 1, "one alert on the broker");
    svc.shutdown().await;
}

/// Removing a published alert from the outbox happens off the link: a slow store delays the
/// cleaning, never the next alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_outbox_removal_never_delays_the_next_alert() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(
        broker.port,
        "centre-slow",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let config = config();
    let mut slow = Faulty::new(Arc::new(MemoryStore::new()));
    slow.removal_delay = Duration::from_secs(2);
    let store: Arc<dyn StateStore> = Arc::new(slow);
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let started = Instant::now();
    let sent = burst(&svc.alerts, &config, 8, |_| {}).await;
    let got = sub
        .wait_until(Duration::from_secs(15), |m| alert_ids(m).len() >= 8)
        .await;
    let took = started.elapsed();
    assert_all_arrived(&sent, &got);
    // One removal at a time would take 8 x 2 s; in the link, the alerts waited for them.
    assert!(took < Duration::from_secs(4), "8 alerts took {took:?}");
    svc.shutdown().await;
}

/// Dead letters and statuses go after alerts: a flood of refused input does not delay one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_dead_letters_does_not_delay_an_alert() {
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub = Subscriber::connect(broker.port, "centre-flood", &format!("{PREFIX}/#"), None).await;
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    const FLOOD: usize = 3000;
    for i in 0..FLOOD {
        svc.alerts.dead_letter(
            "sensor",
            "sy/sensors/x",
            "not JSON",
            format!("junk {i}").as_bytes(),
        );
    }
    let id = submit(&svc.alerts, &config, "fire", None).await;
    let got = sub
        .wait_until(Duration::from_secs(30), |m| {
            alert_ids(m).contains_key(&id)
                && m.iter()
                    .filter(|m| m.topic.contains("/deadletter/"))
                    .count()
                    == FLOOD
        })
        .await;
    let dead_letters_before = got
        .iter()
        .take_while(|m| !alert_ids(std::slice::from_ref(*m)).contains_key(&id))
        .filter(|m| m.topic.contains("/deadletter/"))
        .count();
    assert_eq!(
        got.iter()
            .filter(|m| m.topic.contains("/deadletter/"))
            .count(),
        FLOOD,
        "every dead letter is still delivered"
    );
    // At most what was in flight when the alert came: one window.
    assert!(
        dead_letters_before <= 2 * 64,
        "{dead_letters_before} of {FLOOD} dead letters went before the alert"
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_snapshots_carry_the_jpeg_when_configured() {
    use base64::Engine;
    logs();
    let broker = Mosquitto::start(false, &[]);
    let sub =
        Subscriber::connect(broker.port, "centre-9", &format!("{PREFIX}/alerts/#"), None).await;
    let config = config();
    let (stop, shutdown) = watch::channel(false);
    let inline = AlertSettings {
        inline_snapshots: true,
        ..settings()
    };
    let (alerts, task) = Alerts::start(
        config.clone(),
        Arc::new(MemoryStore::new()),
        plain(broker.port),
        inline,
        shutdown,
    )
    .await
    .unwrap();
    let rgb = vec![200u8; 320 * 240 * 3];
    let snap = render(&rgb, 320, 240, &[[10.0, 10.0, 100.0, 100.0]], 50_000).unwrap();
    alerts
        .submit(alert(&config, "fire", None), Some(&snap))
        .await
        .unwrap();
    let got = sub
        .wait_until(Duration::from_secs(10), |m| !m.is_empty())
        .await;
    let json = got.first().expect("the alert arrives").json();
    assert!(
        schema_errors(&json).is_empty(),
        "{:?}",
        schema_errors(&json)
    );
    let inline = json["snapshot"]["inline_base64"]
        .as_str()
        .expect("inline bytes");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inline)
        .unwrap();
    assert_eq!(bytes, snap.jpeg);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// `rediss://` end to end: a redis-server that listens with TLS only, on a certificate from
/// a private CA, with a password. The password and the alerts' state cross only TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    logs();
    let password = "tls-Redis-pw-83";
    let (redis, files) = Redis::start_tls(Some(password), ClientCerts::Required);
    let url =
        SecretUrl::parse(&format!("rediss://:{password}@127.0.0.1:{}/0", redis.port)).unwrap();
    let mut config = RedisConfig::new(url, "tls-test");

    // Without the CA the server's certificate is not trusted: refused, and said so.
    let err = RedisStore::connect(&config, "n1")
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("cannot reach Redis at rediss://"), "{text}");
    assert!(
        text.contains("UnknownIssuer") && text.contains("ca_file"),
        "{text}"
    );
    assert!(!text.contains(password), "{text}");

    // With the CA but no client certificate, the server refuses us.
    config.ca_file = Some(files.ca.clone());
    let err = RedisStore::connect(&config, "n1")
        .await
        .err()
        .expect("refused");
    assert!(!err.to_string().contains(password), "{err}");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");

    // With both, the store works over TLS.
    config.cert_file = Some(files.client_cert.clone());
    config.key_file = Some(files.client_key.clone());
    let store = RedisStore::connect(&config, "n1").await.unwrap();
    store.ping().await.unwrap();
    store
        .put_snapshot("01TLS", b"jpeg bytes", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.snapshot("01TLS").await.unwrap().as_deref(),
        Some(&b"jpeg bytes"[..])
    );
    assert!(
        store.describe().starts_with("redis rediss://"),
        "{}",
        store.describe()
    );
    assert!(!store.describe().contains(password));

    // A CA file that is not there is named.
    config.ca_file = Some(files.ca.with_file_name("missing-ca.pem"));
    let err = RedisStore::connect(&config, "n1")
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("[redis] ca_file"), "{err}");
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");
}

/// A false alarm's region is muted once, only after a false-alarm verdict, and every node
/// sharing Redis sees it and its removal; on the embedded store it survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_alarm_mutes_its_region_for_every_node_and_a_restart() {
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let config = config();
    let a = Running::start(
        config.clone(),
        redis_store(redis.port, "mute", "node-a").await,
        plain(broker.port),
    )
    .await;
    let b_store = redis_store(redis.port, "mute", "node-b").await;

    let id = submit(&a.alerts, &config, "fire", None).await;
    let refused = a.alerts.mute(&id, None).await.unwrap_err();
    assert!(
        matches!(refused, sharpeyes_alerts::MuteRefused::Conflict(_)),
        "not judged yet: {refused}"
    );
    assert!(refused.to_string().contains("`false-alarm`"), "{refused}");
    let unknown = a.alerts.mute("01JD0000000000000000000000", None).await;
    assert!(matches!(
        unknown,
        Err(sharpeyes_alerts::MuteRefused::UnknownAlert(_))
    ));

    let request = AckRequest {
        verdict: Some(sharpeyes_alerts::Verdict::FalseAlarm),
        ..AckRequest::default()
    };
    a.alerts.acknowledge(&id, request, None).await.unwrap();
    let muted = a
        .alerts
        .mute(&id, Some("值班员\u{7}李四".into()))
        .await
        .unwrap();
    assert!(muted.created);
    let mute = muted.mute;
    assert_eq!(mute.camera, CAMERA);
    assert_eq!(mute.hazard, "fire");
    assert_eq!(
        mute.by.as_deref(),
        Some("值班员李四"),
        "control characters stripped"
    );
    // The box 10..110 x 20..220 of a 640x480 frame, a quarter wider each way.
    let [x1, y1] = mute.region[0];
    let [x2, y2] = mute.region[2];
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(
        near(x1, 0.0) && near(y1, 0.0) && near(x2, 135.0 / 640.0) && near(y2, 270.0 / 480.0),
        "{:?}",
        mute.region
    );
    let again = a.alerts.mute(&id, None).await.unwrap();
    assert!(!again.created);
    assert_eq!(
        again.mute, mute,
        "muting the same alert again makes no second mute"
    );
    assert_eq!(
        b_store.mutes().await.unwrap(),
        std::slice::from_ref(&mute),
        "node b sees it"
    );

    assert!(b_store.remove_mute(&mute.id).await.unwrap());
    assert!(
        a.alerts.mutes().await.unwrap().is_empty(),
        "removed for node a too"
    );
    assert!(
        !a.alerts.unmute(&mute.id).await.unwrap(),
        "nothing left to remove"
    );
    a.shutdown().await;

    // The embedded store keeps mutes in its spool across a restart.
    let dir = tempfile::tempdir().unwrap();
    let spool = MemoryStore::with_spool(dir.path()).unwrap();
    spool.put_mute(&mute).await.unwrap();
    drop(spool);
    let reopened = MemoryStore::with_spool(dir.path()).unwrap();
    assert_eq!(reopened.mutes().await.unwrap(), std::slice::from_ref(&mute));
    std::fs::write(dir.path().join("mutes.json"), b"{not json").unwrap();
    let broken = MemoryStore::with_spool(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        broken.contains("mutes.json") && broken.contains("does not parse"),
        "{broken}"
    );
}

/// A judged video alert is kept with its clean frame, once, and a later verdict replaces
/// what was kept; in Redis (as a cluster shares it) and in the spool (across a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judged_alert_is_kept_with_its_frame_and_a_later_verdict_replaces_it() {
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let config = config();
    let spool = tempfile::tempdir().unwrap();
    let stores: [(&str, Arc<dyn StateStore>); 2] = [
        ("redis", redis_store(redis.port, "judged", "node-a").await),
        (
            "spool",
            Arc::new(MemoryStore::with_spool(spool.path()).unwrap()),
        ),
    ];
    let start = std::time::SystemTime::now() - Duration::from_secs(1);
    for (name, store) in stores {
        let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
        let judged_id = submit(&svc.alerts, &config, "fire", None).await;
        let unjudged = submit(&svc.alerts, &config, "smoke", None).await;
        for id in [&judged_id, &unjudged] {
            svc.alerts
                .keep_frame(id, format!("frame of {id}").as_bytes())
                .await;
        }
        let judge = |verdict| AckRequest {
            verdict: Some(verdict),
            note: Some("夕阳".into()),
            ..AckRequest::default()
        };
        let alerts = &svc.alerts;
        alerts
            .acknowledge(&unjudged, AckRequest::default(), None)
            .await
            .unwrap();
        alerts
            .acknowledge(
                &judged_id,
                judge(sharpeyes_alerts::Verdict::FalseAlarm),
                None,
            )
            .await
            .unwrap();
        let kept = store.judged_since(start).await.unwrap();
        assert_eq!(kept.len(), 1, "{name}: only the judged one: {kept:?}");
        assert_eq!(kept[0].alert.id, judged_id, "{name}");
        assert_eq!(
            kept[0].alert.boxes[0].bbox,
            [10.0, 20.0, 110.0, 220.0],
            "{name}"
        );
        assert_eq!(
            kept[0].ack.verdict,
            Some(sharpeyes_alerts::Verdict::FalseAlarm)
        );
        let frame = store.judged_frame(&judged_id).await.unwrap();
        assert_eq!(
            frame.as_deref(),
            Some(format!("frame of {judged_id}").as_bytes()),
            "{name}"
        );

        alerts
            .acknowledge(
                &judged_id,
                judge(sharpeyes_alerts::Verdict::Confirmed),
                None,
            )
            .await
            .unwrap();
        let kept = store.judged_since(start).await.unwrap();
        assert_eq!(kept.len(), 1, "{name}: replaced, not added");
        assert_eq!(
            kept[0].ack.verdict,
            Some(sharpeyes_alerts::Verdict::Confirmed),
            "{name}"
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        assert!(
            store.judged_since(later).await.unwrap().is_empty(),
            "{name}: by time"
        );
        svc.shutdown().await;
    }
    let reopened = MemoryStore::with_spool(spool.path()).unwrap();
    assert_eq!(
        reopened.judged_since(start).await.unwrap().len(),
        1,
        "after a restart"
    );
}

/// An operator may judge a video alert the moment it arrives: its clean frame, given with
/// the alert, is kept before it is published, so the judged alert is kept with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_judged_the_moment_it_is_published_is_kept_with_its_frame() {
    let broker = Mosquitto::start(false, &[]);
    let config = config();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let svc = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    let start = std::time::SystemTime::now() - Duration::from_secs(1);
    let submitted = svc
        .alerts
        .submit_with_frame(alert(&config, "fire", None), None, Some(b"clean frame"))
        .await
        .unwrap();
    let Submitted::Queued { id, .. } = submitted else {
        panic!("not queued: {submitted:?}");
    };
    let verdict = AckRequest {
        verdict: Some(sharpeyes_alerts::Verdict::FalseAlarm),
        ..AckRequest::default()
    };
    svc.alerts.acknowledge(&id, verdict, None).await.unwrap();
    let kept = store.judged_since(start).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        store.judged_frame(&id).await.unwrap().as_deref(),
        Some(&b"clean frame"[..]),
        "judged before anything else could keep its frame"
    );
    svc.shutdown().await;
}

/// Mutes live in Redis; each node's spool keeps a copy of what it last read there, so a
/// node restarted while Redis is down still mutes what operators muted, and cannot change
/// them until Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_while_redis_is_down_keeps_the_mutes_it_last_read() {
    let mut redis = Redis::start(None);
    let data = tempfile::tempdir().unwrap();
    let config = Arc::new(with_redis(&data, redis.port, "mute-copy"));
    let mute = Mute {
        id: "01JD0000000000000000000001".into(),
        camera: CAMERA.into(),
        hazard: "fire".into(),
        region: vec![[0.1, 0.1], [0.3, 0.1], [0.3, 0.4], [0.1, 0.4]],
        alert_id: "01JD0000000000000000000000".into(),
        by: Some("李四".into()),
        at: "2026-12-04T10:00:00Z".into(),
    };
    let store = sharpeyes_alerts::open_store(&config).await.unwrap();
    store.put_mute(&mute).await.unwrap();
    assert_eq!(store.mutes().await.unwrap(), std::slice::from_ref(&mute));
    drop(store);

    redis.stop();
    let restarted = sharpeyes_alerts::open_store(&config).await.unwrap();
    assert!(restarted.ping().await.is_err(), "Redis is down");
    assert_eq!(
        restarted.mutes().await.unwrap(),
        std::slice::from_ref(&mute),
        "the copy read last"
    );
    let refused = restarted
        .remove_mute(&mute.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("try again"), "{refused}");
}

/// A camera's view accepted on one node is read by every node sharing Redis, an entry
/// someone else planted that is not a time is skipped, and while Redis is down an
/// acceptance is refused (one node's memory would reach one node's cameras only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_view_reaches_every_node_through_redis() {
    let mut redis = Redis::start(None);
    let data = tempfile::tempdir().unwrap();
    let config = Arc::new(with_redis(&data, redis.port, "views"));
    let a = sharpeyes_alerts::open_store(&config).await.unwrap();
    let b = sharpeyes_alerts::open_store(&config).await.unwrap();
    assert!(b.accepted_views().await.unwrap().is_empty());
    a.accept_view(CAMERA, 1_764_000_000_000).await.unwrap();
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("views:views")
        .arg("planted")
        .arg("soon")
        .query_async(&mut conn)
        .await
        .unwrap();
    let seen = b.accepted_views().await.unwrap();
    assert_eq!(
        seen,
        [(CAMERA.to_owned(), 1_764_000_000_000)].into(),
        "node b reads node a's acceptance, without the planted entry"
    );
    a.accept_view(CAMERA, 1_764_000_100_000).await.unwrap();
    assert_eq!(b.accepted_views().await.unwrap()[CAMERA], 1_764_000_100_000);

    // The embedded store keeps them in memory.
    let memory = MemoryStore::new();
    memory.accept_view("cam-x", 7).await.unwrap();
    assert_eq!(
        memory.accepted_views().await.unwrap(),
        [("cam-x".to_owned(), 7)].into()
    );

    redis.stop();
    drop((a, b));
    let down = sharpeyes_alerts::open_store(&config).await.unwrap();
    assert!(down.ping().await.is_err(), "Redis is down");
    let refused = down
        .accept_view(CAMERA, 1_764_000_200_000)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("try again") && refused.contains("accepted views"),
        "{refused}"
    );
    assert!(down.accepted_views().await.is_err());
}

/// A verdict given after the alert has left every node's recent list (a county's alerts of a
/// busy night, judged the next morning) still keeps it for export and can mute its region:
/// the alert is kept with its issue record. A record someone else wrote under another
/// alert's id is not taken for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_judged_after_it_left_the_recent_list_is_still_kept_and_muted() {
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let config = config();
    let a = Running::start(
        config.clone(),
        redis_store(redis.port, "late", "node-a").await,
        plain(broker.port),
    )
    .await;
    let id = submit(&a.alerts, &config, "fire", None).await;
    let other = submit(&a.alerts, &config, "smoke", None).await;
    a.alerts.keep_frame(&id, b"clean frame").await;
    a.shutdown().await;
    // The shared feed keeps the newest 2000 events: an alert past them is in no node's list.
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg("late:feed")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Someone with Redis access plants the other alert's record under this one's id.
    let planted: String = redis::cmd("GET")
        .arg(format!("late:issued-alert:{other}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let forged = ulid::Ulid::new().to_string();
    let _: () = redis::cmd("SET")
        .arg(format!("late:issued-alert:{forged}"))
        .arg(&planted)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("late:issued:{forged}"))
        .arg(
            serde_json::from_str::<serde_json::Value>(&planted).unwrap()["grid"]["id"]
                .as_str()
                .unwrap(),
        )
        .query_async(&mut conn)
        .await
        .unwrap();

    let store = redis_store(redis.port, "late", "node-b").await;
    let b = Running::start(config.clone(), store.clone(), plain(broker.port)).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // one read of the (empty) feed
    assert!(
        b.alerts.recent(&Default::default()).is_empty(),
        "node b lists nothing"
    );
    let start = std::time::SystemTime::now() - Duration::from_secs(60);
    let verdict = AckRequest {
        verdict: Some(sharpeyes_alerts::Verdict::FalseAlarm),
        ..AckRequest::default()
    };
    b.alerts
        .acknowledge(&id, verdict.clone(), None)
        .await
        .unwrap()
        .expect("acknowledged");
    let kept = store.judged_since(start).await.unwrap();
    assert_eq!(kept.len(), 1, "kept for export: {kept:?}");
    assert_eq!(kept[0].alert.id, id);
    assert_eq!(kept[0].alert.hazard, "fire");
    assert_eq!(
        store.judged_frame(&id).await.unwrap().as_deref(),
        Some(&b"clean frame"[..])
    );
    let muted = b.alerts.mute(&id, None).await.expect("muted");
    assert_eq!(muted.mute.camera, CAMERA);
    assert_eq!(muted.mute.hazard, "fire");

    b.alerts
        .acknowledge(&forged, verdict, None)
        .await
        .unwrap()
        .expect("the forged id was recorded as issued");
    assert!(
        matches!(
            b.alerts.mute(&forged, None).await,
            Err(sharpeyes_alerts::MuteRefused::UnknownAlert(_))
        ),
        "another alert's record is not taken for this one"
    );
    assert_eq!(store.judged_since(start).await.unwrap().len(), 1);
    b.shutdown().await;
}
