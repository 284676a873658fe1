//! Simulated sensor readings: each configured sensor reads a little noise around a normal
//! value, and `--sensor-alarm` entries push one past its limit for a while.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sharpeyes_config::Sensor;

use super::ScenarioError;
use super::schedule::parse_duration;

/// One scheduled alarm: `smoke-dy-0001@10s` (from 10 s on) or `smoke-dy-0001@10s+30s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledAlarm {
    pub sensor: String,
    pub at: Duration,
    pub duration: Option<Duration>,
}

const SHAPE: &str = "expected SENSOR@START[+DURATION], e.g. smoke-dy-0001@10s+30s";

impl FromStr for ScheduledAlarm {
    type Err = ScenarioError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let fail = |why: String| ScenarioError(format!("`{entry}`: {why}"));
        let (sensor, times) = entry
            .split_once('@')
            .ok_or_else(|| fail(format!("no `@START`; {SHAPE}")))?;
        if sensor.trim().is_empty() {
            return Err(fail(format!("no sensor id; {SHAPE}")));
        }
        let (at, duration) = match times.split_once('+') {
            Some((at, d)) => (at, Some(d)),
            None => (times, None),
        };
        let at = parse_duration(at).map_err(fail)?;
        let duration = duration.map(parse_duration).transpose().map_err(fail)?;
        Ok(Self {
            sensor: sensor.trim().to_owned(),
            at,
            duration,
        })
    }
}

/// Readings for a set of sensors over time.
pub struct SensorSimulator {
    sensors: Vec<Sensor>,
    alarms: Vec<ScheduledAlarm>,
    noise: u64,
}

impl SensorSimulator {
    /// Errors name an alarm for a sensor not in `sensors`.
    pub fn new(sensors: &[Sensor], alarms: Vec<ScheduledAlarm>) -> Result<Self, ScenarioError> {
        for a in &alarms {
            if !sensors.iter().any(|s| s.id == a.sensor) {
                let known: Vec<&str> = sensors.iter().map(|s| s.id.as_str()).collect();
                return Err(ScenarioError(format!(
                    "--sensor-alarm {}: no sensor `{}` in the configuration (known: {})",
                    a.sensor,
                    a.sensor,
                    known.join(", ")
                )));
            }
        }
        Ok(Self {
            sensors: sensors.to_vec(),
            alarms,
            noise: 0x2545_f491_4f6c_dd1d,
        })
    }

    /// One JSON reading per sensor at `elapsed` since the start, stamped `now`, with its topic
    /// under `prefix` (the sensor's own `topic` when configured).
    pub fn readings(
        &mut self,
        elapsed: Duration,
        now: SystemTime,
        prefix: &str,
    ) -> Vec<(String, String)> {
        let millis = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut out = Vec::with_capacity(self.sensors.len());
        for i in 0..self.sensors.len() {
            let jitter = self.jitter();
            let s = &self.sensors[i];
            let alarm = self
                .alarms
                .iter()
                .filter(|a| a.sensor == s.id && elapsed >= a.at)
                .find(|a| a.duration.is_none_or(|d| elapsed < a.at + d));
            let value = match alarm {
                Some(a) => alarm_value(s, elapsed - a.at),
                None => normal_value(s) * (1.0 + 0.005 * jitter),
            };
            let reading = serde_json::json!({
                "sensor_id": s.id,
                "type": s.kind,
                "value": (value * 1000.0).round() / 1000.0,
                "unit": s.unit,
                "time": millis,
            });
            out.push((crate::sensors::topic_of(s, prefix), reading.to_string()));
        }
        out
    }

    /// In [-1, 1]: xorshift, so runs repeat.
    fn jitter(&mut self) -> f64 {
        self.noise ^= self.noise << 13;
        self.noise ^= self.noise >> 7;
        self.noise ^= self.noise << 17;
        (self.noise % 2001) as f64 / 1000.0 - 1.0
    }
}

/// Comfortably inside the limits.
fn normal_value(s: &Sensor) -> f64 {
    match (s.below, s.above) {
        (Some(b), Some(a)) => (a + b) / 2.0,
        (None, Some(a)) => a * 0.3,
        (Some(b), None) => b * 2.0 + 1.0,
        (None, None) => 1.0,
    }
}

/// Clearly past the limit; a rate-only sensor climbs at twice its limit.
fn alarm_value(s: &Sensor, into: Duration) -> f64 {
    match (s.above, s.below, s.rate) {
        (Some(a), _, _) => a * 1.5 + 0.5,
        (None, Some(b), _) => b * 0.5 - 0.5,
        (None, None, Some(r)) => normal_value(s) + 2.0 * r * into.as_secs_f64() / 60.0,
        (None, None, None) => normal_value(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(id: &str, above: Option<f64>, below: Option<f64>) -> Sensor {
        let toml = format!(
            "id = \"{id}\"\ntype = \"smoke\"\nunit = \"%obs/m\"\ngrid = \"g\"\n{}{}",
            above.map_or(String::new(), |a| format!("above = {a}\n")),
            below.map_or(String::new(), |b| format!("below = {b}\n")),
        );
        toml::from_str(&toml).unwrap()
    }

    fn value(r: &(String, String)) -> f64 {
        serde_json::from_str::<serde_json::Value>(&r.1).unwrap()["value"]
            .as_f64()
            .unwrap()
    }

    #[test]
    fn readings_stay_normal_until_the_alarm_and_after_it() {
        let s = sensor("smoke1", Some(4.0), None);
        let alarm: ScheduledAlarm = "smoke1@10s+5s".parse().unwrap();
        let mut sim = SensorSimulator::new(std::slice::from_ref(&s), vec![alarm]).unwrap();
        let now = SystemTime::now();
        for (t, in_alarm) in [(0, false), (9, false), (10, true), (14, true), (15, false)] {
            let r = sim.readings(Duration::from_secs(t), now, "p");
            assert_eq!(r[0].0, "p/sensors/smoke1");
            assert_eq!(value(&r[0]) > 4.0, in_alarm, "at {t}s: {}", r[0].1);
        }
    }

    #[test]
    fn a_bad_schedule_names_the_entry_and_the_sensor() {
        let e = "smoke1".parse::<ScheduledAlarm>().unwrap_err().to_string();
        assert!(e.contains("`smoke1`") && e.contains("@START"), "{e}");
        let s = sensor("smoke1", None, Some(2.0));
        let err = SensorSimulator::new(&[s], vec!["gas9@1s".parse().unwrap()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("gas9") && err.contains("smoke1"), "{err}");
    }
}
