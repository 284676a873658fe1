//! What ingest hands to analytics: one decoded frame, and the slot it waits in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A decoded frame: packed RGB8 (`width * height * 3` bytes, no row padding), already scaled
/// towards the detection size with the camera's aspect ratio kept.
#[derive(Debug, Clone)]
pub struct Frame {
    pub camera: Arc<str>,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// When the frame's access unit arrived from the network.
    pub received_at: SystemTime,
    pub keyframe: bool,
    /// Decoded in verify mode (a sensor the camera covers is in alarm): analyse it whatever
    /// the motion gate says.
    pub verifying: bool,
}

/// The bounded per-camera hand-off to analytics: it holds the newest frame only. A frame put
/// while an older one still waits replaces it, and the older one is counted as dropped, so a
/// slow analytics stage never makes the network reader wait.
///
/// It also keeps the last frame put, taken or not, for whoever needs a picture of the camera
/// now (the snapshot of a sensor alert) without copying every frame.
#[derive(Debug, Default)]
pub struct FrameSlot {
    frame: Mutex<Option<Arc<Frame>>>,
    latest: Mutex<Option<Arc<Frame>>>,
    ready: tokio::sync::Notify,
    dropped: AtomicU64,
    /// Verify mode as asked for; the camera task reads it at each keyframe.
    verify: AtomicBool,
    /// Analytics wants every keyframe for now; the camera task reads it at each keyframe.
    attention: AtomicBool,
}

impl FrameSlot {
    /// Puts a frame; returns `true` if it replaced (dropped) one that was never taken.
    pub fn put(&self, frame: Frame) -> bool {
        let frame = Arc::new(frame);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(frame.clone());
        let replaced = self
            .frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(frame)
            .is_some();
        if replaced {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.notify_one();
        replaced
    }

    /// The waiting frame, if any.
    pub fn take(&self) -> Option<Arc<Frame>> {
        self.frame.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The last frame put, whether analytics took it or not.
    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verify mode: while on, the camera decodes and hands on every frame whatever its
    /// sampling, from the next keyframe (where decoding can start cleanly), and marks them
    /// [`Frame::verifying`]. Sent when a sensor the camera covers goes into alarm, and when
    /// that ends.
    pub fn set_verify(&self, on: bool) {
        self.verify.store(on, Ordering::Relaxed);
    }

    /// Whether verify mode is asked for.
    pub fn verify_asked(&self) -> bool {
        self.verify.load(Ordering::Relaxed)
    }

    /// Asks the camera to decode every keyframe, even those its bitstream says show nothing
    /// new (see `skip_quiet_keyframes`), while on: analytics sets it while a hazard waits
    /// for its confirming frames, the picture moves, or a health problem is being confirmed.
    pub fn set_attention(&self, on: bool) {
        self.attention.store(on, Ordering::Relaxed);
    }

    /// Whether analytics asks for every keyframe.
    pub fn attention_asked(&self) -> bool {
        self.attention.load(Ordering::Relaxed)
    }

    /// Waits for the next frame.
    pub async fn next(&self) -> Arc<Frame> {
        loop {
            if let Some(f) = self.take() {
                return f;
            }
            self.ready.notified().await;
        }
    }

    /// Frames replaced before analytics took them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Frame {
        Frame {
            camera: "c".into(),
            width: 1,
            height: 1,
            rgb: vec![n; 3],
            received_at: SystemTime::UNIX_EPOCH,
            keyframe: true,
            verifying: false,
        }
    }

    #[test]
    fn the_newest_frame_wins_and_older_ones_are_counted() {
        let slot = FrameSlot::default();
        assert!(!slot.put(frame(1)));
        assert!(slot.put(frame(2)));
        assert!(slot.put(frame(3)));
        assert_eq!(slot.take().unwrap().rgb[0], 3);
        assert!(slot.take().is_none());
        assert_eq!(slot.dropped(), 2);
        assert_eq!(
            slot.latest().unwrap().rgb[0],
            3,
            "the last frame stays for snapshots"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn next_waits_for_a_frame() {
        let slot = Arc::new(FrameSlot::default());
        let s = slot.clone();
        let waiter = tokio::spawn(async move { s.next().await.rgb[0] });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        slot.put(frame(7));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), 7);
    }
}
