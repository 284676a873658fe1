//! Compressed-domain motion: whether a keyframe can change anything, from the sizes of the
//! access units before it, so that a still scene costs no decoding at all.
//!
//! An encoder spends bytes on what changed: in a still scene every delta frame is about the
//! same small size (the sensor noise), and a passing car, a flame or a turned camera makes
//! them larger (CoVA, "Exploiting compressed-domain analysis to accelerate video analytics").
//! So when every delta frame since the last decoded keyframe stayed near the camera's own
//! quiet size, and the new keyframe is the size of that one, the picture is the one already
//! analysed and the keyframe is not decoded. Three things still decode it: the forced
//! interval (a change too slow for any one frame, such as smoke growing, still shows), a
//! request from analytics (a hazard waiting for its confirming frames, a picture that moved,
//! a health problem being confirmed), and a camera whose quiet size is not learned yet.
//!
//! Sizes only say "something changed", never "nothing did" for sure: a small object in a
//! noisy scene may hide in the noise. Such a change is seen at the forced interval at the
//! latest, and from then on every keyframe is decoded while the picture moves.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A delta frame up to this many times the camera's quiet size is quiet (noise varies by
/// about a third from frame to frame in a still scene).
const QUIET_FACTOR: f64 = 1.5;
/// A keyframe within this fraction of the last decoded one's size shows the same picture.
const KEYFRAME_TOLERANCE: f64 = 0.10;
/// The quiet size is the smallest GOP peak of this many recent GOPs: it follows a camera
/// whose noise changes (dusk), and a busy minute does not raise it.
const WINDOW: usize = 32;
/// GOPs seen before anything is skipped.
const LEARN_GOPS: usize = 3;

/// One camera's compressed-domain gate; fed every access unit in decode order.
#[derive(Debug)]
pub(crate) struct QuietGops {
    forced_interval: Duration,
    /// Largest delta frame of the GOP being received, in bytes; `None` before its first.
    peak: Option<usize>,
    /// Peaks of the last `WINDOW` whole GOPs.
    peaks: VecDeque<usize>,
    /// Whether a GOP since the last decoded keyframe was loud.
    loud: bool,
    /// The last decoded keyframe: its size and when.
    decoded: Option<(usize, Instant)>,
}

impl QuietGops {
    pub(crate) fn new(forced_interval: Duration) -> Self {
        Self {
            forced_interval,
            peak: None,
            peaks: VecDeque::with_capacity(WINDOW),
            loud: false,
            decoded: None,
        }
    }

    /// A delta frame of `size` bytes.
    pub(crate) fn delta(&mut self, size: usize) {
        self.peak = Some(self.peak.map_or(size, |p| p.max(size)));
    }

    /// A keyframe of `size` bytes arrived at `now`: whether to decode it. `attention`:
    /// analytics asked for every keyframe.
    pub(crate) fn keyframe(&mut self, size: usize, now: Instant, attention: bool) -> bool {
        if let Some(peak) = self.peak.take() {
            let level = (self.peaks.len() >= LEARN_GOPS)
                .then(|| self.peaks.iter().min().copied())
                .flatten();
            self.loud |= level.is_none_or(|level| peak as f64 > level as f64 * QUIET_FACTOR);
            if self.peaks.len() == WINDOW {
                self.peaks.pop_front();
            }
            self.peaks.push_back(peak);
        } else {
            // Two keyframes in a row: nothing to judge the picture between them by.
            self.loud = true;
        }
        let decode = match self.decoded {
            None => true,
            Some((last_size, at)) => {
                attention
                    || self.loud
                    || now.saturating_duration_since(at) >= self.forced_interval
                    || (size as f64 - last_size as f64).abs()
                        > last_size as f64 * KEYFRAME_TOLERANCE
            }
        };
        if decode {
            self.decoded = Some((size, now));
            self.loud = false;
        }
        decode
    }

