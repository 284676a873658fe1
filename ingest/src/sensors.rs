//! Sensor readings in: JSON messages checked against the `[[sensors]]` registry.
//!
//! A message is one reading (an object) or a batch (an array of them). Each reading names its
//! sensor (`sensor_id`, or the sensor whose topic it came on), `type`, `value`, `unit` and
//! optionally `time` (RFC 3339 or Unix milliseconds; absent: when it arrived). A reading for
//! an unknown sensor, of the wrong type or unit, outside what the quantity can physically
//! be, or a message that is not JSON or too large, is rejected with a reason for the
//! dead-letter topic; the others in the same batch still count.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sharpeyes_config::schema::Readings;
use sharpeyes_config::{Config, Sensor};

/// Larger messages are rejected unread: a gauge's reading is a few hundred bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Readings per batch message.
pub const MAX_BATCH: usize = 1000;

/// A reading that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    pub sensor_id: String,
    pub kind: String,
    pub value: f64,
    pub unit: String,
    pub time: SystemTime,
}

/// Why a message or one reading in it was refused; goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub sensor_id: Option<String>,
    pub reason: String,
}

/// The configured sensors, by id and by topic.
pub struct SensorRegistry {
    by_id: HashMap<String, Sensor>,
    by_topic: HashMap<String, String>,
    prefix: String,
    /// How far a reading's time may be from its arrival.
    window: Readings,
}

impl SensorRegistry {
    pub fn new(config: &Config, prefix: &str) -> Self {
        let by_id: HashMap<String, Sensor> = config
            .sensors
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        let by_topic = config
            .sensors
            .iter()
            .map(|s| (topic_of(s, prefix), s.id.clone()))
            .collect();
        Self {
            by_id,
            by_topic,
            prefix: prefix.to_owned(),
            window: config.readings,
        }
    }

    /// The MQTT filters that cover every sensor's topic.
    pub fn subscriptions(&self) -> Vec<String> {
        let default = format!("{}/sensors/+", self.prefix);
        let mut filters = vec![default];
        for (topic, id) in &self.by_topic {
            if *topic != format!("{}/sensors/{id}", self.prefix) {
                filters.push(topic.clone());
            }
        }
        filters.sort();
        filters.dedup();
        filters
    }

    pub fn sensor(&self, id: &str) -> Option<&Sensor> {
        self.by_id.get(id)
    }

    /// Parses and checks one message that arrived on `topic` at `received`.
    pub fn parse(
        &self,
        topic: &str,
        payload: &[u8],
        received: SystemTime,
    ) -> (Vec<SensorReading>, Vec<Rejected>) {
        let reject = |reason: String| {
            (
                Vec::new(),
                vec![Rejected {
                    sensor_id: None,
                    reason,
                }],
            )
        };
        if payload.len() > MAX_MESSAGE_BYTES {
            return reject(format!(
                "message of {} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
                payload.len()
            ));
        }
        let value: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return reject(format!("not JSON: {e}")),
        };
        let topic_sensor = self.by_topic.get(topic).map(String::as_str);
        let items = match value {
            serde_json::Value::Array(items) if items.len() > MAX_BATCH => {
                return reject(format!(
                    "batch of {} readings is over the limit of {MAX_BATCH}",
                    items.len()
                ));
            }
            serde_json::Value::Array(items) => items,
            one @ serde_json::Value::Object(_) => vec![one],
            _ => return reject("a reading must be a JSON object, or an array of them".into()),
        };
        let mut readings = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for item in items {
            match self.check(item, topic_sensor, received) {
                Ok(r) => readings.push(r),
                Err(r) => rejected.push(r),
            }
        }
        (readings, rejected)
    }

    fn check(
        &self,
        item: serde_json::Value,
        topic_sensor: Option<&str>,
        received: SystemTime,
    ) -> Result<SensorReading, Rejected> {
        let wire: Wire = serde_json::from_value(item).map_err(|e| Rejected {
            sensor_id: None,
            reason: format!(
                "not a reading ({}); expected sensor_id, type, value, unit, time",
                peer_text(&e.to_string(), 160)
            ),
        })?;
        let id = match (wire.sensor_id.as_deref(), topic_sensor) {
            (Some(id), Some(t)) if id != t => {
                let id = peer_text(id, 64);
                return Err(Rejected {
                    reason: format!("reading for sensor `{id}` arrived on the topic of `{t}`"),
                    sensor_id: Some(id),
                });
            }
            (Some(id), _) | (None, Some(id)) => id.to_owned(),
            (None, None) => {
                return Err(Rejected {
                    sensor_id: None,
                    reason: "no sensor_id, and the topic is no sensor's".into(),
                });
            }
        };
        let fail = |reason: String| Rejected {
            sensor_id: Some(id.clone()),
            reason,
        };
        let Some(sensor) = self.by_id.get(&id) else {
            let id = peer_text(&id, 64);
            return Err(Rejected {
                reason: format!("unknown sensor `{id}`: add it to [[sensors]]"),
                sensor_id: Some(id),
            });
        };
        if wire.kind != sensor.kind {
            return Err(fail(format!(
                "sensor `{id}` is configured as type `{}`, the reading says `{}`",
                sensor.kind,
                peer_text(&wire.kind, 64)
            )));
        }
        if wire.unit != sensor.unit {
            return Err(fail(format!(
                "sensor `{id}` reports in `{}`, the reading says `{}`",
                sensor.unit,
                peer_text(&wire.unit, 64)
            )));
        }
        if !wire.value.is_finite() {
            return Err(fail(format!("value {} is not a number", wire.value)));
        }
        if let Some((lo, hi)) = physical_range(&sensor.kind, &sensor.unit) {
            if !(lo..=hi).contains(&wire.value) {
                return Err(fail(format!(
                    "{} {} is outside what a {} sensor can read ({lo} to {hi})",
                    wire.value, sensor.unit, sensor.kind
                )));
            }
        }
        let time = match &wire.time {
            None => received,
            Some(Time::Millis(ms)) => SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_millis(*ms))
                .ok_or_else(|| fail(format!("time {ms} is not a date")))?,
            Some(Time::Text(t)) => humantime::parse_rfc3339_weak(t)
                .map_err(|e| fail(format!("time `{}` is not RFC 3339 ({e})", peer_text(t, 64))))?,
        };
        // Said by the raw value as sent: a time far off may not even print as a date.
        let shown = || match &wire.time {
            Some(Time::Millis(ms)) => ms.to_string(),
            Some(Time::Text(t)) => format!("`{}`", peer_text(t, 64)),
            None => String::new(),
        };
        if let Ok(ahead) = time.duration_since(received)
            && ahead > self.window.max_ahead
        {
            return Err(fail(format!(
                "time {} is {} ahead of this node's clock (at most {}: [readings] max_ahead); check the gateway's clock",
                shown(),
                humantime::format_duration(Duration::from_secs(ahead.as_secs())),
                humantime::format_duration(self.window.max_ahead)
            )));
        }
        if let Ok(behind) = received.duration_since(time)
            && behind > self.window.max_behind
        {
            return Err(fail(format!(
                "time {} is {} behind this node's clock (at most {}: [readings] max_behind)",
                shown(),
                humantime::format_duration(Duration::from_secs(behind.as_secs())),
                humantime::format_duration(self.window.max_behind)
            )));
        }
        Ok(SensorReading {
            sensor_id: id,
            kind: wire.kind,
            value: wire.value,
            unit: wire.unit,
            time,
        })
    }
}

