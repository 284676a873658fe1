//! Every parser that faces the network, fed arbitrary and mangled input: sensor readings
//! (single and batched), the configuration and the API's camera entries (TOML), GB/T 28181
//! device ids, camera URLs and the times inside readings. None may panic; a refusal must say
//! why in bounded, printable text; whatever is accepted must be within its bounds; no URL
//! password may survive redaction.
//!
//! Bounded: a fixed number of cases per property, seeded per property so a failure repeats
//! (`SHARPEYES_SEED=N` explores other inputs).

use std::path::Path;
use std::time::{Duration, SystemTime};

use sharpeyes_config::gbt28181::DeviceId;
use sharpeyes_config::{Config, SecretUrl, redact_url};
use sharpeyes_ingest::SensorRegistry;
use sharpeyes_testkit::hostile::{Hostile, check};

const CASES: usize = 3000;

const SENSORS: &str = concat!(
    "[node]\nid = \"hostile-node\"\n",
    include_str!("../fixtures/config/grids.toml"),
    r#"
[[sensors]]
id = "smoke-dy-0001"
type = "smoke"
unit = "%obs/m"
grid = "321322-001-003-07"
above = 4.0
severity = "critical"

[[sensors]]
id = "water-shuhe-01"
type = "water_level"
unit = "m"
grid = "321322-001-003-07"
topic = "gateway/shuhe/level"
above = 5.2
severity = "major"
"#
);

const READING: &str = r#"{"sensor_id":"smoke-dy-0001","type":"smoke","value":2.5,"unit":"%obs/m","time":"2026-12-02T10:00:00Z"}"#;
const KEYS: &[&str] = &["sensor_id", "id", "type", "value", "unit", "time"];

fn parse_config(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    Config::parse(text, Path::new("hostile.toml"), &[dir.path().to_owned()])
        .map(|l| l.config)
        .map_err(|p| p.to_string())
}

/// What a refusal may say: bounded, one line, no control characters a log or terminal acts on.
fn assert_printable(what: &str, text: &str) {
    assert!(!text.is_empty(), "{what}: an empty reason");
    assert!(
        text.len() <= 1024,
        "{what}: a reason of {} bytes",
        text.len()
    );
    assert!(
        !text.chars().any(char::is_control),
        "{what}: control characters in {text:?}"
    );
}

#[test]
fn sensor_messages_never_panic_and_every_refusal_says_why_briefly() {
    let config = parse_config(SENSORS).unwrap_or_else(|e| panic!("{e}"));
    let registry = SensorRegistry::new(&config, "se");
    let topics = [
        "se/sensors/smoke-dy-0001",
        "se/sensors/water-shuhe-01",
        "gateway/shuhe/level",
        "se/sensors/nobody",
    ];
    let now = SystemTime::now();
    let generate = |h: &mut Hostile| -> Vec<u8> {
        match h.pick(&[0, 1, 2, 3]) {
            0 => h.bytes(256),
            1 => h.mangle(READING.as_bytes()),
            2 => h.json(4, KEYS).to_string().into_bytes(),
            _ => {
                // A batch of plausible readings, each with one field made hostile.
                let items: Vec<String> = (0..*h.pick(&[1, 2, 5, 40]))
                    .map(|_| {
                        let mut reading: serde_json::Value = serde_json::from_str(READING).unwrap();
                        let key = *h.pick(KEYS);
                        reading[key] = h.json(1, &[]);
                        reading.to_string()
                    })
                    .collect();
                format!("[{}]", items.join(",")).into_bytes()
            }
        }
    };
    let mut topic = 0;
    check("sensor messages", CASES, generate, |payload| {
        topic = (topic + 1) % topics.len();
        let (readings, rejected) = registry.parse(topics[topic], payload, now);
        for r in &rejected {
            assert_printable("a refused reading", &r.reason);
            if let Some(id) = &r.sensor_id {
                assert!(
                    id.chars().count() <= 65 && !id.chars().any(char::is_control),
                    "a refused reading's sensor id as sent on: {id:?}"
                );
            }
        }
        for r in &readings {
            assert!(r.value.is_finite());
            assert!(config.sensors.iter().any(|s| s.id == r.sensor_id));
            assert!(r.time <= now + Duration::from_secs(300), "{:?}", r.time);
            assert!(r.time + Duration::from_secs(86_400) >= now, "{:?}", r.time);
        }
    });
}

