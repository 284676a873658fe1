//! The alert service's counters, shared by the service and its MQTT link, and the stop
//! signal both select on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use tokio::sync::watch;

/// Counters for metrics and tests.
#[derive(Default)]
pub(crate) struct Stats {
    pub connected: AtomicBool,
    pub submitted: AtomicU64,
    pub suppressed: AtomicU64,
    /// Alert messages the broker acknowledged (escalations and duplicates included).
    pub published: AtomicU64,
    pub escalated: AtomicU64,
    pub acknowledged: AtomicU64,
    pub time_to_ack_ms_total: AtomicU64,
    pub store_errors: AtomicU64,
    pub queued: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub inbound_dropped: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Alerts queued, by (hazard, severity, source).
    pub by_kind: std::sync::Mutex<std::collections::BTreeMap<(String, String, String), u64>>,
    /// Times to acknowledge not yet taken by [`Alerts::take_ack_times`].
    pub ack_times: std::sync::Mutex<Vec<Duration>>,
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
