//! The alert service's counters, shared by the service and its MQTT link, and the stop
//! signal both select on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use tokio::sync::watch;

/// Counters for metrics and tests.
#[derive(Default)]
pub(crate) struct Stats {
    pub connected: AtomicBool,
    /// The broker took this connection's subscriptions (acknowledgements, sensor readings).
    pub subscribed: AtomicBool,
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
    /// Panics caught while handling one escalation or one acknowledgement.
    pub panics: AtomicU64,
    /// Panics of the MQTT link, each followed by a new connection.
    pub link_restarts: AtomicU64,
    /// Alerts handed to the link and not yet acknowledged by the broker (in its command
    /// channel, its queue, or in flight).
    pub alerts_waiting: AtomicUsize,
    /// Alerts refused because too many waited, by severity.
    pub refused: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Alerts queued, by (hazard, severity, source).
    pub by_kind: std::sync::Mutex<std::collections::BTreeMap<(String, String, String), u64>>,
    /// Times to acknowledge not yet taken by [`Alerts::take_ack_times`].
    pub ack_times: std::sync::Mutex<Vec<Duration>>,
    /// Verdicts given here, by (hazard, camera, verdict).
    pub verdicts: std::sync::Mutex<std::collections::BTreeMap<(String, String, String), u64>>,
    /// Alerts dispatched from here, by (department, hazard).
    pub dispatched: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

impl Stats {
    /// The connection is gone, and its subscriptions with it.
    pub fn link_down(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.connected.store(false, Relaxed);
        self.subscribed.store(false, Relaxed);
    }
}

/// Runs `work` (one escalation, one acknowledgement): a panic in it is logged with `what`,
/// counted in `stats.panics`, and answered with `None`, so the loop goes on with the next.
/// Whatever an escalation in the shared store or a message on the broker holds, it must not
/// end escalation or acknowledgement for everyone.
pub(crate) async fn guarded<T>(
    stats: &Stats,
    what: &str,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(value) => Some(value),
        Err(panic) => {
            let message = sharpeyes_analytics::panic_message(panic.as_ref());
            tracing::error!(task = what, panic = %message, "a panic while handling one item (a bug; please report it): counted; the task goes on");
            stats
                .panics
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_one_item_is_counted_and_the_loop_goes_on() {
        let stats = Stats::default();
        let caught: Option<u32> = guarded(&stats, "escalation", async {
            panic!("an escalation nobody foresaw")
        })
        .await;
        assert_eq!(caught, None);
        assert_eq!(guarded(&stats, "escalation", async { 7 }).await, Some(7));
        assert_eq!(stats.panics.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
