//! The motion gate: a cheap look at a small grayscale copy decides whether a frame is worth
//! inference. Static scenes are most of a patrol camera's day, and inference is the cost.

use std::time::{Duration, Instant};

use crate::image::RgbImage;

/// The gate's settings: when a frame counts as changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionConfig {
    /// Width of the grayscale copy; its height follows the frame's aspect ratio.
    pub grid_width: u32,
    /// A cell whose gray level moved by more than this changed; above sensor noise.
    pub pixel_threshold: u8,
    /// Fraction of changed cells (0..1) that makes a frame worth analysing.
    pub min_changed_fraction: f32,
    /// A static scene is still analysed this often: smoke grows too slowly to trip the gate.
    pub forced_interval: Duration,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            grid_width: 64,
            pixel_threshold: 18,
            min_changed_fraction: 0.003,
            forced_interval: Duration::from_secs(10),
        }
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Analyse(GateReason),
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateReason {
    /// Nothing to compare with: the first frame, or the first after a frame-size change.
    First,
    Motion,
    /// No motion, but `forced_interval` has passed since the last analysed frame.
    Forced,
    /// No motion, but a hazard is half-confirmed: a fire that stands still must still be
    /// seen k times, not once per `forced_interval`.
    Pending,
}

/// How often each outcome happened, for the gate's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GateCounts {
    pub motion: u64,
    pub forced: u64,
    pub pending: u64,
    /// Includes frames whose bytes do not match their stated size.
    pub skipped: u64,
}

/// One camera's gate. Buffers are sized on the first frame and on size changes only.
#[derive(Debug, Default)]
pub struct MotionGate {
    config: MotionConfig,
    /// Frame size the buffers are for; (0, 0) until the first frame.
    frame_size: (u32, u32),
    grid: (u32, u32),
    current: Vec<u8>,
    previous: Vec<u8>,
    last_analysed: Option<Instant>,
    counts: GateCounts,
}

impl MotionGate {
    pub fn new(config: MotionConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn counts(&self) -> GateCounts {
        self.counts
    }

    /// Compares `frame` with the previous one and says whether to run inference on it.
    pub fn check(&mut self, frame: RgbImage<'_>, now: Instant) -> Gate {
        self.check_pending(frame, now, false)
    }

    /// [`Self::check`], letting a still frame through when `pending` (a hazard awaits
    /// confirmation on this camera).
    pub fn check_pending(&mut self, frame: RgbImage<'_>, now: Instant, pending: bool) -> Gate {
        let (w, h) = (frame.width, frame.height);
        if w == 0 || h == 0 || frame.data.len() != w as usize * h as usize * 3 {
            self.counts.skipped += 1;
            return Gate::Skip;
        }
        let first = self.last_analysed.is_none() || self.frame_size != (w, h);
        if self.frame_size != (w, h) {
            self.resize(w, h);
        }
        self.downscale(frame);
        let changed = self
            .current
            .iter()
            .zip(&self.previous)
            .filter(|(c, p)| c.abs_diff(**p) > self.config.pixel_threshold)
            .count();
        std::mem::swap(&mut self.current, &mut self.previous);

        let fraction = changed as f32 / self.previous.len() as f32;
        let since = self
            .last_analysed
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let reason = if first {
            GateReason::First
        } else if fraction >= self.config.min_changed_fraction {
            self.counts.motion += 1;
            GateReason::Motion
        } else if since >= self.config.forced_interval {
            self.counts.forced += 1;
            GateReason::Forced
        } else if pending {
            self.counts.pending += 1;
            GateReason::Pending
        } else {
            self.counts.skipped += 1;
            return Gate::Skip;
        };
        self.last_analysed = Some(now);
        Gate::Analyse(reason)
    }

    fn resize(&mut self, w: u32, h: u32) {
        // Never wider than the frame, so every cell covers at least one pixel.
        let gw = self.config.grid_width.clamp(1, w);
        let gh = ((u64::from(h) * u64::from(gw) + u64::from(w) / 2) / u64::from(w))
            .clamp(1, u64::from(h)) as u32;
        self.frame_size = (w, h);
        self.grid = (gw, gh);
        let cells = gw as usize * gh as usize;
        self.current = vec![0; cells];
        self.previous = vec![0; cells];
    }

    /// Averages the frame's luma over each cell into `current`: averaging also smooths
    /// sensor noise. Each cell averages a lattice of at most `CELL_SAMPLES` x `CELL_SAMPLES`
    /// pixels rather than all of them: for a 1080p frame, 2 % of the reads for the same
    /// verdict (reading every pixel made the gate cost more than preprocessing).
    fn downscale(&mut self, frame: RgbImage<'_>) {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let (gw, gh) = (self.grid.0 as usize, self.grid.1 as usize);
        for gy in 0..gh {
            let (y0, y1) = (gy * h / gh, (gy + 1) * h / gh);
            let step_y = ((y1 - y0) / CELL_SAMPLES).max(1);
            for gx in 0..gw {
                let (x0, x1) = (gx * w / gw, (gx + 1) * w / gw);
                let step_x = ((x1 - x0) / CELL_SAMPLES).max(1);
                let (mut sum, mut n) = (0u32, 0u32);
                for y in (y0..y1).step_by(step_y) {
                    let row = &frame.data[(y * w + x0) * 3..(y * w + x1) * 3];
                    for px in row.chunks_exact(3).step_by(step_x) {
                        // BT.601 luma in 8.8 fixed point.
                        let luma =
                            77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2]);
                        sum += luma >> 8;
                        n += 1;
                    }
                }
                self.current[gy * gw + gx] = (sum / n.max(1)) as u8;
            }
        }
    }
}