    /// The keyframe just judged could not be decoded after all (decoder trouble): the next
    /// one is decoded whatever the sizes say.
    pub(crate) fn forget(&mut self) {
        self.decoded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOP: usize = 50;

    /// One GOP of deltas of `sizes` (cycled), then a keyframe of `key` bytes `t` s in.
    fn gop(q: &mut QuietGops, start: Instant, t: u64, sizes: &[usize], key: usize) -> bool {
        for n in 0..GOP - 1 {
            q.delta(sizes[n % sizes.len()]);
        }
        q.keyframe(key, start + Duration::from_secs(t), false)
    }

    /// A still scene: noise of 9-12 kB a delta frame, keyframes of about 200 kB.
    const NOISE: [usize; 4] = [9_000, 12_000, 10_500, 11_000];

    /// A gate that has learned the still scene: its first keyframe at `start`, then four
    /// GOPs of noise, the last 8 s in (decoded at 6 s, skipped at 8 s).
    fn learned(forced: Duration, start: Instant) -> QuietGops {
        let mut q = QuietGops::new(forced);
        q.keyframe(200_000, start, false);
        for i in 1..=4 {
            gop(&mut q, start, 2 * i, &NOISE, 200_000);
        }
        q
    }

    #[test]
    fn a_still_scene_is_decoded_at_the_forced_interval_only_once_learned() {
        let start = Instant::now();
        let mut q = QuietGops::new(Duration::from_secs(10));
        assert!(q.keyframe(200_000, start, false), "the first keyframe");
        let decoded: Vec<bool> = (1..=12)
            .map(|i| gop(&mut q, start, 2 * i, &NOISE, 200_000 + i as usize * 100))
            .collect();
        // Learning for three GOPs, then one keyframe in five: every 10 s at a 2 s GOP.
        assert_eq!(
            decoded,
            [
                true, true, true, false, false, false, false, true, false, false, false, false
            ]
        );
    }

    #[test]
    fn a_loud_gop_or_a_changed_keyframe_is_decoded_at_once() {
        let start = Instant::now();
        let mut q = learned(Duration::from_secs(10), start);
        assert!(!gop(&mut q, start, 10 - 1, &NOISE, 200_000), "quiet");
        // A car crossing: a few delta frames twice the noise.
        assert!(gop(&mut q, start, 11, &[9_000, 9_000, 25_000], 200_000));
        // A picture that changed exactly at the keyframe (a scene cut): its size differs.
        assert!(!gop(&mut q, start, 13, &NOISE, 200_000));
        assert!(gop(&mut q, start, 15, &NOISE, 240_000));
        assert!(
            !gop(&mut q, start, 17, &NOISE, 241_000),
            "the new picture, still"
        );
    }

    #[test]
    fn a_loud_gop_between_skipped_keyframes_still_counts() {
        let start = Instant::now();
        let mut q = learned(Duration::from_secs(60), start);
        assert!(!gop(&mut q, start, 10, &NOISE, 200_000));
        assert!(gop(&mut q, start, 12, &[40_000], 200_000), "loud");
        assert!(!gop(&mut q, start, 14, &NOISE, 200_000));
    }

    #[test]
    fn attention_decodes_every_keyframe() {
        let start = Instant::now();
        let mut q = learned(Duration::from_secs(10), start);
        for _ in 0..GOP - 1 {
            q.delta(10_000);
        }
        assert!(q.keyframe(200_000, start + Duration::from_secs(9), true));
    }

    #[test]
    fn two_keyframes_in_a_row_or_a_forgotten_keyframe_are_decoded() {
        let start = Instant::now();
        let mut q = learned(Duration::from_secs(10), start);
        assert!(q.keyframe(200_000, start + Duration::from_secs(9), false));
        assert!(!gop(&mut q, start, 9, &NOISE, 200_000));
        q.forget();
        assert!(gop(&mut q, start, 10, &NOISE, 200_000));
    }
}
