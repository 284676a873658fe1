//! Benchmarks of the per-frame hot path (criterion, `make bench`) and the end-to-end
//! throughput harness for SREs.
//!
//! Each bench measures a stage against a straightforward baseline in the same run and prints
//! the ratio: absolute times on shared machines are noisy, ratios much less so. This library
//! holds the inputs and baselines the benches share, and the summary they print.

#![forbid(clippy::print_stderr)]

pub mod e2e;
pub mod simulator_process;

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

/// A 1920x1080 RGB frame with real content: a fixture photo scaled up.
pub fn frame_1080p() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/images/camera.png");
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    image::imageops::resize(&img, 1920, 1080, FilterType::Triangle).into_raw()
}

/// The straightforward preprocessing a first version would write: the `image` crate's
/// resize, then a per-pixel loop into a fresh letterboxed CHW f32 buffer.
pub fn baseline_preprocess(rgb: &[u8], width: u32, height: u32, size: u32) -> Vec<f32> {
    let img = image::RgbImage::from_raw(width, height, rgb.to_vec()).expect("a whole frame");
    let scale = (size as f32 / width as f32).min(size as f32 / height as f32);
    let (nw, nh) = (
        (width as f32 * scale).round() as u32,
        (height as f32 * scale).round() as u32,
    );
    let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
    let side = size as usize;
    let mut out = vec![114.0 / 255.0; 3 * side * side];
    let (px, py) = (((size - nw) / 2) as usize, ((size - nh) / 2) as usize);
    for y in 0..nh {
        for x in 0..nw {
            let p = resized.get_pixel(x, y);
            for c in 0..3 {
                out[c * side * side + (y as usize + py) * side + x as usize + px] =
                    p[c] as f32 / 255.0;
            }
        }
    }
    out
}

/// A `[1, 6, 8400]` YOLOv8 output (two classes) as a 640 model gives on a busy scene:
/// background anchors scoring under 0.2 and three objects, each seen by 40 anchors.
pub fn yolov8_output_640() -> Vec<f32> {
    const ANCHORS: usize = 8400;
    let mut out = vec![0.0f32; 6 * ANCHORS];
    let mut seed = 0x2545_f491_u32;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as f32 / u32::MAX as f32
    };
    for a in 0..ANCHORS {
        out[a] = rand() * 640.0;
        out[ANCHORS + a] = rand() * 640.0;
        out[2 * ANCHORS + a] = 10.0 + rand() * 60.0;
        out[3 * ANCHORS + a] = 10.0 + rand() * 60.0;
        out[4 * ANCHORS + a] = rand() * 0.2;
        out[5 * ANCHORS + a] = rand() * 0.2;
    }
    for (obj, (cx, cy)) in [(100.0, 120.0), (320.0, 300.0), (500.0, 480.0)]
        .into_iter()
        .enumerate()
    {
        for k in 0..40 {
            let a = obj * 2000 + k * 7;
            out[a] = cx + rand() * 6.0;
            out[ANCHORS + a] = cy + rand() * 6.0;
            out[2 * ANCHORS + a] = 80.0 + rand() * 8.0;
            out[3 * ANCHORS + a] = 160.0 + rand() * 8.0;
            out[(4 + obj % 2) * ANCHORS + a] = 0.3 + rand() * 0.6;
        }
    }
    out
}

/// Where criterion keeps its results for this workspace.
fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// The mean time of a finished criterion bench, in seconds.
pub fn mean_seconds(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["mean"]["point_estimate"].as_f64()? / 1e9)
}

/// One line of the summary: a figure, and how it compares with its baseline and target.
pub fn summary_line(
    what: &str,
    seconds: Option<f64>,
    baseline: Option<f64>,
    target: &str,
) -> String {
    let Some(s) = seconds else {
        return format!("{what:<44} (not measured)");
    };
    let ratio = baseline.map_or(String::new(), |b| {
        format!("  {:>6.1}x faster than baseline ({:.2} ms)", b / s, b * 1e3)
    });
    format!("{what:<44} {:>9.3} ms{ratio}  [{target}]", s * 1e3)
}
