//! Faults against the whole service, as the field makes them: a real `sharpeyes run`, a
//! simulated camera showing a fire, the real detector, a real mosquitto, and a peer on the
//! broker that floods a sensor's topic with garbage.

use std::time::{Duration, SystemTime};

use sharpeyes_ingest::simulator::SceneKind;
use sharpeyes_testkit::config::{CAMERA, GRID, GRID_TOPIC, fire_camera, service};
use sharpeyes_testkit::http::get_as;
use sharpeyes_testkit::{FaultProxy, Mosquitto, Service, Subscriber, fire_cameras};

const PREFIX: &str = "se-faults";
const TOKEN: &str = "faults-t0ken";
const FLOOD: usize = 10_000;

/// The sensor both tests send readings for, on the test grid.
fn gas_sensor() -> String {
    format!(
        "\n[[sensors]]\nid = \"gas-1\"\ntype = \"gas\"\nunit = \"%LEL\"\ngrid = \"{GRID}\"\nabove = 20.0\ninterval = \"1h\"\n"
    )
}

/// Needs `make setup` (ONNX Runtime and the models).
///
/// 10,000 bad readings on a sensor's topic over about 8 s, while the camera starts showing a
/// fire 3 s in: every reading is refused onto the dead-letter topic and counted, and the fire
/// alert still comes within a few seconds of the fire's first frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_readings_does_not_hold_back_a_fire_alert() {
    let cache = tempfile::tempdir().unwrap();
    let sim = fire_cameras(&cache, 1, "3s");
    let broker = Mosquitto::start(false, &[]);
    // Alerts and dead letters on their own subscriptions: a centre on `{PREFIX}/#` would also
    // get the flood itself, and a broker drops what queues past its limit for a slow client.
    let centre = Subscriber::connect(
        broker.port,
        "centre-faults",
        &format!("{PREFIX}/alerts/#"),
        None,
    )
    .await;
    let letters = Subscriber::connect(
        broker.port,
        "letters-faults",
        &format!("{PREFIX}/deadletter/#"),
        None,
    )
    .await;
    let flooder = Subscriber::connect(broker.port, "flooder", "flooder/#", None).await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "faults-node", broker.port, PREFIX, Some(TOKEN))
        + &fire_camera(CAMERA, &sim.url(1))
        + &gas_sensor();
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "warn");

    // The ready file waits for the service's subscriptions
    // (`a_reading_sent_the_moment_the_service_is_ready_is_heard`): the flood starts at once.
    let topic = format!("{PREFIX}/sensors/gas-1");
    let dead_letter_topic = format!("{PREFIX}/deadletter/sensors");
    let count = |m: &[sharpeyes_testkit::Message]| {
        m.iter().filter(|m| m.topic == dead_letter_topic).count()
    };

    // The flood: 10,000 readings that are not JSON, 125 every 100 ms.
    let flood = tokio::spawn(async move {
        for i in 0..FLOOD {
            flooder
                .publish(&topic, format!("{{not json {i}").as_bytes())
                .await;
            if i % 125 == 124 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let ended = SystemTime::now();
        (flooder, ended)
    });

    let alert_topic = format!("{PREFIX}/alerts/{GRID_TOPIC}/fire");
    let got = centre
        .wait_until(Duration::from_secs(60), |m| {
            m.iter().any(|m| m.topic == alert_topic)
        })
        .await;
    let alert_seen = SystemTime::now();
    let alerted = got.iter().any(|m| m.topic == alert_topic);
    let (_flooder, flood_ended) = flood.await.unwrap();
    let got = letters
        .wait_until(Duration::from_secs(60), |m| count(m) >= FLOOD)
        .await;
    let dead_letters = count(&got);
    let metrics = String::from_utf8_lossy(&get_as(svc.port(), "/metrics", TOKEN).1).into_owned();
    let process_cpu = process_cpu_seconds(svc.pid());
    let (_, log) = svc.stop(Duration::from_secs(30));
    let fire_at = sim
        .scene_log()
        .into_iter()
        .find(|c| c.scene == SceneKind::Fire)
        .map(|c| c.at);
    sim.stop();

    assert!(alerted, "no fire alert within 60 s; log:\n{log}");
    let fire_at = fire_at.expect("the fire was shown");
    assert!(
        flood_ended > fire_at,
        "the flood was over before the fire: this test would prove nothing"
    );
    let latency = alert_seen.duration_since(fire_at).unwrap_or_default();
    // A keyframe a second, two of three analysed frames to confirm: 1.3 s measured here in
    // a debug build during the flood; 10 s leaves room for a loaded machine.
    assert!(
        latency < Duration::from_secs(10),
        "fire alert after {latency:?}"
    );
    let broker_drops: Vec<String> = broker
        .log()
        .lines()
        .filter(|l| l.contains("dropped"))
        .take(5)
        .map(str::to_owned)
        .collect();
    let rejected = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sharpeyes_sensor_readings_rejected_total "))
        .and_then(|v| v.parse::<f64>().ok());
    // Which side lost any: the service (fewer rejected), or the way back (fewer reported).
    let mqtt_log: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("MQTT") || l.contains("dropped"))
        .take(5)
        .collect();
    assert_eq!(
        dead_letters, FLOOD,
        "every refused reading is reported; the service rejected {rejected:?}; the broker's log on dropped messages: {broker_drops:?}; the service's MQTT log: {mqtt_log:?}"
    );
    assert_eq!(rejected, Some(FLOOD as f64), "{metrics}");

    // Where the CPU went: every stage this run went through used some, and together they
    // used no more than the whole process did.
    let stage_cpu = |stage: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "sharpeyes_stage_cpu_seconds_total{{stage=\"{stage}\"}} "
                ))
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {stage} CPU in {metrics}"))
    };
    let stages = [
        "receive",
        "decode",
        "scale",
        "motion",
        "health",
        "preprocess",
        "inference",
        "postprocess",
        "snapshot",
        "publish",
    ];
    for stage in stages {
        assert!(stage_cpu(stage) > 0.0, "{stage} used no CPU: {metrics}");
    }
    let total: f64 = stages.iter().map(|s| stage_cpu(s)).sum();
    let shown: Vec<String> = stages
        .iter()
        .map(|s| format!("{s} {:.3}", stage_cpu(s)))
        .collect();
    eprintln!(
        "stage CPU seconds: {shown:?}; all stages {total:.2} of the process' {process_cpu:.2}"
    );
    assert!(
        total <= process_cpu,
        "the stages used {total:.2} s, more than the process' {process_cpu:.2} s"
    );
}

