//! Frames into the model's input tensor: resize, letterbox, normalise, HWC -> CHW.
//!
//! A [`Batch`] owns one preallocated input tensor for up to `capacity` frames, the resize
//! scratch buffer and the resizer. Pushing a frame writes it straight into its slot of the
//! tensor: no heap allocation once the buffers have grown to the largest frame seen.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use sharpeyes_config::ModelLayout;

use crate::detection::BBox;
use crate::image::RgbImage;

/// The grey Ultralytics pads letterboxed images with.
pub const LETTERBOX_PAD: u8 = 114;

/// Bilinear interpolation without antialiasing, as OpenCV's `INTER_LINEAR`, which the
/// YOLOv8 models were trained and validated with.
const RESIZE: ResizeAlg = ResizeAlg::Interpolation(FilterType::Bilinear);

/// A model's input size in pixels. Square unless the config sets `input_height`: a
/// rectangle that fits the cameras' aspect leaves no bars for inference to pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    pub width: u32,
    pub height: u32,
}

impl InputShape {
    fn pixels(self) -> usize {
        self.width as usize * self.height as usize
    }
}

/// A square input of this side.
impl From<u32> for InputShape {
    fn from(side: u32) -> Self {
        Self {
            width: side,
            height: side,
        }
    }
}

/// How a frame was placed in the model input: input pixel = frame pixel * scale + pad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub frame_width: u32,
    pub frame_height: u32,
}

impl Placement {
    /// Maps a box in model-input pixels back to frame pixels, clamped to the frame.
    pub fn to_frame(&self, b: BBox) -> BBox {
        let (w, h) = (self.frame_width as f32, self.frame_height as f32);
        BBox {
            x1: ((b.x1 - self.pad_x) / self.scale_x).clamp(0.0, w),
            y1: ((b.y1 - self.pad_y) / self.scale_y).clamp(0.0, h),
            x2: ((b.x2 - self.pad_x) / self.scale_x).clamp(0.0, w),
            y2: ((b.y2 - self.pad_y) / self.scale_y).clamp(0.0, h),
        }
    }
}

/// Where a frame goes in an input of `shape`: keep the aspect ratio (letterbox, centred, as
/// Ultralytics does) or stretch to fill (SSD).
pub fn placement(
    layout: ModelLayout,
    shape: impl Into<InputShape>,
    width: u32,
    height: u32,
) -> Placement {
    let shape = shape.into();
    let (sw, sh) = (shape.width as f32, shape.height as f32);
    let (fw, fh) = (width as f32, height as f32);
    match layout {
        ModelLayout::Yolov8 => {
            // Boxes map back with the exact ratio, not the rounded resized size.
            let scale = (sw / fw).min(sh / fh);
            let (nw, nh) = resized_size(shape, width, height);
            Placement {
                scale_x: scale,
                scale_y: scale,
                pad_x: ((shape.width - nw) / 2) as f32,
                pad_y: ((shape.height - nh) / 2) as f32,
                frame_width: width,
                frame_height: height,
            }
        }
        ModelLayout::Ssd => Placement {
            scale_x: sw / fw,
            scale_y: sh / fh,
            pad_x: 0.0,
            pad_y: 0.0,
            frame_width: width,
            frame_height: height,
        },
    }
}

/// The letterboxed content size: the frame as large as fits in `shape`.
fn resized_size(shape: InputShape, width: u32, height: u32) -> (u32, u32) {
    let (sw, sh) = (f64::from(shape.width), f64::from(shape.height));
    let scale = (sw / f64::from(width)).min(sh / f64::from(height));
    let nw = ((f64::from(width) * scale).round() as u32).clamp(1, shape.width);
    let nh = ((f64::from(height) * scale).round() as u32).clamp(1, shape.height);
    (nw, nh)
}

/// Why a frame could not be added to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    Full { capacity: usize },
    Resize(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full { capacity } => write!(f, "batch is full ({capacity} frames)"),
            Self::Resize(e) => write!(f, "resizing the frame failed: {e}"),
        }
    }
}

