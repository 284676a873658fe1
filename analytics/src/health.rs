//! Video quality diagnosis (视频质量诊断): a camera whose picture is dark, covered, out of
//! focus, colour-shifted, frozen or turned away is as useless as an offline one. Like the
//! motion gate, it is a pure function of each analysed frame and the camera's own history,
//! measured on a small grayscale copy, so it costs next to nothing beside the decode.
//!
//! Each measure is compared with a fixed threshold or with the camera's own baseline (an
//! average of its healthy frames), and a problem counts only once it has persisted for
//! `hold`, and ends only once it has been absent as long.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::image::RgbImage;

/// When operators last accepted each camera's view (camera id -> ms since the epoch), from
/// the store that every node reads: the node that runs a camera re-learns its view when the
/// camera's time changes, whichever node the operator asked.
pub type AcceptedViews = crate::watched::Watched<BTreeMap<String, u64>>;

/// A problem a picture can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    Dark,
    Bright,
    /// The lens covered or sprayed: a flat picture where the camera had texture.
    Occluded,
    /// Defocus, fog, dirt: much less detail than the camera's own baseline.
    Blurred,
    ColorCast,
    /// The decoded picture does not change at all while frames keep coming: a stuck encoder
    /// (a live sensor always adds noise, even to a still scene).
    Frozen,
    /// The view no longer matches the scene's reference: turned or knocked.
    Moved,
}

impl Problem {
    /// As topics and the API name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dark => "dark",
            Self::Bright => "bright",
            Self::Occluded => "occluded",
            Self::Blurred => "blurred",
            Self::ColorCast => "color-cast",
            Self::Frozen => "frozen",
            Self::Moved => "moved",
        }
    }
}

/// Thresholds, with defaults for 8-bit pictures.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Mean luma below this: dark (unless night is expected).
    pub dark_below: f32,
    /// Mean luma above this: bright (glare, an IR lamp in the lens).
    pub bright_above: f32,
    /// Luma standard deviation below this, and below `occluded_ratio` of the baseline's:
    /// occluded.
    pub flat_below: f32,
    pub occluded_ratio: f32,
    /// Sharpness below this fraction of the baseline: blurred.
    pub blurred_ratio: f32,
    /// Mean chroma offset (Cb, Cr from neutral) above this: colour cast.
    pub cast_above: f32,
    /// Consecutive frames with no change at all (mean absolute difference below
    /// `frozen_noise`): frozen.
    pub frozen_frames: u32,
    pub frozen_noise: f32,
    /// Correlation of the edge map with the reference below this: moved.
    pub moved_below: f32,
    /// How long a problem must persist to count, and be absent to end.
    pub hold: Duration,
    /// Dark is expected now (the configured night hours): not a problem.
    pub night: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            dark_below: 25.0,
            bright_above: 235.0,
            flat_below: 6.0,
            occluded_ratio: 0.3,
            blurred_ratio: 0.35,
            cast_above: 28.0,
            frozen_frames: 5,
            frozen_noise: 0.05,
            moved_below: 0.45,
            hold: Duration::from_secs(120),
            night: false,
        }
    }
}

impl HealthConfig {
    /// The limits `[health]` (with `camera`'s own `[cameras.health]`) sets for `camera`.
    pub fn for_camera(
        health: &sharpeyes_config::Health,
        camera: &sharpeyes_config::Camera,
    ) -> Self {
        let t = health.thresholds_for(camera);
        Self {
            dark_below: t.dark_below,
            bright_above: t.bright_above,
            flat_below: t.flat_below,
            occluded_ratio: t.occluded_ratio,
            blurred_ratio: t.blurred_ratio,
            cast_above: t.cast_above,
            frozen_frames: t.frozen_frames,
            moved_below: t.moved_below,
            hold: health.hold,
            ..Self::default()
        }
    }
}

/// What one frame measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measures {
    /// Mean luma, 0-255.
    pub brightness: f32,
    /// Luma standard deviation.
    pub contrast: f32,
    /// Mean absolute Laplacian of the luma.
    pub sharpness: f32,
    /// Mean chroma offset from neutral.
    pub cast: f32,
    /// Mean absolute luma difference from the previous frame.
    pub change: f32,
    /// Correlation of the edge map with the reference, 1 when the same view.
    pub alignment: f32,
    /// How well the best-kept part of the view still matches the reference (see
    /// `intact`): high while something stands in front of the camera, low once it turned.
    pub intact: f32,
    /// No colour at all (an IR camera at night): dark is expected.
    pub grayscale: bool,
}

