//! Frames in, hazard events out.
//!
//! In: frames from `sharpeyes-ingest`, `[[models]]` and `[[hazards]]` from `sharpeyes-config`.
//! Out: hazard events (camera, grid, hazard, confidence, boxes, object ids, the confirming
//! frame).
//!
//! Per frame: motion gate on a small grayscale copy, cross-camera batching per model,
//! letterbox preprocessing into a preallocated tensor, ONNX Runtime inference (ort),
//! box decoding and class-wise NMS, tracking, hazard rules (zones, counts, dwell, k-of-n).
//!
//! Sensors: [`SensorRules`] turns checked readings into alarms (threshold, rate, hold) and
//! notices silent sensors; [`Fusion`] holds an alarm back briefly for the covering cameras
//! to confirm it.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod batcher;
mod camera;
mod detection;
mod fusion;
mod image;
mod model;
mod motion;
mod postprocess;
mod preprocess;
mod rules;
mod sensor_rules;
mod track;

pub use batcher::{AsRgb, Batcher, BatcherConfig, BatcherStats, Detections, Infer};
pub use camera::{AnalysisSettings, CameraAnalyzer, EventObject, HazardEvent};
pub use detection::{BBox, Detection};
pub use fusion::Fusion;
pub use image::{BadImage, RgbImage};
pub use model::{Detector, ModelError, Runtime};
pub use motion::{Gate, GateCounts, GateReason, MotionConfig, MotionGate};
pub use postprocess::{Decoder, NmsConfig};
pub use preprocess::{Batch, LETTERBOX_PAD, Placement, PushError, placement};
pub use rules::{HazardRule, RuleError, RuleHit};
pub use sensor_rules::{SensorAlarm, SensorEvent, SensorRules};
pub use track::{Track, Tracker, TrackerConfig};
