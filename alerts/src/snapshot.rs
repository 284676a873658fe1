//! The snapshot of an alert: the confirming frame as a JPEG, with the boxes drawn, under a
//! size cap, and its sha256 so a subscriber can check what it fetched.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage, imageops};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};

/// Box outline colour and width: red, visible on most scenes at snapshot sizes.
const BOX_COLOUR: [u8; 3] = [255, 32, 32];
const BOX_WIDTH: u32 = 3;
/// JPEG qualities tried in turn until the snapshot fits its cap; then the image is halved.
const QUALITIES: [u8; 4] = [85, 70, 55, 40];
/// Never shrink below this width: a smaller snapshot shows operators nothing useful.
const MIN_WIDTH: u32 = 160;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub jpeg: Vec<u8>,
    /// Lower-case hex.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
}

/// Renders `rgb` (packed RGB8) with `boxes` (x1, y1, x2, y2 in its pixels) as a JPEG of at
/// most `max_bytes`: lower quality first, then smaller.
pub fn render(
    rgb: &[u8],
    width: u32,
    height: u32,
    boxes: &[[f32; 4]],
    max_bytes: usize,
) -> Result<Snapshot, Error> {
    let mut img = RgbImage::from_raw(width, height, rgb.to_vec()).ok_or_else(|| {
        Error::new(
            ErrorKind::Snapshot,
            format!(
                "{width}x{height} RGB needs {} bytes, got {}",
                width as usize * height as usize * 3,
                rgb.len()
            ),
        )
    })?;
    for b in boxes {
        draw_box(&mut img, *b);
    }
    loop {
        for quality in QUALITIES {
            let mut jpeg = Vec::new();
            JpegEncoder::new_with_quality(&mut jpeg, quality)
                .write_image(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    ExtendedColorType::Rgb8,
                )
                .map_err(|e| {
                    Error::new(ErrorKind::Snapshot, format!("JPEG encoding failed: {e}"))
                })?;
            if jpeg.len() <= max_bytes {
                let sha256 = Sha256::digest(&jpeg)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                return Ok(Snapshot {
                    jpeg,
                    sha256,
                    width: img.width(),
                    height: img.height(),
                });
            }
        }
        if img.width() / 2 < MIN_WIDTH {
            return Err(Error::new(
                ErrorKind::Snapshot,
                format!("cannot fit a snapshot in {max_bytes} bytes; raise the snapshot size cap"),
            ));
        }
        img = imageops::resize(
            &img,
            img.width() / 2,
            (img.height() / 2).max(1),
            imageops::FilterType::Triangle,
        );
    }
}

fn draw_box(img: &mut RgbImage, [x1, y1, x2, y2]: [f32; 4]) {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return;
    }
    let clamp = |v: f32, max: u32| (v.max(0.0) as u32).min(max - 1);
    let (x1, x2, y1, y2) = (clamp(x1, w), clamp(x2, w), clamp(y1, h), clamp(y2, h));
    for t in 0..BOX_WIDTH {
        for x in x1..=x2 {
            for y in [y1 + t, y2.saturating_sub(t)] {
                if y < h {
                    img.put_pixel(x, y, image::Rgb(BOX_COLOUR));
                }
            }
        }
        for y in y1..=y2 {
            for x in [x1 + t, x2.saturating_sub(t)] {
                if x < w {
                    img.put_pixel(x, y, image::Rgb(BOX_COLOUR));
                }
            }
        }
    }
}
