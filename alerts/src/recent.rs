//! The alerts sent lately, for the HTTP API and the operators' page: a bounded list in
//! memory, and a live feed of new alerts and acknowledgements. With a shared store the list
//! and the feed hold every node's (see [`Alerts`](crate::Alerts)), so any node's page shows
//! the whole county.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::alert::Alert;
use crate::store::Ack;

/// Alerts kept for the API; older ones are in the subscribers' hands (and Redis).
pub(crate) const KEEP: usize = 1000;

/// An alert as the API shows it, with its acknowledgement once there is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentAlert {
    pub alert: Alert,
    pub ack: Option<Ack>,
    /// The departments (`[[dispatch]]` names) it was sent on to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dispatched: Vec<String>,
}

/// What the live feed carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum FeedEvent {
    Alert(Box<RecentAlert>),
    Ack(Ack),
    /// An alert sent on to departments.
    Dispatched {
        alert_id: String,
        to: Vec<String>,
    },
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

    /// Adds `alert` unless the list has it (this node's own alert coming back from the
    /// shared feed); returns the event the live feed got, if any.
    pub(crate) fn push(&self, mut alert: Alert) -> Option<FeedEvent> {
        // The JPEG is served by URL; the list stays small.
        alert.drop_inline_snapshot();
        let detected =
            ulid::Ulid::from_string(&alert.id).map_or_else(|_| SystemTime::now(), |u| u.datetime());
        let entry = RecentAlert {
            alert,
            ack: None,
            dispatched: Vec::new(),
        };
        {
            let mut list = self.alerts.lock().ok()?;
            if list.iter().any(|(_, e)| e.alert.id == entry.alert.id) {
                return None;
            }
            list.push_back((detected, entry.clone()));
            while list.len() > KEEP {
                list.pop_front();
            }
        }
        let event = FeedEvent::Alert(Box::new(entry));
        let _ = self.feed.send(event.clone());
        Some(event)
    }

    /// Notes `ack` on its alert unless it was noted already (a later verdict replaces the
    /// one noted); returns the event the live feed got, if any.
    pub(crate) fn acknowledged(&self, ack: &Ack) -> Option<FeedEvent> {
        {
            let mut list = self.alerts.lock().ok()?;
            let mut entries = list
                .iter_mut()
                .filter(|(_, e)| e.alert.id == ack.alert_id)
                .peekable();
            if entries
                .peek()
                .is_some_and(|(_, e)| e.ack.as_ref().is_some_and(|known| known.judges_alike(ack)))
            {
                return None;
            }
            for (_, e) in entries {
                e.ack = Some(ack.clone());
            }
        }
        let event = FeedEvent::Ack(ack.clone());
        let _ = self.feed.send(event.clone());
        Some(event)
    }

    /// Takes an event of the shared feed: another node's alert or acknowledgement (or this
    /// node's own, which is already here).
    pub(crate) fn take(&self, event: FeedEvent) {
        match event {
            FeedEvent::Alert(entry) => {
                let RecentAlert {
                    alert,
                    ack,
                    dispatched,
                } = *entry;
                let id = alert.id.clone();
                self.push(alert);
                if let Some(ack) = ack.filter(|a| a.alert_id == id) {
                    self.acknowledged(&ack);
                }
                if !dispatched.is_empty() {
                    self.dispatched(&id, &dispatched);
                }
            }
            FeedEvent::Ack(ack) => {
                self.acknowledged(&ack);
            }
            FeedEvent::Dispatched { alert_id, to } => {
                self.dispatched(&alert_id, &to);
            }
        }
    }

    /// Notes that `alert_id` went to departments `to`, unless noted already; returns the
    /// event the live feed got, if any.
    pub(crate) fn dispatched(&self, alert_id: &str, to: &[String]) -> Option<FeedEvent> {
        let mut added = Vec::new();
        {
            let mut list = self.alerts.lock().ok()?;
            let (_, entry) = list.iter_mut().find(|(_, e)| e.alert.id == alert_id)?;
            for name in to {
                if !entry.dispatched.contains(name) {
                    entry.dispatched.push(name.clone());
                    added.push(name.clone());
                }
            }
        }
        if added.is_empty() {
            return None;
        }
        let event = FeedEvent::Dispatched {
            alert_id: alert_id.to_owned(),
            to: added,
        };
        let _ = self.feed.send(event.clone());
        Some(event)
    }

    /// A listed alert, as it was raised.
    pub(crate) fn alert(&self, alert_id: &str) -> Option<Alert> {
        let list = self.alerts.lock().ok()?;
        list.iter()
            .find(|(_, e)| e.alert.id == alert_id)
            .map(|(_, e)| e.alert.clone())
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
