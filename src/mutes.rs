//! Muted regions from the store into every camera's analysis: read every [`POLL`], so a mute
//! made on any node of the cluster (or removed) reaches this node's cameras within it.

use std::time::Duration;

use sharpeyes_alerts::{Alerts, Mute};
use sharpeyes_analytics::{MutedRegions, Mutes};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the muted regions are read: an operator who mutes a region waits this long at
/// most before the next frame there is judged without it.
pub const POLL: Duration = Duration::from_secs(2);

/// The regions as the analysis wants them.
fn regions(mutes: &[Mute]) -> MutedRegions {
    let mut regions = MutedRegions::default();
    for m in mutes {
        regions.add(&m.camera, &m.hazard, m.region.clone());
    }
    regions
}

/// Follows the store's muted regions until `stop` turns true. While the store does not
/// answer, the regions last read stay.
pub fn start(alerts: Alerts, mutes: Mutes, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            match alerts.mutes().await {
                Ok(list) => {
                    failing = false;
                    if mutes.set(regions(&list)) {
                        tracing::info!(regions = list.len(), "muted regions changed");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cannot read the muted regions ({e}); the last ones read stay");
                }
                Err(_) => {}
            }
        }
    })
}
