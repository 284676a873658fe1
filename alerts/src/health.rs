//! Camera health messages (`sharpeyes.health/1`): a problem that started or ended on a
//! camera, for maintenance teams. They go on their own subtree,
//! `{prefix}/health/{county}/{town}/{village}/{grid}/{problem}`, through the same outbox as
//! alerts (durable until the broker's PUBACK, a ULID id to dedupe on), and a camera's current
//! problems are retained on `{prefix}/cameras/{id}/health`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sharpeyes_config::{Camera, Config};

use crate::alert::{ABSENT_LEVEL, AlertCamera, AlertGrid, SnapshotRef, alert_grid, timestamp};
use crate::error::{Error, ErrorKind};

pub const HEALTH_SCHEMA: &str = "sharpeyes.health/1";
/// The JSON Schema of [`HealthNotice`].
pub const HEALTH_JSON_SCHEMA: &str = include_str!("../schema/health-1.schema.json");

/// What one frame measured, as published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthMeasures {
    pub brightness: f32,
    pub contrast: f32,
    pub sharpness: f32,
    pub cast: f32,
    pub alignment: f32,
}

/// One `sharpeyes.health/1` message. See `schema/health-1.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthNotice {
    pub schema: String,
    pub id: String,
    pub camera: AlertCamera,
    pub grid: AlertGrid,
    pub region_code: Option<String>,
    pub problem: String,
    /// `started` or `ended`.
    pub state: String,
    pub since: String,
    pub at: String,
    pub reason: Option<String>,
    pub measures: Option<HealthMeasures>,
    pub snapshot: Option<SnapshotRef>,
    pub node: String,
}

impl HealthNotice {
    /// `problem` on `camera` started (or ended) at `at`, first seen at `since`. The node and
    /// the snapshot are filled in when it is submitted.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        camera: &Camera,
        problem: &str,
        started: bool,
        since: SystemTime,
        at: SystemTime,
        reason: Option<String>,
        measures: Option<HealthMeasures>,
    ) -> Result<HealthNotice, Error> {
        let grid = alert_grid(config, camera.grid()).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "grid `{}` of camera `{}` is not in the configuration",
                    camera.grid(),
                    camera.id
                ),
            )
        })?;
        Ok(HealthNotice {
            schema: HEALTH_SCHEMA.to_owned(),
            id: ulid::Ulid::from_datetime(at).to_string(),
            camera: AlertCamera::of(camera),
            grid,
            region_code: camera
                .device_id
                .as_ref()
                .map(|d| d.region_code().to_owned()),
            problem: problem.to_owned(),
            state: if started { "started" } else { "ended" }.to_owned(),
            since: timestamp(since),
            at: timestamp(at),
            reason,
            measures,
            snapshot: None,
            node: String::new(),
        })
    }

    /// `{prefix}/health/{county}/{town}/{village}/{grid}/{problem}`; levels the camera's grid
    /// does not reach are [`ABSENT_LEVEL`].
    pub fn topic(&self, prefix: &str) -> String {
        let mut levels: Vec<&str> = self.grid.path.iter().map(|g| g.id.as_str()).collect();
        levels.resize(4, ABSENT_LEVEL);
        format!("{prefix}/health/{}/{}", levels.join("/"), self.problem)
    }
}
