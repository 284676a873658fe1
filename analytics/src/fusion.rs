//! Fusion of sensor alarms with the video of the cameras that cover the sensor.
//!
//! A sensor alarm puts its covering cameras into verify mode (every frame analysed, not
//! keyframes only) for `verify_for`, and is held back for up to `wait`: a video hazard the
//! sensor lists as confirming it (`verified_by`), confirmed on a covering camera in that time,
//! makes one fused alert out of both; with none, the alarm goes out on its own when `wait`
//! ends. While the sensor stays in alarm, such video hazards on its cameras are fused as well,
//! so the same fire is not reported once as video and once as fused.
//!
//! Pure state, no clock of its own: the caller passes `now` and calls [`Fusion::due`] and
//! [`Fusion::verify_ended`] on a timer; it sends the cameras verify mode on (what
//! [`Fusion::on_alarm`] returns) and off (what `verify_ended` returns).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use sharpeyes_config::Config;

use crate::sensor_rules::SensorAlarm;

struct Coverage {
    cameras: Vec<String>,
    hazards: Vec<String>,
}

struct Active {
    alarm: SensorAlarm,
    /// `Some`: held back for video until then. `None`: already published.
    held_until: Option<SystemTime>,
    /// The sensor is back to normal: forget the alarm once it has been published.
    cleared: bool,
}

/// Alarms in progress and the cameras verifying them.
pub struct Fusion {
    wait: Duration,
    verify_for: Duration,
    sensors: HashMap<String, Coverage>,
    active: HashMap<String, Active>,
    verify_until: HashMap<String, SystemTime>,
}

impl Fusion {
    pub fn new(config: &Config) -> Self {
        let sensors = config
            .sensors
            .iter()
            .map(|s| {
                let coverage = Coverage {
                    cameras: s.cameras.clone(),
                    hazards: s
                        .verifying_hazards()
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                };
                (s.id.clone(), coverage)
            })
            .collect();
        Self {
            wait: config.fusion.wait,
            verify_for: config.fusion.verify_for,
            sensors,
            active: HashMap::new(),
            verify_until: HashMap::new(),
        }
    }

    /// A new alarm: returns the cameras now in verify mode. An alarm no camera can confirm is
    /// due at once (see [`Fusion::due`]).
    pub fn on_alarm(&mut self, alarm: SensorAlarm, now: SystemTime) -> Vec<String> {
        let (cameras, can_confirm) = match self.sensors.get(&alarm.sensor_id) {
            Some(c) => (c.cameras.clone(), !c.hazards.is_empty()),
            None => (Vec::new(), false),
        };
        let until = now + self.verify_for;
        for camera in &cameras {
            let t = self.verify_until.entry(camera.clone()).or_insert(until);
            *t = (*t).max(until);
        }
        let held_until = if can_confirm && !cameras.is_empty() {
            now + self.wait
        } else {
            now
        };
        self.active.insert(
            alarm.sensor_id.clone(),
            Active {
                alarm,
                held_until: Some(held_until),
                cleared: false,
            },
        );
        cameras
    }

    /// The sensor is back within its limits. A held alarm still goes out (it happened); a
    /// published one stops fusing video.
    pub fn on_cleared(&mut self, sensor_id: &str) {
        if let Some(a) = self.active.get_mut(sensor_id) {
            if a.held_until.is_some() {
                a.cleared = true;
            } else {
                self.active.remove(sensor_id);
            }
        }
    }

    /// A confirmed video `hazard` on `camera`: the alarms it confirms (empty: a plain video
    /// alert). Held alarms it confirms are published with it, as one fused alert.
    pub fn on_video(&mut self, camera: &str, hazard: &str) -> Vec<SensorAlarm> {
        let mut fused = Vec::new();
        let mut done = Vec::new();
        for (id, a) in &mut self.active {
            let Some(cov) = self.sensors.get(id) else {
                continue;
            };
            if cov.cameras.iter().any(|c| c == camera) && cov.hazards.iter().any(|h| h == hazard) {
                fused.push(a.alarm.clone());
                a.held_until = None;
                if a.cleared {
                    done.push(id.clone());
                }
            }
        }
        for id in done {
            self.active.remove(&id);
        }
        fused.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
        fused
    }

    /// Held alarms whose wait is over without video: publish them as sensor alerts.
    pub fn due(&mut self, now: SystemTime) -> Vec<SensorAlarm> {
        let mut due = Vec::new();
        self.active.retain(|_, a| match a.held_until {
            Some(t) if t <= now => {
                due.push(a.alarm.clone());
                a.held_until = None;
                !a.cleared
            }
            _ => true,
        });
        due.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
        due
    }

    /// Whether `camera` should analyse every frame because of a sensor alarm.
    pub fn verifying(&self, camera: &str, now: SystemTime) -> bool {
        self.verify_until.get(camera).is_some_and(|t| now < *t)
    }

