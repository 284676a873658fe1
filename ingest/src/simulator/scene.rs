//! What a simulated camera shows: a procedural street, with fixture photos pasted on it for
//! the hazard scenes.
//!
//! Drawing is plain per-pixel work with the `image` crate; it runs once per scene and size
//! (then the encoded clip is reused), so clarity beats speed here.

use std::fmt;
use std::str::FromStr;

use image::{RgbImage, imageops};

/// The flame used for the fire scene (`fixtures/images/synthetic_fire.png`).
const FIRE_PNG: &[u8] = include_bytes!("../../../fixtures/images/synthetic_fire.png");
/// One person each: the photos the person detector is expected to find.
const CAMERA_MAN_PNG: &[u8] = include_bytes!("../../../fixtures/images/camera.png");
const ASTRONAUT_PNG: &[u8] = include_bytes!("../../../fixtures/images/astronaut.png");
/// A warm-coloured object that is *not* fire: a distractor for false-positive checks.
const COFFEE_PNG: &[u8] = include_bytes!("../../../fixtures/images/coffee.png");

/// How many people the crowd scene pastes: above the demo's `crowd` rule (`min_count = 5`).
const CROWD_SIZE: u32 = 6;

/// Height of the horizon line, as a fraction of the frame height from the top.
const HORIZON: f32 = 0.45;

/// A scene a simulated camera can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SceneKind {
    /// The quiet background every camera starts with: sky, buildings, road, lane marks.
    Street,
    /// The street with a flame (`synthetic_fire.png`) on the pavement.
    Fire,
    /// The street with one person photo in front.
    Person,
    /// The street with several person photos: enough for the demo's crowd rule.
    Crowd,
    /// The street with a cup of coffee: warm colours but no hazard (false-positive check).
    Coffee,
    /// The street at dusk with no light: what a camera whose IR lamp failed sends.
    Dark,
    /// A cloth or a hand over the lens: a flat, dim picture with no street in it.
    Covered,
    /// The street out of focus (or behind fog or a dirty dome).
    Blurred,
    /// A stuck encoder: the same picture over and over, without even sensor noise.
    Frozen,
    /// The camera knocked: panned and tilted away from the street it was set up on.
    Moved,
    /// A stuck IR-cut filter: the street with a magenta cast.
    ColorCast,
}

impl SceneKind {
    /// Every scene, in a stable order.
    pub const ALL: [SceneKind; 11] = [
        SceneKind::Street,
        SceneKind::Fire,
        SceneKind::Person,
        SceneKind::Crowd,
        SceneKind::Coffee,
        SceneKind::Dark,
        SceneKind::Covered,
        SceneKind::Blurred,
        SceneKind::Frozen,
        SceneKind::Moved,
        SceneKind::ColorCast,
    ];

    /// The faults a camera's picture can have, for health tests and demos.
    pub const PICTURE_FAULTS: [SceneKind; 6] = [
        SceneKind::Dark,
        SceneKind::Covered,
        SceneKind::Blurred,
        SceneKind::Frozen,
        SceneKind::Moved,
        SceneKind::ColorCast,
    ];

    /// Whether a car drives through: not behind a cover, and not from a stuck encoder.
    pub fn shows_traffic(self) -> bool {
        !matches!(self, SceneKind::Covered | SceneKind::Frozen)
    }

    /// The sensor noise of the clip, grey levels either way, for `grain` asked: none from a
    /// stuck encoder; at least 2 behind a cover, where a live sensor's noise is all there is.
    pub fn grain(self, grain: u8) -> u8 {
        match self {
            SceneKind::Frozen => 0,
            SceneKind::Covered => grain.max(2),
            _ => grain,
        }
    }

    /// The lower-case name used in `--scenario` entries and logs.
    /// The scene's still picture at `width` x `height`, as its clips start: what a
    /// detector sees of it, e.g. to compare two versions of a model on every scene.
    pub fn picture(self, width: u32, height: u32) -> Result<RgbImage, String> {
        compose(self, width, height)
    }

    pub fn name(self) -> &'static str {
        match self {
            SceneKind::Street => "street",
            SceneKind::Fire => "fire",
            SceneKind::Person => "person",
            SceneKind::Crowd => "crowd",
            SceneKind::Coffee => "coffee",
            SceneKind::Dark => "dark",
            SceneKind::Covered => "covered",
            SceneKind::Blurred => "blurred",
            SceneKind::Frozen => "frozen",
            SceneKind::Moved => "moved",
            SceneKind::ColorCast => "color-cast",
        }
    }
}

impl fmt::Display for SceneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SceneKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SceneKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = SceneKind::ALL.iter().map(|k| k.name()).collect();
                format!("`{s}` is not a scene; one of {}", names.join(", "))
            })
    }
}

