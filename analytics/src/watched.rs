//! What operators decide for the cameras (muted regions, accepted views), set by the service
//! as it reads them from the store and followed by every camera's analysis without
//! restarting the camera.

use std::sync::Arc;

use tokio::sync::watch;

/// A value the service sets and each camera's analysis follows from its next frame. Cheap
/// to clone.
pub struct Watched<T>(Arc<watch::Sender<Arc<T>>>);

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Default for Watched<T> {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Arc::default())))
    }
}

impl<T: PartialEq> Watched<T> {
    /// Replaces the value; `false` when nothing changed (no camera is told).
    pub fn set(&self, value: T) -> bool {
        self.0.send_if_modified(|current| {
            let changed = **current != value;
            if changed {
                *current = Arc::new(value);
            }
            changed
        })
    }
}

impl<T> Watched<T> {
    pub(crate) fn follow(&self) -> watch::Receiver<Arc<T>> {
        self.0.subscribe()
    }
}