#[test]
fn configuration_text_never_panics_and_each_error_names_its_place() {
    let valid = format!(
        "{SENSORS}\n{}\n{}",
        include_str!("../fixtures/config/fire.toml"),
        sharpeyes_testkit::config::fire_camera(
            "32132200531320000001",
            "rtsp://127.0.0.1:8554/cam1"
        )
    );
    check(
        "configuration text",
        CASES / 3,
        |h| h.mangle(valid.as_bytes()),
        |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            if let Err(problems) = parse_config(text) {
                assert!(
                    problems.contains("hostile.toml"),
                    "a problem that names no place: {problems}"
                );
            }
        },
    );
}

#[test]
fn device_ids_never_panic_and_only_twenty_digits_decode() {
    check(
        "GB/T 28181 ids",
        CASES,
        |h| match h.pick(&[0, 1]) {
            0 => h.mangle(b"32132200531320000001"),
            _ => h.bytes(24),
        },
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            match DeviceId::parse(&text) {
                Ok(id) => {
                    assert!(
                        id.as_str().len() == 20 && id.as_str().bytes().all(|b| b.is_ascii_digit())
                    );
                    let _ = (id.region_code(), id.province_name());
                }
                Err(e) => assert!(!e.0.is_empty()),
            }
        },
    );
}

#[test]
fn camera_urls_never_panic_and_no_password_survives_redaction() {
    const PASSWORD: &str = "Pa55w0rdXYZ";
    let samples = [
        format!("rtsp://admin:{PASSWORD}@10.0.0.1:554/Streaming/Channels/101"),
        format!("rtsp://10.0.0.1/cam?user=admin&password={PASSWORD}"),
        "rtsp://admin:${CAM_PASS}@10.0.0.1:554/h264".to_owned(),
        "mqtts://sharpeyes:${file:/run/credentials/mqtt}@broker:8883".to_owned(),
    ];
    check(
        "camera URLs",
        CASES,
        |h| {
            let sample = h.pick(&samples).clone();
            h.mangle(sample.as_bytes())
        },
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let redacted = redact_url(&text);
            // A password a URL parser would find in the user-info must be gone from the
            // redacted text (it may still be written elsewhere, say in the path).
            let gone =
                |shown: &str| shown.matches(PASSWORD).count() < text.matches(PASSWORD).count();
            // (Text with control characters is refused as a URL below: a URL parser drops
            // line breaks, so it would see a password where the text shows none.)
            let in_userinfo = !text.chars().any(char::is_control)
                && url::Url::parse(&text).is_ok_and(|u| u.password() == Some(PASSWORD));
            if in_userinfo {
                assert!(gone(&redacted), "{text:?} -> {redacted:?}");
            }
            match SecretUrl::parse(&text) {
                Ok(url) => {
                    assert!(!text.chars().any(char::is_control), "{text:?} was taken");
                    let shown = url.to_string();
                    if in_userinfo {
                        assert!(gone(&shown), "{text:?} shows as {shown:?}");
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!e.is_empty());
                    // What does not parse is shown without anything before its last `@`.
                    let after_the_last_at = text
                        .rfind('@')
                        .map_or(text.as_ref(), |at| &text[at..])
                        .matches(PASSWORD)
                        .count();
                    assert!(
                        e.matches(PASSWORD).count() <= after_the_last_at,
                        "the error quotes the password: {e}"
                    );
                }
            }
        },
    );
}
