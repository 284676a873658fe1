//! Camera status: what the API lists, what the metrics say, and what the retained status
//! topic carries, from each camera's ingest state.
//!
//! The reason shown is the error's kind in our own words (`connection refused`, `no frame
//! for 10 s (stall)`), never what the camera sent: a camera URL can point anywhere.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use sharpeyes_alerts::{Alerts, CameraPhase};
use sharpeyes_config::Camera;
use sharpeyes_ingest::CameraState;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// A camera taken over from another node: how long it went unanalysed ends when it streams
/// here.
pub(crate) struct Handoff {
    /// When its last holder was last seen holding it.
    pub since: std::time::Instant,
    pub seconds: prometheus::Histogram,
}

/// Every camera's state and last error, for the API and the operators' page.
#[derive(Clone, Default)]
pub struct CameraBoard(Arc<Mutex<Vec<CameraView>>>);

#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    pub grid: String,
    /// connecting, streaming, reconnecting, failed or stopped.
    pub state: &'static str,
    /// Why it is reconnecting or failed; the last error otherwise.
    pub reason: Option<String>,
    /// When it entered this state (RFC 3339); elsewhere in a cluster, when its node last said
    /// so.
    pub since: String,
    /// In a cluster: the node that runs it; none while no node does (`unassigned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its problems, online ratio and measures, once `[health]` has seen it here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::camera_health::HealthView>,
    /// Its configuration, for a camera this node runs (it may have been added over the API).
    #[serde(skip)]
    pub(crate) camera: Option<Arc<Camera>>,
}

impl CameraView {
    /// `camera` in `state` from now.
    pub(crate) fn new(camera: &Camera, state: &'static str) -> Self {
        Self {
            id: camera.id.clone(),
            name: camera.name.clone(),
            kind: camera.kind.as_str().to_owned(),
            unit: camera.unit.clone(),
            grid: camera.grid().to_owned(),
            state,
            reason: None,
            since: now_rfc3339(),
            node: None,
            health: None,
            camera: None,
        }
    }
}

/// A state another node reported, as one of ours (`unknown` for one this version does not
/// know).
pub(crate) fn phase_name(state: &str) -> &'static str {
    CameraPhase::ALL
        .into_iter()
        .map(CameraPhase::as_str)
        .find(|p| *p == state)
        .unwrap_or("unknown")
}

impl CameraBoard {
    pub fn list(&self) -> Vec<CameraView> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CameraView>> {
        // Each change is one statement: a panic elsewhere leaves the list consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().retain(|v| v.id != id);
    }

    pub(crate) fn add(&self, camera: &Camera) {
        let mut list = self.lock();
        list.retain(|v| v.id != camera.id);
        list.push(CameraView {
            camera: Some(Arc::new(camera.clone())),
            ..CameraView::new(camera, "connecting")
        });
    }

    fn set(&self, id: &str, state: &'static str, reason: Option<&str>) {
        let mut list = self.lock();
        if let Some(v) = list.iter_mut().find(|v| v.id == id) {
            v.state = state;
            // The last error stays visible after a recovery.
            if reason.is_some() {
                v.reason = reason.map(str::to_owned);
            }
            v.since = now_rfc3339();
        }
    }
}

impl CameraBoard {
    pub(crate) fn set_health(&self, id: &str, health: crate::camera_health::HealthView) {
        if let Some(v) = self.lock().iter_mut().find(|v| v.id == id) {
            v.health = Some(health);
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Where a camera's state changes are told.
#[derive(Clone)]
pub(crate) struct StatusSinks {
    pub board: CameraBoard,
    pub metrics: Arc<Metrics>,
    pub alerts: Alerts,
}

/// Follows one camera's ingest state until its task ends, telling each change once to the
/// board, the metrics and the retained status topic.
pub(crate) async fn follow(
    id: String,
    mut state: watch::Receiver<CameraState>,
    sinks: StatusSinks,
    mut handoff: Option<Handoff>,
) {
    let mut published: Option<CameraState> = None;
    loop {
        let current = state.borrow_and_update().clone();
        if let Some(h) = handoff.take_if(|_| current == CameraState::Streaming) {
            h.seconds.observe(h.since.elapsed().as_secs_f64());
        }
        if published.as_ref() != Some(&current) {
            tell(&id, &current, &sinks);
            published = Some(current);
        }
        // Ends once the camera task is gone, after its last state (`stopped`) was seen.
        if state.changed().await.is_err() {
            break;
        }
    }
}

fn tell(id: &str, state: &CameraState, sinks: &StatusSinks) {
    let (phase, error) = match state {
        CameraState::Connecting => (CameraPhase::Connecting, None),
        CameraState::Streaming => (CameraPhase::Streaming, None),
        CameraState::Backoff { error, .. } => (CameraPhase::Reconnecting, Some(error)),
        CameraState::Failed { error } => (CameraPhase::Failed, Some(error)),
        CameraState::Stopped => (CameraPhase::Stopped, None),
    };
    let reason = error.map(|e| e.kind().to_string());
    sinks.metrics.set_camera_state(id, phase);
    sinks.board.set(id, phase.as_str(), reason.as_deref());
    if let (CameraPhase::Reconnecting, Some(e)) = (phase, error) {
        sinks
            .metrics
            .reconnects
            .with_label_values(&[id, e.kind().label()])
            .inc();
    }
    match &reason {
        Some(r) => tracing::warn!(camera = %id, state = ?phase, "camera: {r}"),
        None => tracing::info!(camera = %id, state = ?phase, "camera state"),
    }
    sinks.alerts.camera_status(id, phase, reason.as_deref());
}