/// Needs `make setup` (the models).
///
/// A supervisor may send the first reading the moment the ready file appears. On a slow
/// link to the broker (every chunk held 300 ms each way), that reading must still be heard:
/// the ready file waits for the service's subscriptions, or nothing keeps the reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_sent_the_moment_the_service_is_ready_is_heard() {
    let broker = Mosquitto::start(false, &[]);
    let slow = FaultProxy::start(broker.port).await;
    slow.delay(Duration::from_millis(300));
    let letters = Subscriber::connect(
        broker.port,
        "letters-ready",
        &format!("{PREFIX}/deadletter/#"),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "ready-node", slow.port, PREFIX, Some(TOKEN)) + &gas_sensor();
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "warn");
    letters
        .publish(&format!("{PREFIX}/sensors/gas-1"), b"{first")
        .await;
    let dead_letter_topic = format!("{PREFIX}/deadletter/sensors");
    let got = letters
        .wait_until(Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic == dead_letter_topic)
        })
        .await;
    let (_, log) = svc.stop(Duration::from_secs(20));
    assert!(
        got.iter().any(|m| m.topic == dead_letter_topic),
        "the reading sent at readiness was not heard; the log:\n{log}"
    );
}

/// Needs `make setup` (the models).
///
/// A broker that lets the node in but refuses every subscription (a site's ACL, or a hostile
/// broker): the SUBACK says 0x80 for each filter. The node still starts without waiting out
/// its bound, and its log says the broker refused its subscriptions, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_the_subscriptions_is_named_in_the_log() {
    const PASSWORD: &str = "refused-pa55word";
    let (port, broker) = refusing_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let text = service(dir.path(), "refused-node", port, PREFIX, Some(TOKEN)).replace(
        &format!("prefix = \"{PREFIX}\""),
        &format!("prefix = \"{PREFIX}\"\nusername = \"sharpeyes\"\npassword = \"{PASSWORD}\""),
    ) + &gas_sensor();
    let svc = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "warn");
    let (_, log) = svc.stop(Duration::from_secs(20));
    broker.abort();
    assert!(
        log.contains("the broker refused subscriptions of this node"),
        "{log}"
    );
    assert!(
        !log.contains("writing the ready file before the broker took"),
        "a refusal is an answer: no need to wait out the bound\n{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
}

/// An MQTT 3.1.1 broker on a free loopback port that accepts every connection and every
/// publish, and refuses every subscription (SUBACK 0x80 per filter). Ends with its task.
async fn refusing_broker() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut peer, _)) = listener.accept().await {
            tokio::spawn(async move {
                // At most 1000 packets a connection, each at most 1 MiB.
                for _ in 0..1000 {
                    let mut first = [0u8; 1];
                    if peer.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    let (mut len, mut shift) = (0usize, 0);
                    for _ in 0..4 {
                        let mut b = [0u8; 1];
                        if peer.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        len |= usize::from(b[0] & 0x7f) << shift;
                        shift += 7;
                        if b[0] & 0x80 == 0 {
                            break;
                        }
                    }
                    if len > 1 << 20 {
                        return;
                    }
                    let mut body = vec![0u8; len];
                    if peer.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let reply = match first[0] >> 4 {
                        1 => vec![0x20, 2, 0, 0],
                        // QoS 1 publishes get their PUBACK (packet id after the topic).
                        3 if first[0] & 0x06 == 0x02 && body.len() >= 2 => {
                            let at = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
                            match body.get(at..at + 2) {
                                Some(id) => vec![0x40, 2, id[0], id[1]],
                                None => return,
                            }
                        }
                        8 if body.len() >= 2 => {
                            // Filters: a 2-byte length, the filter, a QoS byte each.
                            let (mut at, mut filters) = (2, 0u8);
                            while at + 2 <= body.len() {
                                at += 3 + usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
                                filters += 1;
                            }
                            let mut suback = vec![0x90, 2 + filters, body[0], body[1]];
                            suback.extend(std::iter::repeat_n(0x80, usize::from(filters)));
                            suback
                        }
                        12 => vec![0xd0, 0],
                        _ => continue,
                    };
                    if peer.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// utime + stime of process `pid`, in seconds (Linux `/proc`).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc is there");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on every Linux we run on.
    ticks / 100.0
}
