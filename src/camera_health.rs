//! Camera health: the diagnosis analytics makes of every decoded frame, and video loss from
//! ingest, turned into what maintenance teams and the API see.
//!
//! In: [`HealthReport`]s from each camera's analysis task (a problem started or ended after
//! `[health] hold`, or the latest measures), and every second the camera board (a camera not
//! streaming for `offline_after` has `video-loss`). Out, on each change: a
//! `sharpeyes.health/1` message through the outbox (with a JPEG of the frame that showed a
//! problem start), the camera's current problems retained on `{prefix}/cameras/{id}/health`,
//! the board's `health` entry for `/api/cameras`, and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use sharpeyes_alerts::{Alerts, HealthMeasures, HealthNotice};
use sharpeyes_analytics::HealthReport;
use sharpeyes_analytics::health::Measures;
use sharpeyes_config::{Camera, Config};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::health_history::{HealthHistory, Tally, hour_of};
use crate::status::CameraBoard;

/// The problem a camera has when it has not streamed for `offline_after`.
pub const VIDEO_LOSS: &str = "video-loss";
/// How often the board is read for video loss.
const TICK: Duration = Duration::from_secs(1);
/// How often the seconds counted are added to the history: what a report can miss.
const FLUSH: Duration = Duration::from_secs(10);
/// The window of `online_ratio_24h`, in one-minute buckets.
const WINDOW_MINUTES: usize = 24 * 60;

/// What `/api/cameras` shows of a camera's health.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct HealthView {
    /// Current problems, by name.
    pub problems: Vec<String>,
    /// When the oldest current problem was first seen (RFC 3339); none while healthy.
    pub since: Option<String>,
    /// Share of the last 24 h (as far as this node watched it) the camera was streaming.
    pub online_ratio_24h: f64,
    /// The latest frame's measures; none before the first analysed frame.
    pub measures: Option<HealthMeasures>,
    /// Where the JPEG of the latest problem start is (an API path), while it has problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// The health metrics.
#[derive(Clone)]
pub struct HealthMetrics {
    /// 1 while `camera` has `problem`.
    problem: IntGaugeVec,
    /// Problems that started and ended, by problem.
    changes: IntCounterVec,
}

impl HealthMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let problem = IntGaugeVec::new(
            Opts::new(
                "sharpeyes_camera_problem",
                "1 while the camera has the problem (video quality diagnosis, or video-loss)",
            ),
            &["camera", "problem"],
        )?;
        let changes = IntCounterVec::new(
            Opts::new(
                "sharpeyes_camera_health_changes_total",
                "Camera problems that started or ended, after [health] hold",
            ),
            &["problem", "state"],
        )?;
        registry.register(Box::new(problem.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        Ok(Self { problem, changes })
    }
}

/// Starts the health stage; it ends when `stop` turns true.
pub fn start(
    config: Arc<Config>,
    alerts: Alerts,
    board: CameraBoard,
    metrics: HealthMetrics,
    reports: mpsc::UnboundedReceiver<HealthReport>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let history = HealthHistory::open(&config).await;
        let stage = HealthStage {
            config,
            alerts,
            board,
            metrics,
            cameras: HashMap::new(),
            history,
            counted: BTreeMap::new(),
            counted_hour: hour_of(SystemTime::now()),
            flushed: Instant::now(),
        };
        stage.run(reports, stop).await
    })
}

/// One camera as the stage knows it.
struct CameraHealth {
    camera: Arc<Camera>,
    /// Current problems, since when they were first seen.
    problems: BTreeMap<String, SystemTime>,
    measures: Option<Measures>,
    /// The API path of the JPEG of its latest problem start, while it has problems.
    snapshot: Option<String>,
    /// Since when the board has shown it not streaming.
    not_streaming: Option<(Instant, SystemTime)>,
    online: OnlineWindow,
}

struct HealthStage {
    config: Arc<Config>,
    alerts: Alerts,
    board: CameraBoard,
    metrics: HealthMetrics,
    cameras: HashMap<String, CameraHealth>,
    history: HealthHistory,
    /// Seconds counted since the last flush, all in `counted_hour`.
    counted: BTreeMap<String, Tally>,
    counted_hour: u64,
    flushed: Instant,
}

