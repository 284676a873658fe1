//! The `sharpeyes.alert/1` message and its topic.
//!
//! The JSON Schema in `alerts/schema/alert-1.schema.json` is the contract subscribers rely
//! on; this type serialises to it (the tests validate against the file).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sharpeyes_analytics::{HazardEvent, SensorAlarm};
use sharpeyes_config::schema::GridLevel;
use sharpeyes_config::{Camera, Config, Severity};

use crate::error::{Error, ErrorKind};

/// The `schema` field of every version-1 alert.
pub const SCHEMA: &str = "sharpeyes.alert/1";

/// The JSON Schema of [`Alert`], for subscribers and tests.
pub const JSON_SCHEMA: &str = include_str!("../schema/alert-1.schema.json");

/// Topic level standing for a grid level the alert does not reach (a camera placed under its
/// county, or an alert escalated above the grid), so every alert topic has the same depth.
pub const ABSENT_LEVEL: &str = "-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Video,
    Sensor,
    Fused,
}

impl Source {
    /// As published.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Sensor => "sensor",
            Self::Fused => "fused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertCamera {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
}

impl AlertCamera {
    /// The camera as messages name it.
    pub(crate) fn of(camera: &Camera) -> Self {
        Self {
            id: camera.id.clone(),
            name: camera.name.clone(),
            kind: camera.kind.as_str().to_owned(),
            unit: camera.unit.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridStep {
    pub id: String,
    pub name: String,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertGrid {
    pub id: String,
    /// County first.
    pub path: Vec<GridStep>,
    pub centre: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertBox {
    pub class: String,
    pub score: f32,
    /// x1, y1, x2, y2 in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub track_id: u64,
}

impl AlertBox {
    /// x1, y1, x2, y2 as fractions of `frame` (not clamped: a box may reach past the edge).
    pub fn in_frame(&self, frame: FrameSize) -> [f64; 4] {
        let (w, h) = (f64::from(frame.width), f64::from(frame.height));
        let [x1, y1, x2, y2] = self.bbox.map(f64::from);
        [x1 / w, y1 / h, x2 / w, y2 / h]
    }
}

/// Where the snapshot is and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub url: String,
    pub sha256: String,
    pub size: usize,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_base64: Option<String>,
}

/// One alert, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    pub id: String,
    pub hazard: String,
    pub severity: String,
    pub confidence: f32,
    pub source: Source,
    pub camera: Option<AlertCamera>,
    pub grid: AlertGrid,
    pub region_code: Option<String>,
    pub detected_at: String,
    /// The analysed frame the boxes refer to; `None` for a sensor alert without a camera.
    pub frame: Option<FrameSize>,
    pub boxes: Vec<AlertBox>,
    pub zone: Option<String>,
    pub snapshot: Option<SnapshotRef>,
    pub evidence: Vec<serde_json::Value>,
    pub escalation_level: u32,
    /// The node that detected it (`[node] id`), set when it is submitted; an escalation
    /// keeps it. Optional: added within version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Alert {
    /// Leaves the snapshot to its URL: for copies kept beside the published message (the
    /// recent list, the issue record) and for a message that would be too large. `true`
    /// when there was an inline picture.
    pub(crate) fn drop_inline_snapshot(&mut self) -> bool {
        self.snapshot
            .as_mut()
            .is_some_and(|s| s.inline_base64.take().is_some())
    }

    /// A video alert from a confirmed hazard on a frame of `frame` size.
    pub fn from_event<F>(
        event: &HazardEvent<F>,
        frame: FrameSize,
        config: &Config,
        snapshot: Option<SnapshotRef>,
    ) -> Result<Alert, Error> {
        let camera = config.camera(&event.camera).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("camera `{}` is not in the configuration", event.camera),
            )
        })?;
        Self::from_camera_event(event, camera, frame, config, snapshot)
    }

