//! Model outputs into detections in frame pixels: box decoding and class-wise NMS.

use crate::detection::{BBox, Detection};
use crate::preprocess::Placement;

/// Thresholds of the decoding step. The defaults are Ultralytics' for YOLOv8 prediction,
/// which the reference detections in `../shared/MODELS.md` were made with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsConfig {
    /// Candidates scoring below this are dropped before NMS.
    pub score_threshold: f32,
    /// A box overlapping a better box of its class by more than this is suppressed.
    pub iou_threshold: f32,
    /// At most this many detections per frame are kept, best first.
    pub max_detections: usize,
}

impl Default for NmsConfig {
    fn default() -> Self {
        Self {
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 300,
        }
    }
}

/// Decodes model outputs, reusing its buffers from frame to frame.
#[derive(Debug, Default)]
pub struct Decoder {
    config: NmsConfig,
    best_score: Vec<f32>,
    best_class: Vec<u16>,
    candidates: Vec<Detection>,
}

impl Decoder {
    pub fn new(config: NmsConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> NmsConfig {
        self.config
    }

    /// One image's YOLOv8 output, `[4 + classes, anchors]` row-major (cx, cy, w, h in input
    /// pixels, then one score row per class, no objectness). Appends to `out`.
    pub fn yolov8(
        &mut self,
        output: &[f32],
        anchors: usize,
        placement: &Placement,
        out: &mut Vec<Detection>,
    ) {
        let rows = output.len() / anchors.max(1);
        if rows <= 4 || rows * anchors != output.len() {
            return;
        }
        // Best class per anchor, reading the score rows in memory order.
        self.best_score.clear();
        self.best_score
            .extend_from_slice(&output[4 * anchors..5 * anchors]);
        self.best_class.clear();
        self.best_class.resize(anchors, 0);
        for class in 1..rows - 4 {
            let row = &output[(4 + class) * anchors..(5 + class) * anchors];
            for (a, &s) in row.iter().enumerate() {
                if s > self.best_score[a] {
                    self.best_score[a] = s;
                    self.best_class[a] = class as u16;
                }
            }
        }
        self.candidates.clear();
        for a in 0..anchors {
            let score = self.best_score[a];
            if score < self.config.score_threshold {
                continue;
            }
            let (cx, cy) = (output[a], output[anchors + a]);
            let (w, h) = (output[2 * anchors + a], output[3 * anchors + a]);
            let b = BBox {
                x1: cx - w / 2.0,
                y1: cy - h / 2.0,
                x2: cx + w / 2.0,
                y2: cy + h / 2.0,
            };
            self.candidates.push(Detection {
                class: self.best_class[a] as usize,
                score,
                bbox: placement.to_frame(b),
            });
        }
        self.nms_into(out);
    }

    /// One image's TF object-detection outputs: `boxes` `[max, 4]` (ymin, xmin, ymax, xmax,
    /// normalised), `scores` and `classes` `[max]`, of which the first `count` are valid.
    /// The graph already ran NMS; this applies the score threshold and maps the boxes.
    pub fn ssd(
        &mut self,
        boxes: &[f32],
        scores: &[f32],
        classes: &[f32],
        count: usize,
        placement: &Placement,
        out: &mut Vec<Detection>,
    ) {
        let (w, h) = (placement.frame_width as f32, placement.frame_height as f32);
        let count = count
            .min(scores.len())
            .min(classes.len())
            .min(boxes.len() / 4);
        let kept = (0..count)
            .filter(|&i| scores[i] >= self.config.score_threshold && classes[i] >= 0.0)
            .take(self.config.max_detections)
            .map(|i| Detection {
                class: classes[i].round() as usize,
                score: scores[i],
                bbox: BBox {
                    x1: (boxes[4 * i + 1] * w).clamp(0.0, w),
                    y1: (boxes[4 * i] * h).clamp(0.0, h),
                    x2: (boxes[4 * i + 3] * w).clamp(0.0, w),
                    y2: (boxes[4 * i + 2] * h).clamp(0.0, h),
                },
            });
        out.extend(kept);
    }

    /// Greedy class-wise NMS over `self.candidates`, best first, into `out`.
    fn nms_into(&mut self, out: &mut Vec<Detection>) {
        self.candidates
            .sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
        let start = out.len();
        for c in &self.candidates {
            if out.len() - start >= self.config.max_detections {
                break;
            }
            let suppressed = out[start..]
                .iter()
                .any(|k| k.class == c.class && k.bbox.iou(&c.bbox) > self.config.iou_threshold);
            if !suppressed {
                out.push(*c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::placement;
    use sharpeyes_config::ModelLayout;

    /// A `[4 + classes, anchors]` output with the given (cx, cy, w, h, scores...) anchors.
    fn output(anchors: &[&[f32]]) -> Vec<f32> {
        let rows = anchors[0].len();
        (0..rows)
            .flat_map(|r| anchors.iter().map(move |a| a[r]))
            .collect()
    }

    fn identity(w: u32, h: u32) -> Placement {
        placement(ModelLayout::Yolov8, w.max(h), w, h)
    }

    #[test]
    fn overlapping_boxes_of_one_class_collapse_to_the_best() {
        let out_t = output(&[
            &[50.0, 50.0, 20.0, 20.0, 0.9, 0.1],
            &[52.0, 50.0, 20.0, 20.0, 0.8, 0.1], // same object, worse: suppressed
            &[52.0, 50.0, 20.0, 20.0, 0.1, 0.7], // same place, other class: kept
            &[150.0, 150.0, 20.0, 20.0, 0.6, 0.0], // elsewhere: kept
            &[10.0, 10.0, 4.0, 4.0, 0.2, 0.1],   // below threshold
        ]);
        let mut d = Decoder::new(NmsConfig::default());
        let mut out = Vec::new();
        d.yolov8(&out_t, 5, &identity(200, 200), &mut out);
        let got: Vec<(usize, f32)> = out.iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(got, [(0, 0.9), (1, 0.7), (0, 0.6)]);
        assert_eq!(
            out[0].bbox,
            BBox {
                x1: 40.0,
                y1: 40.0,
                x2: 60.0,
                y2: 60.0
            }
        );
    }

    #[test]
    fn boxes_come_back_in_frame_pixels() {
        // A 1920x1080 frame letterboxed into 640: the box covering the content area
        // maps back to the whole frame.
        let out_t = output(&[&[320.0, 320.0, 640.0, 360.0, 0.9]]);
        let mut out = Vec::new();
        Decoder::new(NmsConfig::default()).yolov8(
            &out_t,
            1,
            &placement(ModelLayout::Yolov8, 640, 1920, 1080),
            &mut out,
        );
        let b = out[0].bbox;
        assert!(
            b.x1.abs() < 0.01
                && b.y1.abs() < 0.01
                && (b.x2 - 1920.0).abs() < 0.01
                && (b.y2 - 1080.0).abs() < 0.01,
            "{b:?}"
        );
    }

    #[test]
    fn max_detections_keeps_the_best() {
        let anchors: Vec<Vec<f32>> = (0..10)
            .map(|i| {
                vec![
                    i as f32 * 30.0 + 10.0,
                    10.0,
                    8.0,
                    8.0,
                    0.3 + i as f32 * 0.05,
                ]
            })
            .collect();
        let refs: Vec<&[f32]> = anchors.iter().map(Vec::as_slice).collect();
        let mut d = Decoder::new(NmsConfig {
            max_detections: 3,
            ..NmsConfig::default()
        });
        let mut out = Vec::new();
        d.yolov8(&output(&refs), 10, &identity(400, 400), &mut out);
        assert_eq!(out.len(), 3);
        assert!((out[0].score - 0.75).abs() < 1e-6);
    }

    #[test]
    fn a_malformed_output_yields_nothing_rather_than_panicking() {
        let mut out = Vec::new();
        let mut d = Decoder::default();
        d.yolov8(&[1.0, 2.0, 3.0], 2, &identity(10, 10), &mut out);
        d.yolov8(&[], 0, &identity(10, 10), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn ssd_boxes_are_normalised_yx() {
        let p = placement(ModelLayout::Ssd, 300, 400, 200);
        let mut out = Vec::new();
        Decoder::new(NmsConfig::default()).ssd(
            &[0.25, 0.5, 0.75, 1.0, 0.0, 0.0, 0.1, 0.1],
            &[0.9, 0.1],
            &[1.0, 1.0],
            2,
            &p,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, 1);
        assert_eq!(
            out[0].bbox,
            BBox {
                x1: 200.0,
                y1: 50.0,
                x2: 400.0,
                y2: 150.0
            }
        );
    }
}