/// A problem that started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub problem: Problem,
    pub started: bool,
}

/// One camera's diagnosis; feed it every analysed frame.
#[derive(Debug)]
pub struct Diagnosis {
    config: HealthConfig,
    /// Grayscale copy, this frame and the last.
    luma: Vec<f32>,
    last: Vec<f32>,
    size: (usize, usize),
    /// The frame's byte offset of each sample, for the current frame size.
    offsets: Vec<usize>,
    frame_size: (usize, usize),
    /// This frame's edge map.
    edges: Vec<f32>,
    /// Averages of healthy frames.
    base_contrast: Option<f32>,
    base_sharpness: Option<f32>,
    reference: Option<Vec<f32>>,
    still: u32,
    /// Per problem: since when it has been seen (or, while active, not seen).
    pending: BTreeMap<Problem, Instant>,
    active: BTreeMap<Problem, Instant>,
}

/// The grayscale copy's width: enough for focus and edges, cheap to make.
const WIDTH: usize = 160;
/// How fast baselines follow healthy frames.
const LEARN: f32 = 0.05;

impl Diagnosis {
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            luma: Vec::new(),
            last: Vec::new(),
            size: (0, 0),
            offsets: Vec::new(),
            frame_size: (0, 0),
            edges: Vec::new(),
            base_contrast: None,
            base_sharpness: None,
            reference: None,
            still: 0,
            pending: BTreeMap::new(),
            active: BTreeMap::new(),
        }
    }

    pub fn set_night(&mut self, night: bool) {
        self.config.night = night;
    }

    /// Whether a problem waits for `hold` to start or end, or the picture has begun to look
    /// frozen: until it settles, every keyframe is wanted.
    pub fn unsettled(&self) -> bool {
        !self.pending.is_empty() || self.still > 0
    }

    /// Takes the coming frames' view as the camera's own: an operator re-aimed it on
    /// purpose. The view reference and the contrast and sharpness baselines are learned
    /// again from the next healthy frame, so `moved` (and a `blurred` judged against the
    /// old view's detail) ends after `hold`; a later knock is judged against the new view.
    pub fn accept_view(&mut self) {
        self.reference = None;
        self.base_contrast = None;
        self.base_sharpness = None;
    }

    /// The problems that count now, since when.
    pub fn active(&self) -> &BTreeMap<Problem, Instant> {
        &self.active
    }

    /// Diagnoses `frame` seen at `now`: its measures, and the problems that started or
    /// ended with it (after `hold`). A frame that is not RGB of its stated size changes
    /// nothing.
    pub fn observe(&mut self, frame: RgbImage<'_>, now: Instant) -> (Measures, Vec<Change>) {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if w == 0 || h == 0 || frame.data.len() != w * h * 3 {
            return (Measures::default(), Vec::new());
        }
        let m = self.measure(frame);
        let seen = self.judge(&m);
        self.learn(&m, &seen);
        (m, self.hold(&seen, now))
    }

    fn measure(&mut self, frame: RgbImage<'_>) -> Measures {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let gw = WIDTH.min(w);
        let gh = (h * gw / w).max(1);
        if self.frame_size != (w, h) {
            self.frame_size = (w, h);
            self.size = (gw, gh);
            self.luma = vec![0.0; gw * gh];
            self.last.clear();
            self.reference = None;
            self.offsets = (0..gh)
                .flat_map(|gy| (0..gw).map(move |gx| ((gy * h / gh) * w + gx * w / gw) * 3))
                .collect();
        }
        std::mem::swap(&mut self.luma, &mut self.last);
        self.luma.resize(gw * gh, 0.0);
        let (mut sum_cb, mut sum_cr, mut colourless) = (0.0f32, 0.0f32, 0usize);
        for (luma, &i) in self.luma.iter_mut().zip(&self.offsets) {
            let (r, g, b) = (
                f32::from(frame.data[i]),
                f32::from(frame.data[i + 1]),
                f32::from(frame.data[i + 2]),
            );
            *luma = 0.299 * r + 0.587 * g + 0.114 * b;
            let (cb, cr) = (
                -0.1687 * r - 0.3313 * g + 0.5 * b,
                0.5 * r - 0.4187 * g - 0.0813 * b,
            );
            sum_cb += cb;
            sum_cr += cr;
            // Grey within rounding: what an IR camera at night sends.
            if cb.abs() < 1.0 && cr.abs() < 1.0 {
                colourless += 1;
            }
        }
        let n = (gw * gh) as f32;
        let brightness = self.luma.iter().sum::<f32>() / n;
        let contrast = (self
            .luma
            .iter()
            .map(|v| (v - brightness).powi(2))
            .sum::<f32>()
            / n)
            .sqrt();
        let mut laplace = 0.0f32;
        for y in 1..gh.saturating_sub(1) {
            for x in 1..gw.saturating_sub(1) {
                let c = y * gw + x;
                let l = 4.0 * self.luma[c]
                    - self.luma[c - 1]
                    - self.luma[c + 1]
                    - self.luma[c - gw]
                    - self.luma[c + gw];
                laplace += l.abs();
            }
        }
        let inner = (gw.saturating_sub(2) * gh.saturating_sub(2)).max(1) as f32;
        let change = if self.last.len() == self.luma.len() {
            self.luma
                .iter()
                .zip(&self.last)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / n
        } else {
            f32::MAX
        };
        self.edges = edges(&self.luma, gw, gh);
        let (alignment, intact) = match &self.reference {
            Some(r) => (
                correlation(&self.edges, r),
                intact(&self.edges, r, (gw / CELL).max(1)),
            ),
            None => (1.0, 1.0),
        };
        Measures {
            brightness,
            contrast,
            sharpness: laplace / inner,
            cast: ((sum_cb / n).powi(2) + (sum_cr / n).powi(2)).sqrt(),
            change,
            alignment,
            intact,
            grayscale: colourless as f32 > 0.98 * n,
        }
    }

    /// The problems this frame shows, before `hold`.
    fn judge(&mut self, m: &Measures) -> Vec<Problem> {
        let c = &self.config;
        let mut seen = Vec::new();
        let night = c.night || m.grayscale;
        if m.brightness < c.dark_below && !night {
            seen.push(Problem::Dark);
        }
        if m.brightness > c.bright_above {
            seen.push(Problem::Bright);
        }
        // A dark or washed-out picture is flat too: that is its exposure, not a cover.
        let exposed = m.brightness >= c.dark_below && m.brightness <= c.bright_above;
        let flat = exposed
            && m.contrast < c.flat_below
            && self
                .base_contrast
                .is_some_and(|b| m.contrast < c.occluded_ratio * b);
        if flat {
            seen.push(Problem::Occluded);
        }
        // A dark, washed-out or flat picture has no detail either: that is its own problem.
        if !flat
            && exposed
            && self
                .base_sharpness
                .is_some_and(|b| m.sharpness < c.blurred_ratio * b)
        {
            seen.push(Problem::Blurred);
        }
        if m.cast > c.cast_above && !m.grayscale {
            seen.push(Problem::ColorCast);
        }
        if m.change < c.frozen_noise {
            self.still += 1;
        } else {
            self.still = 0;
        }
        if self.still >= c.frozen_frames {
            seen.push(Problem::Frozen);
        }
        if exposed && !flat && m.alignment < c.moved_below && m.intact < INTACT {
            seen.push(Problem::Moved);
        }
        seen
    }

    /// Baselines follow frames with no problem, slowly; at first they are the frames.
    fn learn(&mut self, m: &Measures, seen: &[Problem]) {
        if !seen.is_empty() || m.brightness < self.config.dark_below {
            return;
        }
        let follow = |base: &mut Option<f32>, v: f32| {
            *base = Some(base.map_or(v, |b| b + LEARN * (v - b)));
        };
        follow(&mut self.base_contrast, m.contrast);
        follow(&mut self.base_sharpness, m.sharpness);
        let e = &self.edges;
        match &mut self.reference {
            None => self.reference = Some(e.clone()),
            Some(r) => {
                for (r, e) in r.iter_mut().zip(e) {
                    *r += LEARN * (e - *r);
                }
            }
        }
    }

    /// Problems seen for `hold` start; active ones unseen for `hold` end.
    fn hold(&mut self, seen: &[Problem], now: Instant) -> Vec<Change> {
        let hold = self.config.hold;
        let mut changes = Vec::new();
        for p in ALL {
            let here = seen.contains(&p);
            if self.active.contains_key(&p) {
                if here {
                    self.pending.remove(&p);
                } else {
                    let since = *self.pending.entry(p).or_insert(now);
                    if now.saturating_duration_since(since) >= hold {
                        self.active.remove(&p);
                        self.pending.remove(&p);
                        changes.push(Change {
                            problem: p,
                            started: false,
                        });
                    }
                }
            } else if here {
                let since = *self.pending.entry(p).or_insert(now);
                if now.saturating_duration_since(since) >= hold {
                    self.active.insert(p, since);
                    self.pending.remove(&p);
                    changes.push(Change {
                        problem: p,
                        started: true,
                    });
                }
            } else {
                self.pending.remove(&p);
            }
        }
        changes
    }
}