impl HealthStage {
    async fn run(
        mut self,
        mut reports: mpsc::UnboundedReceiver<HealthReport>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => {
                    self.flush().await;
                    return;
                }
                report = reports.recv() => match report {
                    Some(r) => self.on_report(r).await,
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn entry(&mut self, camera: &Arc<Camera>) -> &mut CameraHealth {
        self.cameras
            .entry(camera.id.clone())
            .or_insert_with(|| CameraHealth {
                camera: camera.clone(),
                problems: BTreeMap::new(),
                measures: None,
                snapshot: None,
                not_streaming: None,
                online: OnlineWindow::default(),
            })
    }

    async fn on_report(&mut self, report: HealthReport) {
        let hold = self.config.health.hold;
        let entry = self.entry(&report.camera);
        entry.camera = report.camera.clone();
        entry.measures = Some(report.measures);
        let mut changed = Vec::new();
        for change in &report.changes {
            let name = change.problem.as_str().to_owned();
            // The change is decided `hold` after the problem was first seen (or last seen).
            let mut since = report.at.checked_sub(hold).unwrap_or(report.at);
            if change.started {
                entry.problems.insert(name.clone(), since);
            } else if let Some(began) = entry.problems.remove(&name) {
                since = began;
            }
            changed.push((name, change.started, since));
        }
        let camera = report.camera.clone();
        for (problem, started, since) in changed {
            let snapshot = started.then(|| self.snapshot(&report)).flatten();
            let shown = self
                .publish(
                    &camera,
                    &problem,
                    started,
                    since,
                    None,
                    Some(report.measures),
                    snapshot,
                )
                .await;
            if let Some(entry) = self.cameras.get_mut(&camera.id) {
                if shown.is_some() {
                    entry.snapshot = shown;
                } else if entry.problems.is_empty() {
                    entry.snapshot = None;
                }
            }
        }
        self.show(&camera.id);
        if !report.changes.is_empty() {
            self.retain(&camera.id);
        }
    }

    /// Video loss from the board, and the online window.
    async fn on_tick(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let offline_after = self.config.health.offline_after;
        let list = self.board.list();
        // Cameras no longer here: forget them (their node, if any, reports them now), with
        // their problem gauges, or a removed camera stays "occluded" in /metrics for good.
        let problem = &self.metrics.problem;
        self.cameras.retain(|id, _| {
            let here = list.iter().any(|v| v.id == *id);
            if !here {
                crate::metrics::forget(problem, id);
            }
            here
        });
        let hour = hour_of(wall);
        if hour != self.counted_hour {
            self.flush().await;
            self.counted_hour = hour;
        }
        let mut events = Vec::new();
        let mut seconds = Vec::new();
        for view in &list {
            let Some(camera) = view.camera.clone() else {
                continue;
            };
            if !self.config.health.enabled_for(&camera) {
                continue;
            }
            let streaming = view.state == "streaming";
            let entry = self.entry(&camera);
            entry.online.record(wall, streaming, TICK);
            let usable = streaming && entry.problems.keys().all(|p| p == VIDEO_LOSS);
            seconds.push((camera.id.clone(), streaming, usable));
            if streaming {
                entry.not_streaming = None;
                if let Some(since) = entry.problems.remove(VIDEO_LOSS) {
                    events.push((camera.clone(), false, since, None));
                }
            } else {
                let (since_i, since) = *entry.not_streaming.get_or_insert((now, wall));
                if now.duration_since(since_i) >= offline_after
                    && !entry.problems.contains_key(VIDEO_LOSS)
                {
                    entry.problems.insert(VIDEO_LOSS.to_owned(), since);
                    let reason = view
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("not streaming ({})", view.state));
                    events.push((camera.clone(), true, since, Some(reason)));
                }
            }
        }
        let secs = TICK.as_secs();
        for (camera, streaming, usable) in seconds {
            let t = self.counted.entry(camera).or_default();
            t.watched += secs;
            t.online += if streaming { secs } else { 0 };
            t.usable += if usable { secs } else { 0 };
        }
        for id in list.iter().map(|v| v.id.clone()) {
            self.show(&id);
        }
        for (camera, started, since, reason) in events {
            self.publish(&camera, VIDEO_LOSS, started, since, reason, None, None)
                .await;
            self.retain(&camera.id);
        }
        if self.flushed.elapsed() >= FLUSH {
            self.flush().await;
        }
    }

    /// Adds the seconds counted to the history; kept for the next try when it fails.
    async fn flush(&mut self) {
        self.flushed = Instant::now();
        if let Err(e) = self.history.add(self.counted_hour, &self.counted).await {
            tracing::warn!("health history: {e}; trying again with the next seconds");
            return;
        }
        self.counted.clear();
    }

    /// The frame of a problem start, as a JPEG within the alerts' size cap.
    fn snapshot(&self, report: &HealthReport) -> Option<sharpeyes_alerts::Snapshot> {
        let f = &report.frame;
        let max = self.config.alerts.snapshot_max_bytes;
        let rendered =
            sharpeyes_ingest::cpu::measure(sharpeyes_ingest::cpu::Stage::Snapshot, || {
                sharpeyes_alerts::render(&f.rgb, f.width, f.height, &[], max)
            });
        match rendered {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(camera = %report.camera.id, "health snapshot: {e}");
                None
            }
        }
    }