/// Samples per cell side when averaging a cell (see [`MotionGate::downscale`]).
const CELL_SAMPLES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use Gate::{Analyse, Skip};
    use GateReason::{First, Forced, Motion, Pending};

    const W: u32 = 320;
    const H: u32 = 180;

    /// A mid-gray frame with an optional bright square at (x, y).
    fn frame(square: Option<(u32, u32)>) -> Vec<u8> {
        let mut data = vec![100u8; (W * H * 3) as usize];
        if let Some((sx, sy)) = square {
            for y in sy..sy + 40 {
                for x in sx..sx + 40 {
                    let i = ((y * W + x) * 3) as usize;
                    data[i..i + 3].fill(250);
                }
            }
        }
        data
    }

    fn image(data: &[u8]) -> RgbImage<'_> {
        RgbImage::new(W, H, data).unwrap()
    }

    #[test]
    fn static_frame_is_skipped_and_moved_square_is_analysed() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig::default());
        let a = frame(Some((10, 10)));
        let b = frame(Some((200, 100)));
        assert_eq!(gate.check(image(&a), t0), Analyse(First));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(gate.check(image(&a), t1), Skip);
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(gate.check(image(&b), t2), Analyse(Motion));
        let counts = gate.counts();
        assert_eq!((counts.motion, counts.forced, counts.skipped), (1, 0, 1));
    }

    #[test]
    fn static_scene_is_forced_after_the_interval() {
        let t0 = Instant::now();
        let config = MotionConfig::default();
        let interval = config.forced_interval;
        let mut gate = MotionGate::new(config);
        let a = frame(None);
        gate.check(image(&a), t0);
        let just_before = t0 + interval - Duration::from_millis(1);
        assert_eq!(gate.check(image(&a), just_before), Skip);
        let due = t0 + interval;
        assert_eq!(gate.check(image(&a), due), Analyse(Forced));
        // The interval restarts from the forced check.
        assert_eq!(gate.check(image(&a), due + Duration::from_secs(1)), Skip);
        assert_eq!(gate.counts().forced, 1);
    }

    #[test]
    fn a_still_frame_passes_while_a_hazard_is_pending() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig::default());
        let a = frame(None);
        gate.check(image(&a), t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(gate.check_pending(image(&a), t1, true), Analyse(Pending));
        assert_eq!(gate.check_pending(image(&a), t1, false), Skip);
        assert_eq!(gate.counts().pending, 1);
    }

    #[test]
    fn sensor_noise_is_not_motion() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig::default());
        let clean = frame(None);
        gate.check(image(&clean), t0);
        for i in 1..20usize {
            // Every 10x10 block moves by -5..=5 gray levels: patches larger than a grid cell,
            // so box averaging alone cannot hide them and the threshold has to.
            let noisy: Vec<u8> = (clean.iter().enumerate())
                .map(|(b, &v)| {
                    let (x, y) = (b / 3 % W as usize / 10, b / 3 / W as usize / 10);
                    let offset = (x * 7 + y * 13 + i * 5) % 11;
                    (usize::from(v) + offset - 5) as u8
                })
                .collect();
            let now = t0 + Duration::from_millis(i as u64 * 100);
            assert_eq!(gate.check(image(&noisy), now), Skip);
        }
    }

    #[test]
    fn frame_size_change_restarts_without_panicking() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig::default());
        let a = frame(None);
        gate.check(image(&a), t0);
        let small = vec![100u8; 7 * 3 * 3];
        let small = RgbImage::new(7, 3, &small).unwrap();
        assert_eq!(gate.check(small, t0), Analyse(First));
        assert_eq!(gate.check(small, t0), Skip);
        assert_eq!(gate.check(image(&a), t0), Analyse(First));
        // Bytes that do not match the stated size are skipped, not indexed out of bounds.
        let short = RgbImage {
            width: W,
            height: H,
            data: &a[..10],
        };
        assert_eq!(gate.check(short, t0), Skip);
    }
}
