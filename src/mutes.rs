//! Operators' word on cameras, from the store into every camera's analysis: muted regions
//! and accepted views, read every [`POLL`], so a mute made on any node of the cluster (or
//! removed), or a view accepted there, reaches this node's cameras within it.

use std::time::Duration;

use sharpeyes_alerts::{Alerts, Mute};
use sharpeyes_analytics::health::AcceptedViews;
use sharpeyes_analytics::{MutedRegions, Mutes};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the muted regions are read: an operator who mutes a region waits this long at
/// most before the next frame there is judged without it.
pub const POLL: Duration = Duration::from_secs(2);

/// Most corners a muted region may have: this service makes rectangles, and every analysed
/// frame tests every object against every region of its camera.
const MAX_CORNERS: usize = 64;

/// The regions as the analysis wants them, and the ids of those left out. A region this
/// service would not have made (too many corners, a corner outside the frame: written into
/// Redis by someone else) is left out, so it can neither slow every frame down nor mute a
/// whole camera by accident.
fn regions(mutes: &[Mute]) -> (MutedRegions, Vec<String>) {
    let mut regions = MutedRegions::default();
    let mut ignored = Vec::new();
    for m in mutes {
        let inside = |p: &[f64; 2]| p.iter().all(|v| (0.0..=1.0).contains(v));
        if (3..=MAX_CORNERS).contains(&m.region.len()) && m.region.iter().all(inside) {
            regions.add(&m.camera, &m.hazard, m.region.clone());
        } else {
            ignored.push(m.id.clone());
        }
    }
    (regions, ignored)
}

/// Follows the store's muted regions and accepted views until `stop` turns true. While the
/// store does not answer, the regions and views last read stay.
pub fn start(
    alerts: Alerts,
    mutes: Mutes,
    views: AcceptedViews,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        let mut failing = false;
        // Said once each time it changes, not at every read.
        let mut ignored_before = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            match alerts.mutes().await {
                Ok(list) => {
                    failing = false;
                    let (regions, ignored) = regions(&list);
                    if !ignored.is_empty() && ignored != ignored_before {
                        tracing::warn!(mutes = ?ignored, "muted regions that are not polygons inside the frame are ignored");
                    }
                    ignored_before = ignored;
                    if mutes.set(regions) {
                        tracing::info!(regions = list.len(), "muted regions changed");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cannot read the muted regions ({e}); the last ones read stay");
                }
                Err(_) => {}
            }
            // Its failures are the mutes' (one store): said above.
            if let Ok(accepted) = alerts.accepted_views().await
                && views.set(accepted)
            {
                tracing::debug!("accepted camera views changed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mute(id: &str, region: Vec<[f64; 2]>) -> Mute {
        Mute {
            id: id.into(),
            camera: "cam".into(),
            hazard: "fire".into(),
            region,
            alert_id: "01JD0000000000000000000000".into(),
            by: None,
            at: "2026-12-04T10:00:00Z".into(),
        }
    }

    #[test]
    fn only_polygons_inside_the_frame_are_applied() {
        let square = vec![[0.1, 0.1], [0.2, 0.1], [0.2, 0.2], [0.1, 0.2]];
        let many = (0..1000).map(|i| [f64::from(i) / 1000.0, 0.5]).collect();
        let (got, ignored) = regions(&[
            mute("a", square.clone()),
            mute("b", many),
            mute("c", vec![[0.0, 0.0], [f64::NAN, 0.5], [1.0, 1.0]]),
            mute("d", vec![[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]),
            mute("e", vec![[0.0, 0.0], [1.0, 1.0]]),
        ]);
        assert_eq!(got.of("cam", "fire"), [square]);
        assert_eq!(ignored, ["b", "c", "d", "e"]);
    }
}