impl std::error::Error for PushError {}

/// A model input tensor being filled, frame by frame.
pub struct Batch {
    layout: ModelLayout,
    shape: InputShape,
    capacity: usize,
    /// yolov8: f32 NCHW, RGB 0..1. Empty for ssd.
    planar: Vec<f32>,
    /// ssd: u8 NHWC RGB. yolov8: the resized frame before it is spread into `planar`.
    packed: Vec<u8>,
    placements: Vec<Placement>,
    /// Per slot, the content size whose letterbox bars the tensor holds.
    painted: Vec<Option<(u32, u32)>>,
    resizer: Resizer,
}

impl Batch {
    pub fn new(layout: ModelLayout, shape: impl Into<InputShape>, capacity: usize) -> Self {
        let shape = shape.into();
        let pixels = shape.pixels();
        let capacity = capacity.max(1);
        let (planar, packed) = match layout {
            ModelLayout::Yolov8 => (vec![0.0; capacity * 3 * pixels], vec![0; pixels * 3]),
            ModelLayout::Ssd => (Vec::new(), vec![0; capacity * pixels * 3]),
        };
        Self {
            layout,
            shape,
            capacity,
            planar,
            packed,
            placements: Vec::with_capacity(capacity),
            painted: vec![None; capacity],
            resizer: Resizer::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.placements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.placements.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn shape(&self) -> InputShape {
        self.shape
    }

    pub fn layout(&self) -> ModelLayout {
        self.layout
    }

    /// Empties the batch; the buffers are kept.
    pub fn clear(&mut self) {
        self.placements.clear();
    }

    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }

    /// The filled part of the f32 NCHW tensor (yolov8).
    pub fn planar(&self) -> &[f32] {
        let per = 3 * self.shape.pixels();
        &self.planar[..self.len() * per]
    }

    /// The filled part of the u8 NHWC tensor (ssd).
    pub fn packed(&self) -> &[u8] {
        let per = 3 * self.shape.pixels();
        &self.packed[..self.len() * per]
    }

    /// Writes `frame` into the next slot; returns the slot index.
    pub fn push(&mut self, frame: RgbImage<'_>) -> Result<usize, PushError> {
        let slot = self.len();
        if slot == self.capacity {
            return Err(PushError::Full {
                capacity: self.capacity,
            });
        }
        let placement = placement(self.layout, self.shape, frame.width, frame.height);
        match self.layout {
            ModelLayout::Yolov8 => self.letterbox(frame, slot)?,
            ModelLayout::Ssd => self.stretch(frame, slot)?,
        }
        self.placements.push(placement);
        Ok(slot)
    }

    fn letterbox(&mut self, frame: RgbImage<'_>, slot: usize) -> Result<(), PushError> {
        let (width, height) = (self.shape.width as usize, self.shape.height as usize);
        let (nw, nh) = resized_size(self.shape, frame.width, frame.height);
        let packed = &mut self.packed[..nw as usize * nh as usize * 3];
        resize_into(&mut self.resizer, frame, nw, nh, packed)?;

        let plane = width * height;
        let tensor = &mut self.planar[slot * 3 * plane..(slot + 1) * 3 * plane];
        // The grey bars only change with the content size: refill them only then. With a
        // camera's frames all one size, each frame writes its content area and nothing else.
        if self.painted[slot] != Some((nw, nh)) {
            tensor.fill(f32::from(LETTERBOX_PAD) / 255.0);
            self.painted[slot] = Some((nw, nh));
        }
        let (r, rest) = tensor.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let (pad_x, pad_y) = ((width - nw as usize) / 2, (height - nh as usize) / 2);
        for (y, row) in packed.chunks_exact(nw as usize * 3).enumerate() {
            let start = (y + pad_y) * width + pad_x;
            let end = start + nw as usize;
            spread_row(
                row,
                &mut r[start..end],
                &mut g[start..end],
                &mut b[start..end],
            );
        }
        Ok(())
    }

    fn stretch(&mut self, frame: RgbImage<'_>, slot: usize) -> Result<(), PushError> {
        let per = 3 * self.shape.pixels();
        let dst = &mut self.packed[slot * per..(slot + 1) * per];
        let InputShape { width, height } = self.shape;
        resize_into(&mut self.resizer, frame, width, height, dst)
    }
}

/// One row of packed RGB into the three planes, scaled to 0..1. Zipped iterators (no
/// indexing) let the compiler drop bounds checks and vectorise: this loop was 2/3 of the
/// preprocessing time when written with indices and a lookup table.
fn spread_row(rgb: &[u8], r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
    const SCALE: f32 = 1.0 / 255.0;
    let planes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
    for (px, ((r, g), b)) in rgb.chunks_exact(3).zip(planes) {
        *r = f32::from(px[0]) * SCALE;
        *g = f32::from(px[1]) * SCALE;
        *b = f32::from(px[2]) * SCALE;
    }
}

fn resize_into(
    resizer: &mut Resizer,
    frame: RgbImage<'_>,
    w: u32,
    h: u32,
    dst: &mut [u8],
) -> Result<(), PushError> {
    if frame.width == w && frame.height == h {
        dst.copy_from_slice(frame.data);
        return Ok(());
    }
    let err = |e: &dyn std::fmt::Display| PushError::Resize(e.to_string());
    let src = ImageRef::new(frame.width, frame.height, frame.data, PixelType::U8x3)
        .map_err(|e| err(&e))?;
    let mut dst = Image::from_slice_u8(w, h, dst, PixelType::U8x3).map_err(|e| err(&e))?;
    resizer
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(RESIZE))
        .map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        rgb.iter()
            .copied()
            .cycle()
            .take((w * h * 3) as usize)
            .collect()
    }

    #[test]
    fn a_wide_frame_is_centred_with_grey_bars_above_and_below() {
        let data = solid(1920, 1080, [255, 0, 0]);
        let mut batch = Batch::new(ModelLayout::Yolov8, 640, 2);
        batch
            .push(RgbImage::new(1920, 1080, &data).unwrap())
            .unwrap();
        let t = batch.planar();
        assert_eq!(t.len(), 3 * 640 * 640);
        let at = |c: usize, x: usize, y: usize| t[c * 640 * 640 + y * 640 + x];
        // 1920x1080 -> 640x360, padded by 140 rows top and bottom.
        let pad = 114.0 / 255.0;
        assert_eq!(at(0, 320, 139), pad);
        assert_eq!(at(0, 320, 140), 1.0);
        assert_eq!(at(1, 320, 140), 0.0);
        assert_eq!(at(0, 320, 499), 1.0);
        assert_eq!(at(0, 320, 500), pad);
        let p = batch.placements()[0];
        assert_eq!((p.pad_x, p.pad_y), (0.0, 140.0));
        assert!((p.scale_x - 1.0 / 3.0).abs() < 1e-6);
    }

    /// 16:9 into 320x192: the same 320x180 content as in a 320x320 square, with 6 rows of
    /// bars above and below in place of 70, and boxes map back the same way.
    #[test]
    fn a_rectangular_input_holds_the_same_content_with_thin_bars() {
        let data = solid(1920, 1080, [0, 0, 255]);
        let shape = InputShape {
            width: 320,
            height: 192,
        };
        let mut batch = Batch::new(ModelLayout::Yolov8, shape, 1);
        batch
            .push(RgbImage::new(1920, 1080, &data).unwrap())
            .unwrap();
        let t = batch.planar();
        assert_eq!(t.len(), 3 * 320 * 192);
        let blue = |x: usize, y: usize| t[2 * 320 * 192 + y * 320 + x];
        let pad = 114.0 / 255.0;
        assert_eq!(
            (blue(0, 5), blue(0, 6), blue(319, 185), blue(319, 186)),
            (pad, 1.0, 1.0, pad)
        );
        let rect = batch.placements()[0];
        let square = placement(ModelLayout::Yolov8, 320, 1920, 1080);
        assert_eq!((rect.pad_x, rect.pad_y, square.pad_y), (0.0, 6.0, 70.0));
        assert_eq!(rect.scale_x, square.scale_x);
        let in_rect = BBox {
            x1: 100.0,
            y1: 56.0,
            x2: 160.0,
            y2: 126.0,
        };
        let in_square = BBox {
            y1: 120.0,
            y2: 190.0,
            ..in_rect
        };
        assert_eq!(rect.to_frame(in_rect), square.to_frame(in_square));
    }

    #[test]
    fn placement_maps_model_boxes_back_to_the_frame() {
        let p = placement(ModelLayout::Yolov8, 640, 1920, 1080);
        let b = p.to_frame(BBox {
            x1: 0.0,
            y1: 140.0,
            x2: 640.0,
            y2: 500.0,
        });
        assert!(
            (b.x1, b.y1) == (0.0, 0.0)
                && (b.x2 - 1920.0).abs() < 1e-3
                && (b.y2 - 1080.0).abs() < 1e-3,
            "{b:?}"
        );
        let ssd = placement(ModelLayout::Ssd, 300, 600, 300);
        let b = ssd.to_frame(BBox {
            x1: 150.0,
            y1: 150.0,
            x2: 300.0,
            y2: 300.0,
        });
        assert_eq!(
            b,
            BBox {
                x1: 300.0,
                y1: 150.0,
                x2: 600.0,
                y2: 300.0
            }
        );
    }

    #[test]
    fn frames_fill_consecutive_slots_until_full() {
        let data = solid(64, 48, [10, 20, 30]);
        let img = RgbImage::new(64, 48, &data).unwrap();
        let mut batch = Batch::new(ModelLayout::Ssd, 32, 2);
        assert_eq!(batch.push(img), Ok(0));
        assert_eq!(batch.push(img), Ok(1));
        assert_eq!(batch.push(img), Err(PushError::Full { capacity: 2 }));
        assert_eq!(batch.packed().len(), 2 * 32 * 32 * 3);
        assert_eq!(&batch.packed()[..3], &[10, 20, 30]);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.push(img), Ok(0));
    }

    #[test]
    fn a_slot_reused_for_another_frame_size_gets_its_own_bars() {
        let wide = solid(128, 64, [255, 255, 255]);
        let tall = solid(64, 128, [255, 255, 255]);
        let mut batch = Batch::new(ModelLayout::Yolov8, 64, 1);
        batch.push(RgbImage::new(128, 64, &wide).unwrap()).unwrap();
        batch.clear();
        batch.push(RgbImage::new(64, 128, &tall).unwrap()).unwrap();
        let r = &batch.planar()[..64 * 64];
        let pad = 114.0 / 255.0;
        // Tall content: bars left and right, none above: row 0 is content in the middle.
        assert_eq!(
            (r[0], r[15], r[16], r[47], r[48]),
            (pad, pad, 1.0, 1.0, pad)
        );
        // The wide frame's content (rows 16..48, full width) must not linger in the bars.
        assert_eq!(r[20 * 64 + 2], pad);
    }

    #[test]
    fn a_tall_frame_gets_bars_left_and_right() {
        let data = solid(100, 200, [0, 255, 0]);
        let mut batch = Batch::new(ModelLayout::Yolov8, 64, 1);
        batch.push(RgbImage::new(100, 200, &data).unwrap()).unwrap();
        let p = batch.placements()[0];
        assert_eq!((p.pad_x, p.pad_y), (16.0, 0.0));
        let g = &batch.planar()[64 * 64..2 * 64 * 64];
        assert_eq!(g[10 * 64 + 15], 114.0 / 255.0);
        assert_eq!(g[10 * 64 + 16], 1.0);
        assert_eq!(g[10 * 64 + 47], 1.0);
        assert_eq!(g[10 * 64 + 48], 114.0 / 255.0);
    }
}