    /// [`Alert::from_event`] for a camera given directly (one added after start-up); its
    /// grid must be in `config`.
    pub fn from_camera_event<F>(
        event: &HazardEvent<F>,
        camera: &Camera,
        frame: FrameSize,
        config: &Config,
        snapshot: Option<SnapshotRef>,
    ) -> Result<Alert, Error> {
        let grid = alert_grid(config, &event.grid).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "grid `{}` of camera `{}` is not in the configuration",
                    event.grid, event.camera
                ),
            )
        })?;
        Ok(Alert {
            schema: SCHEMA.to_owned(),
            id: new_id(event.detected_at),
            hazard: event.hazard.clone(),
            severity: event.severity.as_str().to_owned(),
            confidence: event.confidence.clamp(0.0, 1.0),
            source: Source::Video,
            camera: Some(AlertCamera::of(camera)),
            grid,
            region_code: camera
                .device_id
                .as_ref()
                .map(|d| d.region_code().to_owned()),
            detected_at: timestamp(event.detected_at),
            frame: Some(frame),
            boxes: event
                .objects
                .iter()
                .map(|o| AlertBox {
                    class: o.class.clone(),
                    score: o.score.clamp(0.0, 1.0),
                    bbox: [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2].map(|v| v.max(0.0)),
                    track_id: o.track_id,
                })
                .collect(),
            zone: event.zone.clone(),
            snapshot,
            evidence: Vec::new(),
            escalation_level: 0,
            node: None,
        })
    }

    /// A sensor alert: the alarm with its readings as evidence, shown by `camera` (one that
    /// covers the sensor) when `frame` is the size of its snapshot.
    pub fn from_sensor(
        alarm: &SensorAlarm,
        config: &Config,
        camera: Option<&str>,
        frame: Option<FrameSize>,
    ) -> Result<Alert, Error> {
        let grid = alert_grid(config, &alarm.grid).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "grid `{}` of sensor `{}` is not in the configuration",
                    alarm.grid, alarm.sensor_id
                ),
            )
        })?;
        let camera = camera.and_then(|id| config.camera(id));
        Ok(Alert {
            schema: SCHEMA.to_owned(),
            id: new_id(alarm.detected_at),
            hazard: alarm.hazard.clone(),
            severity: alarm.severity.as_str().to_owned(),
            confidence: SENSOR_CONFIDENCE,
            source: Source::Sensor,
            camera: camera.map(AlertCamera::of),
            grid,
            region_code: camera
                .and_then(|c| c.device_id.as_ref())
                .map(|d| d.region_code().to_owned()),
            detected_at: timestamp(alarm.detected_at),
            frame: camera.and(frame),
            boxes: Vec::new(),
            zone: None,
            snapshot: None,
            evidence: vec![evidence(alarm)],
            escalation_level: 0,
            node: None,
        })
    }

    /// Marks a video alert as confirmed by sensor `alarms`: source `fused`, their readings as
    /// evidence, confidence combined as independent witnesses, severity one step above the
    /// higher of the two.
    pub fn fuse(&mut self, alarms: &[SensorAlarm]) {
        if alarms.is_empty() {
            return;
        }
        self.source = Source::Fused;
        let mut severity = severity_of(&self.severity);
        let mut miss = 1.0 - self.confidence;
        for alarm in alarms {
            self.evidence.push(evidence(alarm));
            severity = severity.max(alarm.severity);
            miss *= 1.0 - SENSOR_CONFIDENCE;
        }
        self.confidence = (1.0 - miss).clamp(0.0, 1.0);
        self.severity = raised(severity).as_str().to_owned();
    }

    /// The key of this alert's cooldown: one per camera, hazard and zone for video; per sensor
    /// for a sensor alert; fused alerts apart, so a confirmation is not held back by the
    /// video alert before it.
    pub fn cooldown_key(&self) -> String {
        let camera = self.camera.as_ref().map_or("-", |c| c.id.as_str());
        let zone = self.zone.as_deref().unwrap_or("-");
        match self.source {
            Source::Video => format!("{camera}:{}:{zone}", self.hazard),
            Source::Fused => format!("fused:{camera}:{}:{zone}", self.hazard),
            Source::Sensor => {
                let sensor = self
                    .evidence
                    .first()
                    .and_then(|e| e.get("sensor_id"))
                    .and_then(|s| s.as_str())
                    .unwrap_or("-");
                format!("sensor:{sensor}:{}", self.hazard)
            }
        }
    }

    /// `{prefix}/alerts/{county}/{town}/{village}/{grid}/{hazard}`. Levels below the centre
    /// the alert is addressed to (the grid's own at level 0, its parent's after one
    /// escalation...) and levels the camera's grid does not reach are [`ABSENT_LEVEL`].
    pub fn topic(&self, prefix: &str) -> String {
        let depth = self
            .grid
            .path
            .len()
            .saturating_sub(self.escalation_level as usize)
            .max(1);
        let mut levels: Vec<&str> = self
            .grid
            .path
            .iter()
            .take(depth)
            .map(|g| g.id.as_str())
            .collect();
        levels.resize(4, ABSENT_LEVEL);
        format!("{prefix}/alerts/{}/{}", levels.join("/"), self.hazard)
    }

    /// The same alert raised one level: republished to the parent centre's topic, with the
    /// parent's centre named. `None` at the county, which has no parent.
    pub fn escalated(&self, config: &Config) -> Option<Alert> {
        let depth = self
            .grid
            .path
            .len()
            .checked_sub(self.escalation_level as usize + 1)?;
        if depth == 0 {
            return None;
        }
        let centre = config
            .grid(&self.grid.path[depth - 1].id)
            .and_then(|g| g.centre.clone());
        let mut up = self.clone();
        up.escalation_level += 1;
        up.grid.centre = centre;
        Some(up)
    }
}

