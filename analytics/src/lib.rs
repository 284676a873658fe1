//! Frames in, hazard events out.
//!
//! In: frames from `sharpeyes-ingest`, `[[models]]` and `[[hazards]]` from `sharpeyes-config`.
//! Out: hazard events (camera, grid, hazard, confidence, boxes, object ids, the confirming
//! frame).
//!
//! Per frame: motion gate on a small grayscale copy, cross-camera batching per model,
//! letterbox preprocessing into a preallocated tensor, ONNX Runtime inference (ort),
//! box decoding and class-wise NMS, tracking, hazard rules (zones, counts, dwell, k-of-n).

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod detection;
mod image;
mod motion;
mod rules;
mod track;

pub use detection::{BBox, Detection};
pub use image::{BadImage, RgbImage};
pub use motion::{Gate, GateCounts, GateReason, MotionConfig, MotionGate};
pub use rules::{HazardRule, RuleError, RuleHit};
pub use track::{Track, Tracker, TrackerConfig};
