//! Accepting a camera's new view: a camera re-aimed on purpose stays `moved` in the health
//! diagnosis until an operator says the view it shows now is the one it should show. The
//! acceptance goes through the store, so the node that runs the camera sees it whichever
//! node the operator asked.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::error::Error;
use crate::service::Alerts;

impl Alerts {
    /// Records that `camera`'s view as it is now is its reference; answers when (ms since
    /// the epoch). The caller checks that the camera exists.
    pub async fn accept_view(&self, camera: &str) -> Result<u64, Error> {
        let at_ms = crate::store::millis_since_epoch(SystemTime::now());
        self.store().accept_view(camera, at_ms).await?;
        tracing::info!(camera = %camera, "camera view accepted: its health reference is learned again");
        Ok(at_ms)
    }

    /// When each camera's view was last accepted (camera id -> ms since the epoch).
    pub async fn accepted_views(&self) -> Result<BTreeMap<String, u64>, Error> {
        self.store().accepted_views().await
    }
}
