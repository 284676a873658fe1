//! How long each camera was watched, online and usable, per hour: the history behind the
//! online rate (在线率) and the usable rate (完好率) of every grid, village, town and county.
//!
//! The health stage adds seconds every minute; `GET /api/health/report` and
//! `sharpeyes report` read them back. In Redis with `[redis]` (one hash per hour,
//! `{key_prefix}:health:hour:{hour}`, shared by a cluster's nodes: whichever runs a camera
//! counts it), else in `[node] data_dir/health-hours.json`. Kept [`KEEP_HOURS`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sharpeyes_config::Config;
use sharpeyes_config::schema::GridLevel;

/// A little over a month: the longest report a county asks for is monthly.
pub const KEEP_HOURS: u64 = 32 * 24;

/// Seconds a camera was watched, streaming, and streaming with a usable picture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub watched: u64,
    pub online: u64,
    pub usable: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.watched += other.watched;
        self.online += other.online;
        self.usable += other.usable;
    }
}

/// Hours since the epoch.
pub fn hour_of(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 3600)
}

/// Where the hours are kept.
pub enum HealthHistory {
    Redis {
        conn: sharpeyes_alerts::RedisConnection,
        prefix: String,
    },
    File {
        path: PathBuf,
    },
}

type Hours = BTreeMap<u64, BTreeMap<String, Tally>>;

impl HealthHistory {
    /// Redis when configured and reachable within 5 s, else the node's disk.
    pub async fn open(config: &Config) -> Self {
        if let Some(redis) = &config.redis {
            let connected = tokio::time::timeout(
                Duration::from_secs(5),
                sharpeyes_alerts::RedisStore::connection(redis),
            )
            .await;
            match connected {
                Ok(Ok(conn)) => {
                    return Self::Redis {
                        conn,
                        prefix: format!("{}:health:hour", redis.key_prefix),
                    };
                }
                Ok(Err(e)) => tracing::warn!("health history: {e}; keeping it on this node's disk"),
                Err(_) => {
                    tracing::warn!(
                        "health history: Redis did not answer; keeping it on this node's disk"
                    )
                }
            }
        }
        Self::File {
            path: config.node.data_dir.join("health-hours.json"),
        }
    }

    /// Adds `tallies` (camera -> seconds) to `hour`.
    pub async fn add(
        &mut self,
        hour: u64,
        tallies: &BTreeMap<String, Tally>,
    ) -> Result<(), String> {
        if tallies.is_empty() {
            return Ok(());
        }
        match self {
            Self::Redis { conn, prefix } => {
                let key = format!("{prefix}:{hour}");
                let mut pipe = redis::pipe();
                for (camera, t) in tallies {
                    pipe.cmd("HINCRBY")
                        .arg(&key)
                        .arg(format!("{camera}|w"))
                        .arg(t.watched)
                        .ignore();
                    pipe.cmd("HINCRBY")
                        .arg(&key)
                        .arg(format!("{camera}|o"))
                        .arg(t.online)
                        .ignore();
                    pipe.cmd("HINCRBY")
                        .arg(&key)
                        .arg(format!("{camera}|u"))
                        .arg(t.usable)
                        .ignore();
                }
                pipe.cmd("EXPIRE").arg(&key).arg(KEEP_HOURS * 3600).ignore();
                pipe.query_async::<()>(conn)
                    .await
                    .map_err(|e| format!("Redis: {e}"))
            }
            Self::File { path } => {
                let mut hours = read_file(path);
                let entry = hours.entry(hour).or_default();
                for (camera, t) in tallies {
                    entry.entry(camera.clone()).or_default().add(*t);
                }
                let first_kept = hour.saturating_sub(KEEP_HOURS);
                hours.retain(|h, _| *h >= first_kept);
                write_file(path, &hours)
            }
        }
    }

    /// Camera -> seconds, summed over the hours from `since` to now.
    pub async fn read(&mut self, since: SystemTime) -> Result<BTreeMap<String, Tally>, String> {
        let (first, last) = (hour_of(since), hour_of(SystemTime::now()));
        let mut sums: BTreeMap<String, Tally> = BTreeMap::new();
        match self {
            Self::Redis { conn, prefix } => {
                let mut pipe = redis::pipe();
                for hour in first..=last {
                    pipe.cmd("HGETALL").arg(format!("{prefix}:{hour}"));
                }
                let got: Vec<Vec<(String, u64)>> = pipe
                    .query_async(conn)
                    .await
                    .map_err(|e| format!("Redis: {e}"))?;
                for (field, value) in got.into_iter().flatten() {
                    let Some((camera, which)) = field.rsplit_once('|') else {
                        continue;
                    };
                    let t = sums.entry(camera.to_owned()).or_default();
                    match which {
                        "w" => t.watched += value,
                        "o" => t.online += value,
                        "u" => t.usable += value,
                        _ => {}
                    }
                }
            }
            Self::File { path } => {
                for (_, cameras) in read_file(path).range(first..=last) {
                    for (camera, t) in cameras {
                        sums.entry(camera.clone()).or_default().add(*t);
                    }
                }
            }
        }
        Ok(sums)
    }
}