/// A peer's text as a reason may quote it: at most `max` characters, control characters
/// escaped, so that a dead letter or a log line cannot be stretched or forged with it.
fn peer_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for c in s.chars() {
        let escaped = c.is_control().then(|| c.escape_default());
        let width = escaped.clone().map_or(1, Iterator::count);
        if shown + width > max {
            out.push('…');
            break;
        }
        shown += width;
        match escaped {
            Some(e) => out.extend(e),
            None => out.push(c),
        }
    }
    out
}

/// `{prefix}/sensors/{id}` unless the sensor names its own topic.
pub fn topic_of(sensor: &Sensor, prefix: &str) -> String {
    sensor
        .topic
        .clone()
        .unwrap_or_else(|| format!("{prefix}/sensors/{}", sensor.id))
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default, alias = "id")]
    sensor_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    value: f64,
    unit: String,
    #[serde(default)]
    time: Option<Time>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Time {
    Millis(u64),
    Text(String),
}

/// What a quantity can physically be, for the common types and units: a reading outside is
/// a broken sensor or a mislabelled message, never a hazard.
fn physical_range(kind: &str, unit: &str) -> Option<(f64, f64)> {
    Some(match (kind, unit) {
        ("temperature", "°C" | "C" | "celsius") => (-90.0, 1500.0),
        ("smoke", "%" | "%obs/m" | "%/m") => (0.0, 100.0),
        ("smoke", "dB/m") => (0.0, 10.0),
        ("gas", "%LEL") => (0.0, 100.0),
        ("gas", "ppm") => (0.0, 1_000_000.0),
        ("water_level", "m") => (-100.0, 1000.0),
        ("water_level", "cm") => (-10_000.0, 100_000.0),
        ("humidity", "%" | "%RH") => (0.0, 100.0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[[grids]]
id = "321322"
name = "沭阳县"

[[sensors]]
id = "smoke-001"
type = "smoke"
unit = "%"
grid = "321322"
above = 10.0

[[sensors]]
id = "river-1"
type = "water_level"
unit = "m"
grid = "321322"
above = 4.5
topic = "county/hydrology/river-1"
"#;

    fn registry() -> SensorRegistry {
        let config = Config::parse(CONFIG, Path::new("sensors.toml"), &[])
            .unwrap_or_else(|p| panic!("{p}"))
            .config;
        SensorRegistry::new(&config, "sy")
    }

    fn reasons(r: &[Rejected]) -> Vec<&str> {
        r.iter().map(|r| r.reason.as_str()).collect()
    }

    #[test]
    fn readings_parse_singly_and_in_batches() {
        let reg = registry();
        let now = humantime::parse_rfc3339("2026-11-23T08:00:05Z").unwrap();
        let (ok, bad) = reg.parse(
            "sy/sensors/smoke-001",
            br#"{"type":"smoke","value":12.5,"unit":"%","time":"2026-11-23T08:00:00Z"}"#,
            now,
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok[0].sensor_id, "smoke-001");
        assert_eq!(ok[0].value, 12.5);
        assert_eq!(
            humantime::format_rfc3339(ok[0].time).to_string(),
            "2026-11-23T08:00:00Z"
        );

        let batch = br#"[
            {"sensor_id":"smoke-001","type":"smoke","value":1,"unit":"%","time":1795420800000},
            {"sensor_id":"river-1","type":"water_level","value":3.2,"unit":"m"},
            {"sensor_id":"ghost","type":"smoke","value":1,"unit":"%"}
        ]"#;
        let (ok, bad) = reg.parse("sy/sensors/batch", batch, now);
        assert_eq!(ok.len(), 2, "{bad:?}");
        assert_eq!(ok[1].time, now, "no time: when it arrived");
        assert_eq!(bad.len(), 1);
        assert!(bad[0].reason.contains("unknown sensor `ghost`"), "{bad:?}");

        // A sensor's own topic names it.
        let (ok, _) = reg.parse(
            "county/hydrology/river-1",
            br#"{"type":"water_level","value":4.9,"unit":"m"}"#,
            now,
        );
        assert_eq!(ok[0].sensor_id, "river-1");
        assert_eq!(
            reg.subscriptions(),
            ["county/hydrology/river-1", "sy/sensors/+"]
        );
    }

    #[test]
    fn bad_readings_are_rejected_with_the_reason() {
        let reg = registry();
        let now = SystemTime::now();
        let cases: [(&str, &[u8], &str); 8] = [
            ("sy/sensors/smoke-001", b"smoke!", "not JSON"),
            ("sy/sensors/smoke-001", b"42", "must be a JSON object"),
            (
                "sy/sensors/smoke-001",
                br#"{"type":"gas","value":1,"unit":"%"}"#,
                "configured as type `smoke`",
            ),
            (
                "sy/sensors/smoke-001",
                br#"{"type":"smoke","value":1,"unit":"ppm"}"#,
                "reports in `%`",
            ),
            (
                "sy/sensors/smoke-001",
                br#"{"type":"smoke","value":180,"unit":"%"}"#,
                "outside what a smoke sensor can read",
            ),
            (
                "sy/sensors/smoke-001",
                br#"{"sensor_id":"river-1","type":"water_level","value":1,"unit":"m"}"#,
                "arrived on the topic of `smoke-001`",
            ),
            (
                "sy/sensors/smoke-001",
                br#"{"type":"smoke","value":"high","unit":"%"}"#,
                "not a reading",
            ),
            (
                "sy/sensors/smoke-001",
                br#"{"type":"smoke","value":1,"unit":"%","time":"yesterday"}"#,
                "not RFC 3339",
            ),
        ];
        for (topic, payload, want) in cases {
            let (ok, bad) = reg.parse(topic, payload, now);
            assert!(ok.is_empty(), "{}", String::from_utf8_lossy(payload));
            assert!(
                bad.len() == 1 && bad[0].reason.contains(want),
                "{}: {:?}",
                String::from_utf8_lossy(payload),
                reasons(&bad)
            );
        }
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        let (_, bad) = reg.parse("sy/sensors/smoke-001", &big, now);
        assert!(bad[0].reason.contains("over the"), "{bad:?}");
    }

    /// Times a stranger or a broken gateway sends: year 10000 (which no date formatter can
    /// print), the end of u64 milliseconds (which overflows a time), an hour ahead, two days
    /// behind. Each is refused with why, by the raw value; none panics.
    #[test]
    fn times_far_from_the_arrival_are_refused_without_printing_them_as_dates() {
        let reg = registry();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        let at = |time: String| {
            format!(r#"{{"type":"smoke","value":1,"unit":"%","time":{time}}}"#).into_bytes()
        };
        for (time, want) in [
            ("253402300800000".to_owned(), "time 253402300800000 is "),
            (u64::MAX.to_string(), "time 18446744073709551615 is "),
            (ms(now + Duration::from_secs(3600)).to_string(), "1h ahead"),
            (
                "\"2026-11-15T08:00:00Z\"".to_owned(),
                "behind this node's clock",
            ),
        ] {
            let (ok, bad) = reg.parse("sy/sensors/smoke-001", &at(time.clone()), now);
            assert!(ok.is_empty(), "{time}");
            assert!(bad[0].reason.contains(want), "{time}: {:?}", reasons(&bad));
        }
        // Within the window either way: taken, with its own time.
        for offset in [-3600i64, 0, 240] {
            let t = now
                .checked_add(Duration::from_secs(offset.max(0) as u64))
                .unwrap()
                - Duration::from_secs((-offset).max(0) as u64);
            let (ok, bad) = reg.parse("sy/sensors/smoke-001", &at(ms(t).to_string()), now);
            assert!(bad.is_empty(), "{offset}: {:?}", reasons(&bad));
            assert_eq!(ok[0].time, t);
        }
    }
}