/// How sure a threshold breach held for its hold time is, alone: gauges are reliable, but
/// a smoke detector also trips on steam and cooking.
const SENSOR_CONFIDENCE: f32 = 0.8;

pub(crate) fn alert_grid(config: &Config, id: &str) -> Option<AlertGrid> {
    let path = config.grid_path(id);
    let grid = path.last()?;
    Some(AlertGrid {
        id: grid.id.clone(),
        path: path
            .iter()
            .map(|g| GridStep {
                id: g.id.clone(),
                name: g.name.clone(),
                level: g.level.unwrap_or(GridLevel::Grid).as_str().to_owned(),
            })
            .collect(),
        centre: grid.centre.clone(),
    })
}

/// One sensor alarm as alert evidence (see `evidence` in the JSON Schema).
fn evidence(alarm: &SensorAlarm) -> serde_json::Value {
    let time = timestamp;
    serde_json::json!({
        "kind": "sensor",
        "sensor_id": alarm.sensor_id,
        "type": alarm.kind,
        "unit": alarm.unit,
        "rule": alarm.rule,
        "value": alarm.value,
        "since": time(alarm.detected_at),
        "readings": alarm
            .readings
            .iter()
            .map(|(at, value)| serde_json::json!({ "at": time(*at), "value": value }))
            .collect::<Vec<_>>(),
    })
}

fn severity_of(s: &str) -> Severity {
    [
        Severity::Info,
        Severity::Minor,
        Severity::Major,
        Severity::Critical,
    ]
    .into_iter()
    .find(|v| v.as_str() == s)
    .unwrap_or(Severity::Major)
}

fn raised(s: Severity) -> Severity {
    match s {
        Severity::Info => Severity::Minor,
        Severity::Minor => Severity::Major,
        Severity::Major | Severity::Critical => Severity::Critical,
    }
}

/// Whether `s` has the form of an alert id (a ULID), e.g. before using it in a path or key.
pub fn is_alert_id(s: &str) -> bool {
    s.len() == 26 && ulid::Ulid::from_string(s).is_ok()
}

/// RFC 3339 with milliseconds, for any time: one before 1970 or after 9999 (which the
/// formatter cannot print, and panics on) is clamped to that range. Times here come from
/// frames and from sensor readings, which the registry keeps near now; this is the backstop.
pub(crate) fn timestamp(t: SystemTime) -> String {
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since).to_string()
}

/// A ULID: unique, and sorted by time, so alert ids sort like their detections.
fn new_id(at: SystemTime) -> String {
    ulid::Ulid::from_datetime(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_prints_without_a_panic() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_millis(253_402_300_800_000);
        assert_eq!(timestamp(far), "9999-12-31T23:59:59.999Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(timestamp(before), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(timestamp(t), "2026-11-18T11:06:40.123Z");
    }
}
