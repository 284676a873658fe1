//! The `sharpeyes.alert/1` message and its topic.
//!
//! The JSON Schema in `alerts/schema/alert-1.schema.json` is the contract subscribers rely
//! on; this type serialises to it (the tests validate against the file).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sharpeyes_analytics::HazardEvent;
use sharpeyes_config::{Config, GridLevel};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertCamera {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
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
    pub frame: FrameSize,
    pub boxes: Vec<AlertBox>,
    pub zone: Option<String>,
    pub snapshot: Option<SnapshotRef>,
    pub evidence: Vec<serde_json::Value>,
    pub escalation_level: u32,
}

/// Why an event cannot become an alert: it names something the configuration lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertError(pub String);

impl std::fmt::Display for AlertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AlertError {}

impl Alert {
    /// A video alert from a confirmed hazard on a frame of `frame` size.
    pub fn from_event<F>(
        event: &HazardEvent<F>,
        frame: FrameSize,
        config: &Config,
        snapshot: Option<SnapshotRef>,
    ) -> Result<Alert, AlertError> {
        let camera = config.camera(&event.camera).ok_or_else(|| {
            AlertError(format!(
                "camera `{}` is not in the configuration",
                event.camera
            ))
        })?;
        let path = config.grid_path(&event.grid);
        let grid = path.last().ok_or_else(|| {
            AlertError(format!(
                "grid `{}` of camera `{}` is not in the configuration",
                event.grid, event.camera
            ))
        })?;
        Ok(Alert {
            schema: SCHEMA.to_owned(),
            id: new_id(event.detected_at),
            hazard: event.hazard.clone(),
            severity: event.severity.as_str().to_owned(),
            confidence: event.confidence.clamp(0.0, 1.0),
            source: Source::Video,
            camera: Some(AlertCamera {
                id: camera.id.clone(),
                name: camera.name.clone(),
                kind: camera.kind.as_str().to_owned(),
                unit: camera.unit.clone(),
            }),
            grid: AlertGrid {
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
            },
            region_code: camera
                .device_id
                .as_ref()
                .map(|d| d.region_code().to_owned()),
            detected_at: humantime::format_rfc3339_millis(event.detected_at).to_string(),
            frame,
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
        })
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

/// Whether `s` has the form of an alert id (a ULID), e.g. before using it in a path or key.
pub fn is_alert_id(s: &str) -> bool {
    s.len() == 26 && ulid::Ulid::from_string(s).is_ok()
}

/// A ULID: unique, and sorted by time, so alert ids sort like their detections.
fn new_id(at: SystemTime) -> String {
    ulid::Ulid::from_datetime(at).to_string()
}