/// Draws the still image of `kind` at `width` x `height`.
///
/// Fails only if an embedded fixture does not decode, which would be a build problem.
pub(crate) fn compose(kind: SceneKind, width: u32, height: u32) -> Result<RgbImage, String> {
    let mut img = match kind {
        // Panned right by a frame's width and tilted down by half its height: other
        // buildings, the horizon near the top.
        SceneKind::Moved => {
            let wide = street(width * 2, height + height / 2);
            imageops::crop_imm(&wide, width, height / 2, width, height).to_image()
        }
        _ => street(width, height),
    };
    let horizon = (height as f32 * HORIZON) as u32;
    let ground = height - horizon;
    match kind {
        SceneKind::Street => {}
        SceneKind::Fire => {
            // The photo half the frame tall (its flame about a quarter), standing on the
            // pavement left of centre: big enough for a 320x320 detector input.
            let fire = fixture(FIRE_PNG, "synthetic_fire.png")?;
            paste_scaled(&mut img, &fire, height / 2, width / 5, horizon + ground / 8);
        }
        SceneKind::Person => {
            let person = fixture(CAMERA_MAN_PNG, "camera.png")?;
            paste_scaled(
                &mut img,
                &person,
                height * 11 / 20,
                width * 2 / 5,
                horizon - height / 10,
            );
        }
        SceneKind::Crowd => {
            let people = [
                fixture(CAMERA_MAN_PNG, "camera.png")?,
                fixture(ASTRONAUT_PNG, "astronaut.png")?,
            ];
            // Two staggered rows, so the photos overlap a little as a real crowd would.
            let h = height * 2 / 5;
            let step = width / (CROWD_SIZE / 2 + 1);
            for i in 0..CROWD_SIZE {
                let row = i % 2;
                let x = step / 3 + (i / 2) * step + row * step / 2;
                let y = horizon - height / 8 + row * (height / 6);
                paste_scaled(&mut img, &people[i as usize % 2], h, x, y);
            }
        }
        SceneKind::Coffee => {
            let coffee = fixture(COFFEE_PNG, "coffee.png")?;
            paste_scaled(
                &mut img,
                &coffee,
                ground / 2,
                width / 3,
                horizon + ground / 4,
            );
        }
        SceneKind::Dark => map_pixels(&mut img, |[r, g, b]| [r / 12, g / 12, b / 12]),
        SceneKind::Covered => {
            // Cloth close to the lens: dim and a little uneven, never in focus.
            img = RgbImage::from_fn(width, height, |x, y| {
                let shade = 36 + (6 * x / width.max(1) + 4 * y / height.max(1)) as u8;
                image::Rgb([shade + 2, shade, shade - 2])
            });
        }
        SceneKind::Blurred => {
            // Defocus about a 60th of the width across: at 1080p, 32 px of smear.
            img = imageops::blur(&img, (width as f32 / 120.0).max(1.0));
        }
        SceneKind::Moved | SceneKind::Frozen => {}
        SceneKind::ColorCast => map_pixels(&mut img, |[r, g, b]| {
            let scale = |v: u8, f: f32| (f32::from(v) * f).min(255.0) as u8;
            [scale(r, 1.25), scale(g, 0.65), scale(b, 1.2)]
        }),
    }
    Ok(img)
}

fn map_pixels(img: &mut RgbImage, f: impl Fn([u8; 3]) -> [u8; 3]) {
    for p in img.pixels_mut() {
        p.0 = f(p.0);
    }
}

/// Where the moving "car" of frame `n` of `frames` sits, and its size: the motion that makes
/// the clip real video (and wakes motion gates). Returns (x, y, w, h) clipped to the frame.
pub(crate) fn mover(n: u32, frames: u32, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let w = (width / 10).max(4);
    let h = (height / 16).max(2);
    let travel = width.saturating_sub(w);
    let x = (u64::from(travel) * u64::from(n) / u64::from(frames.max(1))) as u32;
    let y = height - h - height / 20;
    (x, y.min(height - h), w, h)
}