fn read_file(path: &std::path::Path) -> Hours {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "health history unreadable ({e}); starting it again");
            Hours::new()
        }),
        Err(_) => Hours::new(),
    }
}

/// Written whole to a temporary file and renamed: a reader never sees half of it.
fn write_file(path: &std::path::Path, hours: &Hours) -> Result<(), String> {
    let shown = path.display();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{shown}: {e}"))?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(hours).map_err(|e| format!("{shown}: {e}"))?;
    std::fs::write(&tmp, bytes).map_err(|e| format!("{shown}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{shown}: {e}"))
}

/// One line of a report: a camera, or a grid, village, town or county with its cameras.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ReportRow {
    pub id: String,
    pub name: String,
    /// `camera`, `grid`, `village`, `town` or `county`.
    pub level: String,
    /// For a camera: its grid; else the cameras counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    pub cameras: usize,
    pub watched_seconds: u64,
    /// Online seconds over watched seconds; `null` when nothing was watched.
    pub online_rate: Option<f64>,
    pub usable_rate: Option<f64>,
    /// Up to five cameras with the lowest usable rate (groups only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub worst: Vec<String>,
}

/// The rows of `level` (`camera`, `grid`, `village`, `town`, `county`) from `tallies`,
/// worst usable rate first; every configured camera counts, watched or not. `None` for an
/// unknown level.
pub fn report(
    config: &Config,
    tallies: &BTreeMap<String, Tally>,
    level: &str,
) -> Option<Vec<ReportRow>> {
    let rate = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    let camera_rows: Vec<ReportRow> = config
        .cameras
        .iter()
        .map(|c| {
            let t = tallies.get(&c.id).copied().unwrap_or_default();
            ReportRow {
                id: c.id.clone(),
                name: c.name.clone(),
                level: "camera".into(),
                grid: Some(c.grid().to_owned()),
                cameras: 1,
                watched_seconds: t.watched,
                online_rate: rate(t.online, t.watched),
                usable_rate: rate(t.usable, t.watched),
                worst: Vec::new(),
            }
        })
        .collect();
    let by_usable = |a: &ReportRow, b: &ReportRow| {
        // Unwatched first (nobody knows they work), then the lowest rate.
        let key = |r: &ReportRow| r.usable_rate.unwrap_or(-1.0);
        key(a).total_cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    };
    if level == "camera" {
        let mut rows = camera_rows;
        rows.sort_by(by_usable);
        return Some(rows);
    }
    let wanted = match level {
        "grid" => GridLevel::Grid,
        "village" => GridLevel::Village,
        "town" => GridLevel::Town,
        "county" => GridLevel::County,
        _ => return None,
    };
    let mut groups: BTreeMap<String, (String, Tally, Vec<ReportRow>)> = BTreeMap::new();
    for (camera, row) in config.cameras.iter().zip(camera_rows) {
        let path = config.grid_path(camera.grid());
        // The ancestor at `wanted`; a camera whose grid stops above it counts in its own grid.
        let Some(group) = path
            .iter()
            .find(|g| g.level.unwrap_or(GridLevel::Grid) == wanted)
            .or(path.last())
        else {
            continue;
        };
        let t = tallies.get(&camera.id).copied().unwrap_or_default();
        let entry = groups
            .entry(group.id.clone())
            .or_insert_with(|| (group.name.clone(), Tally::default(), Vec::new()));
        entry.1.add(t);
        entry.2.push(row);
    }
    let mut rows: Vec<ReportRow> = groups
        .into_iter()
        .map(|(id, (name, t, mut cameras))| {
            cameras.sort_by(by_usable);
            ReportRow {
                id,
                name,
                level: level.to_owned(),
                grid: None,
                cameras: cameras.len(),
                watched_seconds: t.watched,
                online_rate: rate(t.online, t.watched),
                usable_rate: rate(t.usable, t.watched),
                worst: cameras.iter().take(5).map(|c| c.id.clone()).collect(),
            }
        })
        .collect();
    rows.sort_by(by_usable);
    Some(rows)
}