const ALL: [Problem; 7] = [
    Problem::Dark,
    Problem::Bright,
    Problem::Occluded,
    Problem::Blurred,
    Problem::ColorCast,
    Problem::Frozen,
    Problem::Moved,
];

/// The edge map's cell, in samples of the grayscale copy.
const CELL: usize = 8;
/// The edge map is compared with the reference in this many regions a side.
const REGIONS: usize = 3;

/// Gradient magnitudes on an 8x coarser grid: the scene's structure, indifferent to noise
/// and small movements.
fn edges(luma: &[f32], w: usize, h: usize) -> Vec<f32> {
    let (cw, ch) = ((w / CELL).max(1), (h / CELL).max(1));
    let mut out = vec![0.0f32; cw * ch];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            let g = (luma[i + 1] - luma[i - 1]).abs() + (luma[i + w] - luma[i - w]).abs();
            let cell = (y / CELL).min(ch - 1) * cw + (x / CELL).min(cw - 1);
            out[cell] += g;
        }
    }
    out
}

/// A part of the view that still matches the reference this well means the camera has not
/// moved, however little of the rest matches.
const INTACT: f32 = 0.8;

/// How well the best-kept part of the view still matches the reference: the edge maps
/// (`cols` cells a row) are correlated region by region (3x3), and the second best of the
/// six regions with the most structure in the reference counts. Something in front of the
/// camera (a crowd, a parked bus) changes some regions and leaves others as they were; a
/// camera turned away changes them all.
fn intact(edges: &[f32], reference: &[f32], cols: usize) -> f32 {
    let rows = edges.len() / cols.max(1);
    if edges.len() != reference.len() || rows < REGIONS || cols < REGIONS {
        return correlation(edges, reference);
    }
    // (structure in the reference, correlation) per region.
    let mut regions: Vec<(f32, f32)> = Vec::with_capacity(REGIONS * REGIONS);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for ry in 0..REGIONS {
        for rx in 0..REGIONS {
            a.clear();
            b.clear();
            for y in ry * rows / REGIONS..(ry + 1) * rows / REGIONS {
                let row = y * cols;
                let span = row + rx * cols / REGIONS..row + (rx + 1) * cols / REGIONS;
                a.extend_from_slice(&edges[span.clone()]);
                b.extend_from_slice(&reference[span]);
            }
            let n = b.len().max(1) as f32;
            let mean = b.iter().sum::<f32>() / n;
            let variance = b.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
            regions.push((variance, correlation(&a, &b)));
        }
    }
    regions.sort_by(|x, y| y.0.total_cmp(&x.0));
    regions.truncate(6);
    let mut scores: Vec<f32> = regions.into_iter().map(|r| r.1).collect();
    scores.sort_by(|x, y| y.total_cmp(x));
    scores[1]
}