    /// Cameras whose verify mode has run its `verify_for` by `now`: send them back to their
    /// sampling. Each is returned once.
    pub fn verify_ended(&mut self, now: SystemTime) -> Vec<String> {
        let mut ended: Vec<String> = self
            .verify_until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(camera, _)| camera.clone())
            .collect();
        for camera in &ended {
            self.verify_until.remove(camera);
        }
        ended.sort();
        ended
    }

    /// Alarms held back for video.
    pub fn held(&self) -> usize {
        self.active
            .values()
            .filter(|a| a.held_until.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[grids]]
id = "g"
name = "grid"
centre = "c"
[[models]]
name = "m"
path = "m.onnx"
layout = "yolov8"
input_size = 320
classes = ["fire", "Fall"]
[[hazards]]
name = "fire"
model = "m"
classes = ["fire"]
severity = "critical"
[[hazards]]
name = "fallen-person"
model = "m"
classes = ["Fall"]
severity = "major"
[[cameras]]
id = "cam1"
name = "one"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/1"
grid = "g"
hazards = ["fire", "fallen-person"]
[[cameras]]
id = "cam2"
name = "two"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1/2"
grid = "g"
hazards = ["fire"]
[[sensors]]
id = "smoke1"
type = "smoke"
unit = "%obs/m"
grid = "g"
cameras = ["cam1"]
above = 4.0
[[sensors]]
id = "water1"
type = "water_level"
unit = "m"
grid = "g"
cameras = ["cam2"]
above = 5.0
[fusion]
wait = "10s"
verify_for = "60s"
"#;

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"x").unwrap();
        Config::parse(CONFIG, &dir.path().join("c.toml"), &[])
            .unwrap_or_else(|p| panic!("{p}"))
            .config
    }

    fn alarm(config: &Config, sensor: &str, at: SystemTime) -> SensorAlarm {
        let spec = config.sensors.iter().find(|s| s.id == sensor).unwrap();
        SensorAlarm {
            sensor_id: sensor.into(),
            kind: spec.kind.clone(),
            unit: spec.unit.clone(),
            hazard: spec.hazard_name().into(),
            grid: spec.grid.clone(),
            severity: spec.severity,
            rule: "above".into(),
            value: 9.0,
            detected_at: at,
            readings: vec![(at, 9.0)],
            cameras: spec.cameras.clone(),
        }
    }

    #[test]
    fn video_within_the_wait_fuses_with_the_held_alarm_once() {
        let config = config();
        let mut f = Fusion::new(&config);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(f.on_alarm(alarm(&config, "smoke1", t0), t0), vec!["cam1"]);
        assert!(f.verifying("cam1", t0 + Duration::from_secs(59)));
        assert!(!f.verifying("cam1", t0 + Duration::from_secs(60)));
        assert!(!f.verifying("cam2", t0));
        assert!(
            f.due(t0 + Duration::from_secs(5)).is_empty(),
            "held for video"
        );
        // A hazard the sensor does not list, or on a camera that does not cover it: alone.
        assert!(f.on_video("cam1", "fallen-person").is_empty());
        assert!(f.on_video("cam2", "fire").is_empty());
        let fused = f.on_video("cam1", "fire");
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].sensor_id, "smoke1");
        assert!(
            f.due(t0 + Duration::from_secs(11)).is_empty(),
            "the fused alert replaced the sensor alert"
        );
        // Still in alarm: a later fire on the same camera is fused too, not sent twice.
        assert_eq!(f.on_video("cam1", "fire").len(), 1);
        f.on_cleared("smoke1");
        assert!(f.on_video("cam1", "fire").is_empty());
    }

    #[test]
    fn without_video_the_alarm_goes_out_alone_when_the_wait_ends() {
        let config = config();
        let mut f = Fusion::new(&config);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        f.on_alarm(alarm(&config, "smoke1", t0), t0);
        // Cleared while held: it still goes out, once.
        f.on_cleared("smoke1");
        assert!(f.due(t0 + Duration::from_secs(9)).is_empty());
        let due = f.due(t0 + Duration::from_secs(10));
        assert_eq!(due.len(), 1);
        assert!(f.due(t0 + Duration::from_secs(20)).is_empty());
        assert_eq!(f.held(), 0);
        assert!(
            f.on_video("cam1", "fire").is_empty(),
            "cleared and published"
        );
    }

    #[test]
    fn an_alarm_no_video_can_confirm_is_due_at_once_but_still_verifies() {
        let config = config();
        let mut f = Fusion::new(&config);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(f.on_alarm(alarm(&config, "water1", t0), t0), vec!["cam2"]);
        assert!(f.verifying("cam2", t0));
        assert_eq!(f.due(t0).len(), 1);
        assert!(f.on_video("cam2", "fire").is_empty());
    }

    #[test]
    fn verify_mode_ends_once_after_verify_for_and_a_new_alarm_extends_it() {
        let config = config();
        let mut f = Fusion::new(&config);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        f.on_alarm(alarm(&config, "smoke1", t0), t0);
        // A second alarm 30 s later keeps cam1 verifying until 30 s + verify_for.
        f.on_alarm(alarm(&config, "smoke1", t0 + s(30)), t0 + s(30));
        assert!(f.verify_ended(t0 + s(60)).is_empty());
        assert_eq!(f.verify_ended(t0 + s(90)), ["cam1"]);
        assert!(f.verify_ended(t0 + s(91)).is_empty(), "told once");
        assert!(!f.verifying("cam1", t0 + s(91)));
    }
}
