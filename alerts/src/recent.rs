//! The alerts this node sent lately, for the HTTP API and the operators' page: a bounded
//! list in memory, and a live feed of new alerts and acknowledgements.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::alert::Alert;
use crate::store::Ack;

/// Alerts kept for the API; older ones are in the subscribers' hands (and Redis).
const KEEP: usize = 1000;

/// An alert as the API shows it, with its acknowledgement once there is one.
#[derive(Debug, Clone, Serialize)]
pub struct RecentAlert {
    pub alert: Alert,
    pub ack: Option<Ack>,
}

/// What the live feed carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum FeedEvent {
    Alert(Box<RecentAlert>),
    Ack(Ack),
}

/// Which recent alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// An alert matches when this grid is on its path (a village matches its grids' alerts).
    pub grid: Option<String>,
    pub hazard: Option<String>,
    /// Detected at or after.
    pub since: Option<SystemTime>,
    pub limit: Option<usize>,
}

pub(crate) struct Recent {
    alerts: Mutex<VecDeque<(SystemTime, RecentAlert)>>,
    feed: broadcast::Sender<FeedEvent>,
}

impl Recent {
    pub(crate) fn new() -> Self {
        Self {
            alerts: Mutex::new(VecDeque::new()),
            feed: broadcast::channel(256).0,
        }
    }

    pub(crate) fn push(&self, mut alert: Alert, detected: SystemTime) {
        // The JPEG is served by URL; the list stays small.
        if let Some(s) = alert.snapshot.as_mut() {
            s.inline_base64 = None;
        }
        let entry = RecentAlert { alert, ack: None };
        if let Ok(mut list) = self.alerts.lock() {
            list.push_back((detected, entry.clone()));
            while list.len() > KEEP {
                list.pop_front();
            }
        }
        let _ = self.feed.send(FeedEvent::Alert(Box::new(entry)));
    }

    pub(crate) fn acknowledged(&self, ack: &Ack) {
        if let Ok(mut list) = self.alerts.lock() {
            for (_, e) in list.iter_mut().filter(|(_, e)| e.alert.id == ack.alert_id) {
                e.ack = Some(ack.clone());
            }
        }
        let _ = self.feed.send(FeedEvent::Ack(ack.clone()));
    }

    /// Newest first.
    pub(crate) fn list(&self, filter: &AlertFilter) -> Vec<RecentAlert> {
        let Ok(list) = self.alerts.lock() else {
            return Vec::new();
        };
        list.iter()
            .rev()
            .filter(|(at, e)| {
                filter.since.is_none_or(|s| *at >= s)
                    && filter.hazard.as_ref().is_none_or(|h| *h == e.alert.hazard)
                    && filter
                        .grid
                        .as_ref()
                        .is_none_or(|g| e.alert.grid.path.iter().any(|step| step.id == *g))
            })
            .take(filter.limit.unwrap_or(100).min(KEEP))
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }
}