/// Sky gradient, a row of buildings with windows, pavement, road and dashed lane marks.
fn street(width: u32, height: u32) -> RgbImage {
    let horizon = (height as f32 * HORIZON) as u32;
    let mut img = RgbImage::from_fn(width, height, |_, y| {
        if y < horizon {
            let t = y as f32 / horizon.max(1) as f32;
            image::Rgb([
                (110.0 + 80.0 * t) as u8,
                (160.0 + 60.0 * t) as u8,
                (225.0 + 20.0 * t) as u8,
            ])
        } else if y < horizon + (height - horizon) / 5 {
            image::Rgb([150, 145, 135]) // pavement
        } else {
            image::Rgb([70, 72, 75]) // road
        }
    });

    // Buildings: deterministic widths and heights so every run draws the same street.
    let colours = [
        [170, 120, 90],
        [200, 190, 170],
        [120, 130, 140],
        [180, 160, 120],
    ];
    let mut x = 0;
    let mut i = 0u32;
    while x < width {
        let w = width / 9 + (i * 37 % 5) * width / 60;
        let h = horizon / 3 + (i * 53 % 7) * horizon / 14;
        let top = horizon.saturating_sub(h);
        fill(&mut img, x, top, w, h, colours[i as usize % colours.len()]);
        // Windows: a grid of small dark rectangles.
        let (ww, wh) = ((w / 8).max(1), (h / 10).max(1));
        let mut wy = top + wh;
        while wy + wh < horizon {
            let mut wx = x + ww;
            while wx + ww < (x + w).min(width) {
                fill(&mut img, wx, wy, ww, wh, [60, 70, 90]);
                wx += ww * 2;
            }
            wy += wh * 2;
        }
        x += w + width / 80;
        i += 1;
    }

    // Dashed centre line across the road.
    let road_top = horizon + (height - horizon) / 5;
    let lane_y = road_top + (height - road_top) / 2;
    let (dash, gap) = ((width / 16).max(2), (width / 24).max(2));
    let mut x = gap / 2;
    while x < width {
        fill(
            &mut img,
            x,
            lane_y,
            dash,
            (height / 90).max(1),
            [235, 235, 225],
        );
        x += dash + gap;
    }
    img
}

/// Fills a rectangle, clipped to the image.
pub(crate) fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, rgb: [u8; 3]) {
    let (iw, ih) = img.dimensions();
    for yy in y.min(ih)..(y.saturating_add(h)).min(ih) {
        for xx in x.min(iw)..(x.saturating_add(w)).min(iw) {
            img.put_pixel(xx, yy, image::Rgb(rgb));
        }
    }
}

fn fixture(png: &[u8], name: &str) -> Result<RgbImage, String> {
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map(|i| i.to_rgb8())
        .map_err(|e| format!("embedded fixture {name} does not decode: {e}"))
}

/// Scales `src` to `height` pixels tall (keeping its aspect ratio) and pastes it with its
/// top-left corner at (x, y); whatever falls outside the frame is cut off.
fn paste_scaled(dst: &mut RgbImage, src: &RgbImage, height: u32, x: u32, y: u32) {
    let height = height.max(1);
    let width =
        (u64::from(src.width()) * u64::from(height) / u64::from(src.height())).max(1) as u32;
    let scaled = imageops::resize(src, width, height, imageops::FilterType::Triangle);
    imageops::replace(dst, &scaled, i64::from(x), i64::from(y));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scene_composes_at_small_and_odd_sizes() {
        for kind in SceneKind::ALL {
            for (w, h) in [(320, 240), (64, 48), (1920, 1080)] {
                let img = compose(kind, w, h).unwrap();
                assert_eq!(img.dimensions(), (w, h), "{kind}");
            }
        }
    }

    #[test]
    fn hazard_scenes_differ_from_the_street() {
        let street = compose(SceneKind::Street, 320, 240).unwrap();
        for kind in [
            SceneKind::Fire,
            SceneKind::Person,
            SceneKind::Crowd,
            SceneKind::Coffee,
        ] {
            let img = compose(kind, 320, 240).unwrap();
            let changed = img
                .pixels()
                .zip(street.pixels())
                .filter(|(a, b)| a != b)
                .count();
            // The pasted photo must cover a visible part of the frame, not a few pixels.
            assert!(
                changed > 320 * 240 / 50,
                "{kind}: only {changed} pixels differ"
            );
        }
    }

    #[test]
    fn fire_scene_has_many_flame_coloured_pixels() {
        let hot = |kind| {
            let img = compose(kind, 640, 360).unwrap();
            img.pixels()
                .filter(|p| p[0] > 200 && p[1] > 80 && p[2] < 100)
                .count()
        };
        assert_eq!(hot(SceneKind::Street), 0);
        let fire = hot(SceneKind::Fire);
        assert!(fire > 640 * 360 / 200, "only {fire} flame-coloured pixels");
    }

    #[test]
    fn scene_names_round_trip_and_unknown_names_list_the_choices() {
        for kind in SceneKind::ALL {
            assert_eq!(kind.name().parse::<SceneKind>().unwrap(), kind);
        }
        let err = "smoke".parse::<SceneKind>().unwrap_err();
        assert!(err.contains("`smoke`") && err.contains("fire"), "{err}");
    }

    #[test]
    fn the_mover_stays_inside_the_frame() {
        for n in 0..50 {
            let (x, y, w, h) = mover(n, 50, 320, 240);
            assert!(x + w <= 320 && y + h <= 240);
        }
    }
}