/// Pearson correlation of two equal-length maps; 1 when either is constant and equal.
fn correlation(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 1.0;
    }
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut cov, mut va, mut vb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        cov += dx * dy;
        va += dx * dx;
        vb += dy * dy;
    }
    if va <= f32::EPSILON || vb <= f32::EPSILON {
        return if va <= f32::EPSILON && vb <= f32::EPSILON {
            1.0
        } else {
            0.0
        };
    }
    cov / (va.sqrt() * vb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 640;
    const H: u32 = 360;

    /// A textured street-like scene: blocks of different greys with fine detail, a little
    /// colour, and sensor noise that differs per `seed`.
    fn scene(seed: u64, shift: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut out = Vec::with_capacity((W * H * 3) as usize);
        for y in 0..H as usize {
            for x in 0..W as usize {
                let sx = x + shift;
                let block = ((sx / 40) * 7 + (y / 30) * 13) % 9;
                // Fine detail in a third of the blocks: edges that say where the view is.
                let detail = if block % 3 == 0 && (sx / 4 + y / 4) % 2 == 0 {
                    30
                } else {
                    0
                };
                let base = 50 + block as i32 * 18 + detail;
                let noise = rng.i32(-2..=2);
                let v = (base + noise).clamp(0, 255);
                out.extend_from_slice(&[(v + 24).min(255) as u8, v as u8, (v - 18).max(0) as u8]);
            }
        }
        out
    }

    fn map(frame: &[u8], f: impl Fn([u8; 3]) -> [u8; 3]) -> Vec<u8> {
        frame
            .chunks(3)
            .flat_map(|p| f([p[0], p[1], p[2]]))
            .collect()
    }

    /// Out of focus: a box blur of radius 8 across and down (running sums).
    fn blur(frame: &[u8]) -> Vec<u8> {
        let (w, h) = (W as usize, H as usize);
        const R: usize = 8;
        let pass = |src: &[u8], len: usize, lines: usize, at: &dyn Fn(usize, usize) -> usize| {
            let mut out = src.to_vec();
            for line in 0..lines {
                for c in 0..3 {
                    let mut prefix = vec![0u32; len + 1];
                    for k in 0..len {
                        prefix[k + 1] = prefix[k] + u32::from(src[at(line, k) * 3 + c]);
                    }
                    for k in 0..len {
                        let (lo, hi) = (k.saturating_sub(R), (k + R + 1).min(len));
                        out[at(line, k) * 3 + c] =
                            ((prefix[hi] - prefix[lo]) / (hi - lo) as u32) as u8;
                    }
                }
            }
            out
        };
        let across = pass(frame, w, h, &|y, x| y * w + x);
        pass(&across, h, w, &|x, y| y * w + x)
    }

    fn config() -> HealthConfig {
        HealthConfig {
            hold: Duration::from_secs(10),
            ..HealthConfig::default()
        }
    }

    /// Feeds `frames` one a second from `start`; the problems active at the end.
    fn run(d: &mut Diagnosis, start: Instant, frames: &[Vec<u8>]) -> (Vec<Problem>, Instant) {
        let mut t = start;
        for f in frames {
            d.observe(RgbImage::new(W, H, f).unwrap(), t);
            t += Duration::from_secs(1);
        }
        (d.active().keys().copied().collect(), t)
    }

    fn healthy(d: &mut Diagnosis, from: u64) -> Instant {
        let frames: Vec<Vec<u8>> = (from..from + 15).map(|s| scene(s, 0)).collect();
        let (active, t) = run(d, Instant::now(), &frames);
        assert!(active.is_empty(), "a healthy scene has {active:?}");
        t
    }

    fn after(d: &mut Diagnosis, t: Instant, make: impl Fn(u64) -> Vec<u8>) -> Vec<Problem> {
        let frames: Vec<Vec<u8>> = (100..120).map(make).collect();
        run(d, t, &frames).0
    }

    #[test]
    fn each_fault_raises_exactly_its_problem_after_hold() {
        type Fault = fn(u64) -> Vec<u8>;
        let cases: [(Fault, Problem); 7] = [
            (|s| map(&scene(s, 0), |p| p.map(|v| v / 8)), Problem::Dark),
            (
                |s| map(&scene(s, 0), |p| p.map(|v| v.saturating_add(200))),
                Problem::Bright,
            ),
            (
                |s| map(&scene(s, 0), |_| [120, 118, 121 + (s % 2) as u8]),
                Problem::Occluded,
            ),
            (|s| blur(&scene(s, 0)), Problem::Blurred),
            (
                |s| map(&scene(s, 0), |[r, g, b]| [r.saturating_add(70), g, b / 2]),
                Problem::ColorCast,
            ),
            (|_| scene(7, 0), Problem::Frozen),
            (|s| scene(s, 100), Problem::Moved),
        ];
        for (fault, want) in cases {
            let mut d = Diagnosis::new(config());
            let t = healthy(&mut d, 0);
            let active = after(&mut d, t, fault);
            assert_eq!(active, [want], "{want:?}");
        }
    }

    #[test]
    fn a_view_accepted_after_a_move_ends_moved_and_becomes_the_reference() {
        let mut d = Diagnosis::new(config());
        let t = healthy(&mut d, 0);
        let turned = |s| scene(s, 100);
        let frames: Vec<Vec<u8>> = (100..120).map(turned).collect();
        let (active, t) = run(&mut d, t, &frames);
        assert_eq!(active, [Problem::Moved]);
        // Nobody accepted it: it stays moved.
        let frames: Vec<Vec<u8>> = (120..140).map(turned).collect();
        let (active, t) = run(&mut d, t, &frames);
        assert_eq!(active, [Problem::Moved]);
        d.accept_view();
        let frames: Vec<Vec<u8>> = (140..160).map(turned).collect();
        let (active, t) = run(&mut d, t, &frames);
        assert_eq!(active, [], "moved ends `hold` after the view is accepted");
        // Knocked again, now away from the accepted view: the old one is a move too.
        let frames: Vec<Vec<u8>> = (160..180).map(|s| scene(s, 0)).collect();
        assert_eq!(run(&mut d, t, &frames).0, [Problem::Moved]);
    }

    #[test]
    fn something_in_front_of_most_of_the_view_has_not_moved_the_camera() {
        // A crowd: a textured block over the lower two thirds, from the first frame on.
        let crowd = |s: u64| {
            let mut f = scene(s, 0);
            let other = scene(s + 1000, 333);
            let from = (H as usize / 3) * W as usize * 3;
            f[from..].copy_from_slice(&other[from..]);
            f
        };
        let mut d = Diagnosis::new(config());
        let t = healthy(&mut d, 0);
        assert_eq!(after(&mut d, t, crowd), [], "a crowd is not a move");
        let mut d = Diagnosis::new(config());
        let t = healthy(&mut d, 0);
        assert_eq!(after(&mut d, t, |s| scene(s, 333)), [Problem::Moved]);
    }

    #[test]
    fn a_problem_shorter_than_hold_counts_for_nothing_and_one_clears_after_hold() {
        let mut d = Diagnosis::new(config());
        let t = healthy(&mut d, 0);
        let dark: Vec<Vec<u8>> = (0..5)
            .map(|s| map(&scene(s, 0), |p| p.map(|v| v / 8)))
            .collect();
        let (active, t) = run(&mut d, t, &dark);
        assert!(active.is_empty(), "{active:?}");
        let (active, t) = run(
            &mut d,
            t,
            &(0..12)
                .map(|s| map(&scene(s, 0), |p| p.map(|v| v / 8)))
                .collect::<Vec<_>>(),
        );
        assert_eq!(active, [Problem::Dark]);
        let (active, _) = run(
            &mut d,
            t,
            &(200..215).map(|s| scene(s, 0)).collect::<Vec<_>>(),
        );
        assert!(active.is_empty(), "cleared after hold: {active:?}");
    }

    #[test]
    fn night_and_infrared_pictures_are_not_dark_and_a_still_live_scene_is_not_frozen() {
        let mut d = Diagnosis::new(config());
        let t = healthy(&mut d, 0);
        // Grey-scale and dim, as an IR camera at night.
        let ir: Vec<Vec<u8>> = (0..15)
            .map(|s| map(&scene(s, 0), |[_, g, _]| [g / 8, g / 8, g / 8]))
            .collect();
        let (active, t) = run(&mut d, t, &ir);
        assert!(!active.contains(&Problem::Dark), "{active:?}");
        // Configured night hours.
        let mut night = Diagnosis::new(HealthConfig {
            night: true,
            ..config()
        });
        let t2 = healthy(&mut night, 0);
        assert!(
            !after(&mut night, t2, |s| map(&scene(s, 0), |p| p.map(|v| v / 8)))
                .contains(&Problem::Dark)
        );
        // The same view, new sensor noise each frame: alive.
        let still: Vec<Vec<u8>> = (300..330).map(|s| scene(s, 0)).collect();
        let (active, _) = run(&mut d, t, &still);
        assert!(!active.contains(&Problem::Frozen), "{active:?}");
    }

    #[test]
    fn frames_of_the_wrong_size_change_nothing() {
        let mut d = Diagnosis::new(config());
        let (m, changes) = d.observe(
            RgbImage {
                width: W,
                height: H,
                data: &[0; 10],
            },
            Instant::now(),
        );
        assert_eq!((m, changes), (Measures::default(), Vec::new()));
    }
}
