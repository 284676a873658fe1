//! Sensor rules: threshold (above / below), rate of change and hold time per sensor, and
//! silence. A breach must last `hold` before it is an alarm; an alarm is raised once and
//! cleared when the value is back. Silence longer than the sensor's `interval` is a status
//! (`offline`), not a hazard.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use sharpeyes_config::{Config, Sensor, Severity};

/// Readings kept per sensor: the evidence of its alarm, and the base of its rate of change.
const EVIDENCE: usize = 8;
/// Rate of change is measured against the oldest reading at most this far back...
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// ...and at least this far back: over a second or two, a gauge's noise looks like a flood.
const RATE_MIN_SPAN: Duration = Duration::from_secs(10);

/// A sensor alarm: what crossed which limit, with the readings that show it.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorAlarm {
    pub sensor_id: String,
    pub kind: String,
    pub unit: String,
    /// The hazard the alarm is published as (`fire` for a smoke detector).
    pub hazard: String,
    pub grid: String,
    pub severity: Severity,
    /// The limit crossed, for people: `above 10 %`, `rising 2.5 %/min (limit 2 %/min)`.
    pub rule: String,
    pub value: f64,
    /// When the breach began (the alarm is raised `hold` later).
    pub detected_at: SystemTime,
    /// Oldest first.
    pub readings: Vec<(SystemTime, f64)>,
    /// Cameras covering the sensor: they verify it.
    pub cameras: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SensorEvent {
    Alarm(SensorAlarm),
    /// The value is back within its limits.
    Cleared {
        sensor_id: String,
    },
    /// No reading for longer than the sensor's interval.
    Offline {
        sensor_id: String,
        silent_for: Duration,
    },
    /// Readings again after `Offline`.
    Online {
        sensor_id: String,
    },
}

struct State {
    spec: Sensor,
    /// When a reading last arrived (receipt time: sensor clocks drift).
    last_seen: SystemTime,
    offline: bool,
    breach_since: Option<SystemTime>,
    alarm: bool,
    recent: VecDeque<(SystemTime, f64)>,
}

/// Rule state of every configured sensor.
pub struct SensorRules {
    sensors: HashMap<String, State>,
}

impl SensorRules {
    /// Every sensor starts as just seen at `now`: silence counts from start-up.
    pub fn new(config: &Config, now: SystemTime) -> Self {
        let sensors = config
            .sensors
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    State {
                        spec: s.clone(),
                        last_seen: now,
                        offline: false,
                        breach_since: None,
                        alarm: false,
                        recent: VecDeque::with_capacity(EVIDENCE + 1),
                    },
                )
            })
            .collect();
        Self { sensors }
    }

    /// A checked reading of `sensor_id`, taken at `at`, received at `now`. Readings count in
    /// the order they arrive, and `hold` runs on this node's clock (`now`): a reading's own
    /// time, which a gateway or a stranger sets, cannot skip the hold or freeze the sensor.
    /// Rates are over the readings' own times, which the registry keeps near `now`.
    pub fn on_reading(
        &mut self,
        sensor_id: &str,
        value: f64,
        at: SystemTime,
        now: SystemTime,
    ) -> Vec<SensorEvent> {
        let Some(s) = self.sensors.get_mut(sensor_id) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        s.last_seen = now;
        if s.offline {
            s.offline = false;
            events.push(SensorEvent::Online {
                sensor_id: sensor_id.to_owned(),
            });
        }
        let breach = breach(&s.spec, &s.recent, value, at);
        s.recent.push_back((at, value));
        if s.recent.len() > EVIDENCE {
            s.recent.pop_front();
        }
        match breach {
            Some(rule) => {
                let since = *s.breach_since.get_or_insert(now);
                let held = now.duration_since(since).unwrap_or_default() >= s.spec.hold;
                if held && !s.alarm {
                    s.alarm = true;
                    events.push(SensorEvent::Alarm(SensorAlarm {
                        sensor_id: sensor_id.to_owned(),
                        kind: s.spec.kind.clone(),
                        unit: s.spec.unit.clone(),
                        hazard: s.spec.hazard_name().to_owned(),
                        grid: s.spec.grid.clone(),
                        severity: s.spec.severity,
                        rule,
                        value,
                        detected_at: since,
                        readings: s.recent.iter().copied().collect(),
                        cameras: s.spec.cameras.clone(),
                    }));
                }
            }
            None => {
                s.breach_since = None;
                if s.alarm {
                    s.alarm = false;
                    events.push(SensorEvent::Cleared {
                        sensor_id: sensor_id.to_owned(),
                    });
                }
            }
        }
        events
    }

    /// Sensors silent for longer than their interval, once each until they speak again.
    pub fn check_silence(&mut self, now: SystemTime) -> Vec<SensorEvent> {
        let mut events = Vec::new();
        for (id, s) in &mut self.sensors {
            let silent_for = now.duration_since(s.last_seen).unwrap_or_default();
            if !s.offline && silent_for > s.spec.interval {
                s.offline = true;
                events.push(SensorEvent::Offline {
                    sensor_id: id.clone(),
                    silent_for,
                });
            }
        }
        events
    }
}