    /// Counts, logs and sends one change; returns the API path of its snapshot, if any.
    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        camera: &Camera,
        problem: &str,
        started: bool,
        since: SystemTime,
        reason: Option<String>,
        measures: Option<Measures>,
        snapshot: Option<sharpeyes_alerts::Snapshot>,
    ) -> Option<String> {
        let state = if started { "started" } else { "ended" };
        self.metrics
            .problem
            .with_label_values(&[camera.id.as_str(), problem])
            .set(i64::from(started));
        self.metrics
            .changes
            .with_label_values(&[problem, state])
            .inc();
        if started {
            tracing::warn!(camera = %camera.id, problem, reason = reason.as_deref().unwrap_or("-"), "camera problem");
        } else {
            tracing::info!(camera = %camera.id, problem, "camera problem ended");
        }
        let notice = HealthNotice::new(
            &self.config,
            camera,
            problem,
            started,
            since,
            SystemTime::now(),
            reason,
            measures.map(published),
        );
        let id = notice.as_ref().ok().map(|n| n.id.clone());
        let result = match notice {
            Ok(n) => self.alerts.submit_health(n, snapshot.as_ref()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(camera = %camera.id, problem, "health message not sent: {e}");
            return None;
        }
        id.filter(|_| snapshot.is_some())
            .map(|id| format!("/api/alerts/{id}/snapshot"))
    }

    /// The camera's current health, retained.
    fn retain(&self, id: &str) {
        let Some(view) = self.view(id) else { return };
        self.alerts.camera_health(
            id,
            serde_json::json!({
                "schema": "sharpeyes.camera-health/1",
                "camera": id,
                "problems": view.problems,
                "since": view.since,
                "online_ratio_24h": view.online_ratio_24h,
                "measures": view.measures,
                "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            }),
        );
    }

    fn view(&self, id: &str) -> Option<HealthView> {
        let h = self.cameras.get(id)?;
        Some(HealthView {
            problems: h.problems.keys().cloned().collect(),
            since: h
                .problems
                .values()
                .min()
                .map(|t| humantime::format_rfc3339_millis(*t).to_string()),
            online_ratio_24h: h.online.ratio(),
            measures: h.measures.map(published),
            snapshot: h.snapshot.clone(),
        })
    }

    fn show(&self, id: &str) {
        if let Some(view) = self.view(id) {
            self.board.set_health(id, view);
        }
    }
}

fn published(m: Measures) -> HealthMeasures {
    // Rounded: the fourth digit of a mean grey level is noise.
    let r = |v: f32| (v * 100.0).round() / 100.0;
    HealthMeasures {
        brightness: r(m.brightness),
        contrast: r(m.contrast),
        sharpness: r(m.sharpness),
        cast: r(m.cast),
        alignment: r(m.alignment),
    }
}

/// Seconds online and watched per minute over the last 24 h.
#[derive(Default)]
struct OnlineWindow {
    /// (minute since the epoch, seconds online, seconds watched), oldest first.
    minutes: std::collections::VecDeque<(u64, u32, u32)>,
}

impl OnlineWindow {
    fn record(&mut self, at: SystemTime, online: bool, span: Duration) {
        let minute = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        let secs = span.as_secs().max(1) as u32;
        match self.minutes.back_mut() {
            Some(last) if last.0 == minute => {
                last.1 += if online { secs } else { 0 };
                last.2 += secs;
            }
            _ => self
                .minutes
                .push_back((minute, if online { secs } else { 0 }, secs)),
        }
        while self
            .minutes
            .front()
            .is_some_and(|f| f.0 + (WINDOW_MINUTES as u64) <= minute)
        {
            self.minutes.pop_front();
        }
    }

    /// 1.0 before anything was watched: nothing says otherwise yet.
    fn ratio(&self) -> f64 {
        let (online, watched) = self.minutes.iter().fold((0u64, 0u64), |(o, w), m| {
            (o + u64::from(m.1), w + u64::from(m.2))
        });
        if watched == 0 {
            1.0
        } else {
            online as f64 / watched as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_online_window_counts_the_last_day_only() {
        let mut w = OnlineWindow::default();
        assert_eq!(w.ratio(), 1.0);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // An hour offline, then three hours online.
        for s in 0..4 * 3600 {
            w.record(
                start + Duration::from_secs(s),
                s >= 3600,
                Duration::from_secs(1),
            );
        }
        assert!((w.ratio() - 0.75).abs() < 1e-9, "{}", w.ratio());
        // A day later, only the last day counts: all online.
        let later = start + Duration::from_secs(4 * 3600 + 24 * 3600);
        w.record(later, true, Duration::from_secs(1));
        assert_eq!(w.ratio(), 1.0);
        assert!(w.minutes.len() <= WINDOW_MINUTES);
    }
}
