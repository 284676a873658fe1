//! The device against a GB/T 28181 platform of the test kit on loopback UDP and TCP: Digest
//! registration checked by the platform, keepalives, alarms read as WVP reads them, a
//! Catalog longer than one message, and a platform that goes away and comes back.

use std::time::Duration;

use sharpeyes_gb28181::{Alarm, Channel, Charset, Protocol, Settings, State, Upstream, element};
use sharpeyes_testkit::SipPlatform;

const REALM: &str = "3213220000";
const SERVER: &str = "32132200002000000001";
const DEVICE: &str = "32132200001180000001";
const PASSWORD: &str = "s3cret-Pa55";

fn settings(platform: &SipPlatform, password: &str) -> Settings {
    settings_over(platform, password, Protocol::Udp)
}

fn settings_over(platform: &SipPlatform, password: &str, protocol: Protocol) -> Settings {
    Settings {
        server_id: SERVER.into(),
        server_domain: REALM.into(),
        server: platform.addr(),
        protocol,
        device_id: DEVICE.into(),
        password: password.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        expires: Duration::from_secs(3600),
        keepalive: Duration::from_secs(1),
        charset: Charset::Gb2312,
    }
}

async fn wait_state(upstream: &Upstream, limit: Duration, want: impl Fn(&State) -> bool) -> State {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = upstream.state();
        if want(&state) || tokio::time::Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The device started against `platform` with the right password, once it has registered.
async fn registered_device(platform: &SipPlatform) -> Upstream {
    let upstream = Upstream::start(settings(platform, PASSWORD)).await.unwrap();
    let state = wait_state(&upstream, Duration::from_secs(10), |s| {
        *s == State::Registered
    })
    .await;
    assert_eq!(state, State::Registered);
    upstream
}

fn fire(n: usize) -> Alarm {
    Alarm {
        alert_id: format!("alert-{n}"),
        device_id: "32132200001320000001".into(),
        priority: 1,
        method: 5,
        time: "2026-12-03T15:04:05".into(),
        description: format!("fire {n}: 东元超市门口, 沭阳县/沭城街道/东元社区/第七网格"),
        alarm_type: Some(11),
        event_type: None,
        location: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_digest_keeps_alive_and_raises_alarms_as_wvp_reads_them() {
    let platform = SipPlatform::start(REALM, PASSWORD).await;
    let upstream = Upstream::start(settings(&platform, PASSWORD))
        .await
        .unwrap();
    let state = wait_state(&upstream, Duration::from_secs(10), |s| {
        *s == State::Registered
    })
    .await;
    assert_eq!(state, State::Registered);
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| s.keepalives >= 2)
        .await;
    assert_eq!(seen.registered, 1, "{seen:?}");
    assert_eq!(seen.usernames, [DEVICE]);
    assert!(!seen.password_seen, "the password went over the wire");
    assert!(seen.keepalives >= 2, "{seen:?}");

    assert!(upstream.send(fire(1)));
    let mut intrusion = fire(2);
    intrusion.alarm_type = Some(6);
    intrusion.event_type = Some(1);
    assert!(upstream.send(intrusion));
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| s.alarms.len() >= 2)
        .await;
    assert_eq!(seen.dropped, 0);
    let first = &seen.alarms[0];
    assert_eq!(first.device_id, "32132200001320000001");
    assert_eq!((first.priority.as_str(), first.method.as_str()), ("1", "5"));
    assert_eq!(first.time, "2026-12-03T15:04:05");
    assert_eq!(first.alarm_type.as_deref(), Some("11"));
    assert!(
        first.description.contains("东元超市门口"),
        "{}",
        first.description
    );
    assert_eq!(seen.alarms[1].alarm_type.as_deref(), Some("6"));
    assert_eq!(seen.alarms[1].event_type.as_deref(), Some("1"));
    let delivered = upstream
        .stats()
        .delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(delivered, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_the_realm_named_and_the_password_not() {
    let platform = SipPlatform::start(REALM, PASSWORD).await;
    let upstream = Upstream::start(settings(&platform, "wrong-password"))
        .await
        .unwrap();
    let state = wait_state(&upstream, Duration::from_secs(10), |s| {
        matches!(s, State::Refused(_))
    })
    .await;
    let State::Refused(why) = state else {
        panic!("not refused: {state:?}");
    };
    assert!(why.contains(REALM) && why.contains(DEVICE), "{why}");
    assert!(why.contains("password"), "{why}");
    assert!(
        !why.contains("wrong-password") && !why.contains(PASSWORD),
        "{why}"
    );
    assert_eq!(platform.seen().registered, 0);
    // Alarms wait rather than go to a platform that has not accepted the device.
    assert!(upstream.send(fire(1)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(platform.seen().alarms.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_longer_than_one_message_comes_in_pages_that_add_up() {
    let platform = SipPlatform::start(REALM, PASSWORD).await;
    let channels: Vec<Channel> = (1..=10)
        .map(|i| Channel {
            id: format!("321322000013200000{i:02}"),
            name: format!("东元超市门口 {i}"),
            civil_code: "321322".into(),
            online: i % 3 != 0,
            location: None,
        })
        .collect();
    let listed = channels.clone();
    let upstream = registered_device(&platform).await;
    upstream.set_channels(move || listed.clone());
    platform.query("Catalog", 42, DEVICE).await;
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| s.responses.len() >= 3)
        .await;
    assert_eq!(seen.responses.len(), 3, "{:?}", seen.responses);
    let mut ids = Vec::new();
    for xml in &seen.responses {
        assert_eq!(element(xml, "SN").as_deref(), Some("42"));
        assert_eq!(element(xml, "SumNum").as_deref(), Some("10"));
        let items = xml.matches("<Item>").count();
        assert!(
            xml.contains(&format!("<DeviceList Num=\"{items}\">")),
            "{xml}"
        );
        for item in xml.split("<Item>").skip(1) {
            ids.push(element(item, "DeviceID").unwrap());
            assert_eq!(element(item, "ParentID").as_deref(), Some(DEVICE));
            assert_eq!(element(item, "CivilCode").as_deref(), Some("321322"));
        }
    }
    ids.sort();
    let want: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, want);
    let third = seen
        .responses
        .iter()
        .flat_map(|x| x.split("<Item>").skip(1))
        .find(|i| i.contains("<DeviceID>32132200001320000003<"))
        .unwrap();
    assert_eq!(element(third, "Status").as_deref(), Some("OFF"));
    assert!(third.contains("东元超市门口 3"));
}

/// DeviceInfo and DeviceStatus, as WVP asks them after a registration: answered with the
/// query's SN, the device's id, its channel count and its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_info_and_status_queries_are_answered_with_their_sn() {
    let platform = SipPlatform::start(REALM, PASSWORD).await;
    let channels: Vec<Channel> = (1..=3)
        .map(|i| Channel {
            id: format!("321322000013200000{i:02}"),
            name: format!("camera {i}"),
            civil_code: "321322".into(),
            online: true,
            location: None,
        })
        .collect();
    let upstream = registered_device(&platform).await;
    upstream.set_channels(move || channels.clone());
    platform.query("DeviceInfo", 7, DEVICE).await;
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| !s.responses.is_empty())
        .await;
    let info = seen.responses.first().expect("a DeviceInfo response");
    assert_eq!(element(info, "CmdType").as_deref(), Some("DeviceInfo"));
    assert_eq!(element(info, "SN").as_deref(), Some("7"));
    assert_eq!(element(info, "DeviceID").as_deref(), Some(DEVICE));
    assert_eq!(element(info, "Result").as_deref(), Some("OK"));
    assert_eq!(element(info, "Channel").as_deref(), Some("3"));

    platform.query("DeviceStatus", 8, DEVICE).await;
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| s.responses.len() >= 2)
        .await;
    let status = seen.responses.get(1).expect("a DeviceStatus response");
    assert_eq!(element(status, "CmdType").as_deref(), Some("DeviceStatus"));
    assert_eq!(element(status, "SN").as_deref(), Some("8"));
    assert_eq!(element(status, "DeviceID").as_deref(), Some(DEVICE));
    assert_eq!(element(status, "Online").as_deref(), Some("ONLINE"));
    assert_eq!(element(status, "Status").as_deref(), Some("OK"));

    // A query for something the device does not know gets no answer, not a guess.
    platform.query("RecordInfo", 9, DEVICE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(platform.seen().responses.len(), 2);
}

/// A registration is renewed before it runs out: at 80% of the time the platform granted
/// (5 s at the least), through the Digest challenge again, staying registered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_renewed_before_it_expires() {
    let platform = SipPlatform::start(REALM, PASSWORD).await;
    let mut short = settings(&platform, PASSWORD);
    short.expires = Duration::from_secs(7);
    let upstream = Upstream::start(short).await.unwrap();
    let first = platform
        .wait_until(Duration::from_secs(10), |s| s.registered >= 1)
        .await;
    assert_eq!(first.registered, 1);
    let granted = std::time::Instant::now();
    let renewed = platform
        .wait_until(Duration::from_secs(10), |s| s.registered >= 2)
        .await;
    let after = granted.elapsed();
    assert!(renewed.registered >= 2, "no renewal within 10 s");
    assert!(
        after < Duration::from_secs(7),
        "renewed {after:?} after registering, past the 7 s granted"
    );
    assert_eq!(renewed.refused, 0);
    assert_eq!(upstream.state(), State::Registered);
}

/// The platform away for 30 s: the alarm raised meanwhile arrives once it is back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_raised_while_the_platform_is_away_arrives_once_it_is_back() {
    let mut platform = SipPlatform::start(REALM, PASSWORD).await;
    let upstream = registered_device(&platform).await;
    platform.stop();
    assert!(upstream.send(fire(7)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(platform.seen().alarms.is_empty());
    platform.start_again().await;
    let seen = platform
        .wait_until(Duration::from_secs(60), |s| !s.alarms.is_empty())
        .await;
    assert_eq!(seen.alarms.len(), 1, "{seen:?}");
    assert!(seen.alarms[0].description.starts_with("fire 7"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(platform.seen().alarms.len(), 1, "the alarm arrived twice");
}

/// Three keepalives unanswered (WVP marks a device offline after three): the device takes
/// itself offline and registers again as soon as the platform answers, without waiting for
/// its 3600 s registration to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_unanswered_keepalives_take_the_device_offline_until_it_registers_again() {
    let mut platform = SipPlatform::start(REALM, PASSWORD).await;
    let upstream = registered_device(&platform).await;
    let registrations = platform.seen().registered;
    platform.stop();
    // A keepalive's transaction gives up after 64 T1 (32 s); one a second goes out.
    let state = wait_state(&upstream, Duration::from_secs(45), |s| {
        *s == State::Unreachable
    })
    .await;
    assert_eq!(state, State::Unreachable);
    let missed = upstream
        .stats()
        .keepalives_missed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(missed >= 3, "{missed} keepalives missed");
    platform.start_again().await;
    let seen = platform
        .wait_until(Duration::from_secs(20), |s| s.registered > registrations)
        .await;
    assert!(
        seen.registered > registrations,
        "registered {} times, {registrations} before the outage",
        seen.registered
    );
    let state = wait_state(&upstream, Duration::from_secs(10), |s| {
        *s == State::Registered
    })
    .await;
    assert_eq!(state, State::Registered);
}

/// Someone else on the network: a forged Catalog query and junk get no answer (no peer's
/// bytes echoed, the channel list not given away), and the device keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_from_anyone_but_the_platform_are_ignored() {
    let platform = SipPlatform::start(REALM, PASSWORD).await;
    let upstream = Upstream::start(settings(&platform, PASSWORD))
        .await
        .unwrap();
    upstream.set_channels(|| {
        vec![Channel {
            id: "32132200001320000001".into(),
            name: "secret camera".into(),
            civil_code: "321322".into(),
            online: true,
            location: None,
        }]
    });
    wait_state(&upstream, Duration::from_secs(10), |s| {
        *s == State::Registered
    })
    .await;
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forged = format!(
        "MESSAGE sip:{DEVICE}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKx\r\nFrom: <sip:{SERVER}@{REALM}>;tag=x\r\nTo: <sip:{DEVICE}@{REALM}>\r\nCall-ID: forged\r\nCSeq: 1 MESSAGE\r\nContent-Length: 60\r\n\r\n<Query><CmdType>Catalog</CmdType><SN>1</SN></Query>        ",
        upstream.local_addr().unwrap(),
        stranger.local_addr().unwrap()
    );
    for datagram in [forged.as_bytes(), b"\x00\xffjunk", &[b'A'; 9000][..]] {
        stranger
            .send_to(datagram, upstream.local_addr().unwrap())
            .await
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    let answer =
        tokio::time::timeout(Duration::from_millis(800), stranger.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "the device answered a stranger");
    assert!(upstream.send(fire(3)));
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| !s.alarms.is_empty())
        .await;
    assert_eq!(seen.alarms.len(), 1);
    assert!(seen.responses.is_empty(), "{:?}", seen.responses);
}

/// Over TCP: registration, an alarm, a Catalog over the device's own connection; then the
/// platform restarts, the connection drops, and the device connects and registers again
/// and delivers the alarm raised meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_device_registers_alarms_and_reconnects_after_a_platform_restart() {
    let mut platform = SipPlatform::start_tcp(REALM, PASSWORD).await;
    let upstream = Upstream::start(settings_over(&platform, PASSWORD, Protocol::Tcp))
        .await
        .unwrap();
    upstream.set_channels(|| {
        vec![Channel {
            id: "32132200001320000001".into(),
            name: "东元超市门口".into(),
            civil_code: "321322".into(),
            online: true,
            location: Some((118.77, 34.13)),
        }]
    });
    let state = wait_state(&upstream, Duration::from_secs(10), |s| {
        *s == State::Registered
    })
    .await;
    assert_eq!(state, State::Registered);
    assert!(upstream.send(fire(1)));
    platform.query("Catalog", 5, DEVICE).await;
    let seen = platform
        .wait_until(Duration::from_secs(5), |s| {
            s.alarms.len() == 1 && !s.responses.is_empty() && s.keepalives >= 1
        })
        .await;
    assert_eq!(seen.alarms.len(), 1, "{seen:?}");
    assert!(seen.responses[0].contains("<Longitude>118.770000</Longitude>"));
    assert!(seen.keepalives >= 1);

    platform.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(upstream.send(fire(2)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    platform.start_again().await;
    let seen = platform
        .wait_until(Duration::from_secs(30), |s| s.alarms.len() >= 2)
        .await;
    assert_eq!(seen.registered, 2, "registered again: {seen:?}");
    assert_eq!(seen.alarms.len(), 2, "{seen:?}");
    assert!(seen.alarms[1].description.starts_with("fire 2"));
}