/// The limit `value` crosses, if any, described for people.
fn breach(
    spec: &Sensor,
    recent: &VecDeque<(SystemTime, f64)>,
    value: f64,
    at: SystemTime,
) -> Option<String> {
    let unit = &spec.unit;
    if let Some(above) = spec.above.filter(|a| value > *a) {
        return Some(format!("above {above} {unit}"));
    }
    if let Some(below) = spec.below.filter(|b| value < *b) {
        return Some(format!("below {below} {unit}"));
    }
    let limit = spec.rate?;
    let (t0, v0) = recent
        .iter()
        .find(|(t, _)| at.duration_since(*t).unwrap_or_default() <= RATE_WINDOW)
        .or(recent.back())?;
    let minutes = at.duration_since(*t0).ok()?.as_secs_f64() / 60.0;
    if minutes < RATE_MIN_SPAN.as_secs_f64() / 60.0 {
        return None;
    }
    let rate = (value - v0) / minutes;
    (rate > limit).then(|| format!("rising {rate:.2} {unit}/min (limit {limit} {unit}/min)"))
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
id = "smoke-1"
type = "smoke"
unit = "%"
grid = "321322"
above = 10.0
hold = "10s"
interval = "1m"

[[sensors]]
id = "river-1"
type = "water_level"
unit = "m"
grid = "321322"
below = 0.5
rate = 0.2
interval = "5m"
"#;

    fn rules(t0: SystemTime) -> SensorRules {
        let config = Config::parse(CONFIG, Path::new("s.toml"), &[])
            .unwrap_or_else(|p| panic!("{p}"))
            .config;
        SensorRules::new(&config, t0)
    }

    fn at(t0: SystemTime, secs: u64) -> SystemTime {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn a_breach_must_hold_before_it_alarms_once_then_clears() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut r = rules(t0);
        let mut feed = |s: u64, v: f64| r.on_reading("smoke-1", v, at(t0, s), at(t0, s));
        assert!(feed(0, 2.0).is_empty());
        assert!(feed(5, 12.0).is_empty(), "breach begins, not held yet");
        assert!(feed(10, 3.0).is_empty(), "back before the hold: nothing");
        assert!(feed(20, 12.0).is_empty());
        let events = feed(30, 14.0);
        let [SensorEvent::Alarm(alarm)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(alarm.rule, "above 10 %");
        assert_eq!(alarm.detected_at, at(t0, 20));
        assert_eq!(alarm.value, 14.0);
        assert_eq!(alarm.readings.last(), Some(&(at(t0, 30), 14.0)));
        assert!(feed(35, 15.0).is_empty(), "raised once");
        assert_eq!(
            feed(40, 1.0),
            [SensorEvent::Cleared {
                sensor_id: "smoke-1".into()
            }]
        );
    }

    /// A reading that says it was taken long ago (or far ahead) counts when it arrives: it
    /// cannot make a breach look held, nor make later readings look out of order.
    #[test]
    fn hold_runs_on_arrival_and_a_readings_own_time_cannot_skip_it_or_freeze_the_sensor() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut r = rules(t0);
        // Arrives at 0 s dated an hour back, then at 1 s: a second of breach, not an hour.
        assert!(
            r.on_reading(
                "smoke-1",
                12.0,
                at(t0, 0) - Duration::from_secs(3600),
                at(t0, 0)
            )
            .is_empty()
        );
        assert!(
            r.on_reading("smoke-1", 13.0, at(t0, 1), at(t0, 1))
                .is_empty(),
            "not held yet"
        );
        let events = r.on_reading("smoke-1", 13.0, at(t0, 11), at(t0, 11));
        assert!(
            matches!(events.as_slice(), [SensorEvent::Alarm(_)]),
            "{events:?}"
        );

        let mut r = rules(t0);
        // One reading dated an hour ahead, then honest ones: they still count.
        assert!(
            r.on_reading("smoke-1", 2.0, at(t0, 3600), at(t0, 0))
                .is_empty()
        );
        assert!(
            r.on_reading("smoke-1", 12.0, at(t0, 1), at(t0, 1))
                .is_empty()
        );
        let events = r.on_reading("smoke-1", 12.0, at(t0, 11), at(t0, 11));
        assert!(
            matches!(events.as_slice(), [SensorEvent::Alarm(_)]),
            "{events:?}"
        );
    }

    #[test]
    fn rate_of_change_and_below_limits() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut r = rules(t0);
        let mut feed = |s: u64, v: f64| r.on_reading("river-1", v, at(t0, s), at(t0, s));
        assert!(feed(0, 2.0).is_empty());
        assert!(
            feed(1, 2.03).is_empty(),
            "1.8 m/min over one second is noise"
        );
        assert!(feed(30, 2.05).is_empty(), "0.1 m/min is within 0.2");
        let events = feed(60, 2.4);
        assert!(
            matches!(events.as_slice(), [SensorEvent::Alarm(a)] if a.rule.starts_with("rising 0.40 m/min")),
            "{events:?}"
        );
        let mut r = rules(t0);
        let events = r.on_reading("river-1", 0.3, at(t0, 1), at(t0, 1));
        assert!(
            matches!(events.as_slice(), [SensorEvent::Alarm(a)] if a.rule == "below 0.5 m"),
            "{events:?}"
        );
    }

    #[test]
    fn silence_longer_than_the_interval_is_offline_until_a_reading() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut r = rules(t0);
        assert!(r.check_silence(at(t0, 59)).is_empty());
        let events = r.check_silence(at(t0, 61));
        assert_eq!(
            events,
            [SensorEvent::Offline {
                sensor_id: "smoke-1".into(),
                silent_for: Duration::from_secs(61)
            }]
        );
        assert!(r.check_silence(at(t0, 90)).is_empty(), "reported once");
        let events = r.on_reading("smoke-1", 1.0, at(t0, 95), at(t0, 95));
        assert_eq!(
            events,
            [SensorEvent::Online {
                sensor_id: "smoke-1".into()
            }]
        );
        assert!(r.check_silence(at(t0, 120)).is_empty());
    }
}
