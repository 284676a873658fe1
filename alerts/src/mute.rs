//! Muting a region of one camera for one hazard, from a false alarm there: the boxes of the
//! false alarm, with a margin, become an exclude zone every node's analysis follows.

use std::fmt;

use crate::alert::Alert;
use crate::error::Error;
use crate::service::{Alerts, MAX_BY, plain_text};
use crate::store::{Mute, Verdict};

/// Most regions muted on one camera: past it, the camera's zones want redrawing.
pub const MAX_MUTES_PER_CAMERA: usize = 16;

/// How far a muted region reaches past the false alarm's boxes, as a share of their size
/// each way: a reflection drifts with the sun, a flag with the wind.
const MARGIN: f64 = 0.25;

/// A muted region, and whether this call made it (or the alert had one already).
#[derive(Debug, Clone, PartialEq)]
pub struct Muted {
    pub mute: Mute,
    pub created: bool,
}

/// Why a region was not muted.
#[derive(Debug)]
pub enum MuteRefused {
    /// No alert of that id was issued, or it is past its acknowledgement time.
    UnknownAlert(String),
    /// The alert cannot be muted as it stands (no false-alarm verdict, no camera or boxes,
    /// the camera has [`MAX_MUTES_PER_CAMERA`]).
    Conflict(String),
    /// The store did not answer.
    Store(Error),
}

impl fmt::Display for MuteRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownAlert(id) => write!(
                f,
                "no alert {id} was issued here, or it is past its acknowledgement time"
            ),
            Self::Conflict(why) => f.write_str(why),
            Self::Store(e) => write!(f, "{e}"),
        }
    }
}

/// The false alarm's boxes, joined and widened by [`MARGIN`], as a normalised rectangle.
fn region(alert: &Alert) -> Option<Vec<[f64; 2]>> {
    let frame = alert.frame?;
    if alert.boxes.is_empty() || frame.width == 0 || frame.height == 0 {
        return None;
    }
    let [mut x1, mut y1, mut x2, mut y2] = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for b in &alert.boxes {
        let [bx1, by1, bx2, by2] = b.in_frame(frame);
        (x1, y1, x2, y2) = (x1.min(bx1), y1.min(by1), x2.max(bx2), y2.max(by2));
    }
    let (dx, dy) = ((x2 - x1) * MARGIN, (y2 - y1) * MARGIN);
    let [x1, y1, x2, y2] = [x1 - dx, y1 - dy, x2 + dx, y2 + dy].map(|v| v.clamp(0.0, 1.0));
    (x2 > x1 && y2 > y1).then(|| vec![[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
}

impl Alerts {
    /// Mutes the region of `alert_id`'s boxes on its camera for its hazard. Only for an
    /// alert judged a false alarm. Muting the same alert again answers the mute it has.
    pub async fn mute(&self, alert_id: &str, by: Option<String>) -> Result<Muted, MuteRefused> {
        let alert = (self.issued_alert(alert_id).await)
            .ok_or_else(|| MuteRefused::UnknownAlert(alert_id.to_owned()))?;
        let verdict = (self.store().acknowledgement(&alert.id).await)
            .map_err(MuteRefused::Store)?
            .and_then(|ack| ack.verdict);
        if verdict != Some(Verdict::FalseAlarm) {
            return Err(MuteRefused::Conflict(format!(
                "alert {} is not judged a false alarm: give it the verdict `false-alarm` first",
                alert.id
            )));
        }
        let (Some(camera), Some(region)) = (&alert.camera, region(&alert)) else {
            return Err(MuteRefused::Conflict(format!(
                "alert {} has no camera picture with boxes to mute",
                alert.id
            )));
        };
        let mutes = self.store().mutes().await.map_err(MuteRefused::Store)?;
        if let Some(known) = mutes.iter().find(|m| m.alert_id == alert.id) {
            return Ok(Muted {
                mute: known.clone(),
                created: false,
            });
        }
        if mutes.iter().filter(|m| m.camera == camera.id).count() >= MAX_MUTES_PER_CAMERA {
            return Err(MuteRefused::Conflict(format!(
                "camera {} has {MAX_MUTES_PER_CAMERA} muted regions already: remove some, or draw its zones in the configuration",
                camera.id
            )));
        }
        let now = std::time::SystemTime::now();
        let mute = Mute {
            id: ulid::Ulid::from_datetime(now).to_string(),
            camera: camera.id.clone(),
            hazard: alert.hazard.clone(),
            region,
            alert_id: alert.id.clone(),
            by: plain_text(by, MAX_BY),
            at: humantime::format_rfc3339_millis(now).to_string(),
        };
        self.store()
            .put_mute(&mute)
            .await
            .map_err(MuteRefused::Store)?;
        tracing::info!(mute = %mute.id, camera = %mute.camera, hazard = %mute.hazard, alert = %mute.alert_id, by = mute.by.as_deref().unwrap_or("-"), "region muted");
        Ok(Muted {
            mute,
            created: true,
        })
    }

    /// Removes a muted region: `false` when there is none of that id.
    pub async fn unmute(&self, id: &str) -> Result<bool, Error> {
        let removed = self.store().remove_mute(id).await?;
        if removed {
            tracing::info!(mute = %id, "muted region removed");
        }
        Ok(removed)
    }

    /// Every muted region.
    pub async fn mutes(&self) -> Result<Vec<Mute>, Error> {
        self.store().mutes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertBox, FrameSize};

    fn alert(boxes: &[[f32; 4]]) -> Alert {
        let mut alert: Alert = serde_json::from_value(serde_json::json!({
            "schema": crate::SCHEMA, "id": "01JD0000000000000000000000", "hazard": "fire",
            "severity": "critical", "confidence": 0.9, "source": "video",
            "camera": {"id": "cam", "name": "cam", "kind": "social-unit", "unit": null},
            "grid": {"id": "g", "path": [], "centre": null}, "region_code": null,
            "detected_at": "2026-12-04T10:00:00Z", "frame": null, "boxes": [], "zone": null,
            "snapshot": null, "evidence": [], "escalation_level": 0
        }))
        .unwrap();
        alert.frame = Some(FrameSize {
            width: 1000,
            height: 500,
        });
        alert.boxes = (boxes.iter())
            .map(|&bbox| AlertBox {
                class: "fire".into(),
                score: 0.9,
                bbox,
                track_id: 1,
            })
            .collect();
        alert
    }

    #[test]
    fn the_region_is_the_boxes_joined_with_a_margin_inside_the_frame() {
        let r = region(&alert(&[
            [100.0, 100.0, 200.0, 200.0],
            [300.0, 150.0, 500.0, 300.0],
        ]))
        .unwrap();
        // Joined: 100..500 x 100..300; a quarter more each way: 0..600 x 50..350.
        let expect = [[0.0, 0.1], [0.6, 0.1], [0.6, 0.7], [0.0, 0.7]];
        for (got, want) in r.iter().zip(expect) {
            assert!(
                (got[0] - want[0]).abs() < 1e-9 && (got[1] - want[1]).abs() < 1e-9,
                "{r:?}"
            );
        }
        // At the frame's edge the margin stops there.
        let r = region(&alert(&[[900.0, 400.0, 1000.0, 500.0]])).unwrap();
        assert_eq!(r[2], [1.0, 1.0]);
        assert_eq!(region(&alert(&[])), None, "nothing to mute without boxes");
    }
}
