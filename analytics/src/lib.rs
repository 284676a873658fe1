//! Frames in, hazard events out.
//!
//! In: each camera's frame slot from `sharpeyes-ingest`, `[[models]]` and `[[hazards]]` from
//! `sharpeyes-config`. Out: [`VideoEvent`]s (camera, grid, hazard, confidence, boxes, object
//! ids, the confirming frame), all cameras' into one channel.
//!
//! [`Analysis`] is the entry point: one inference worker per model, one task per camera
//! that owns that camera's state. Per frame: motion gate on a small grayscale copy,
//! cross-camera batching per model, letterbox preprocessing into a preallocated tensor,
//! ONNX Runtime inference (ort), box decoding and class-wise NMS, tracking, hazard rules
//! (zones, counts, dwell, k-of-n). The stages are in [`stages`] for benches and tests.
//!
//! Sensors: [`SensorRules`] turns checked readings into alarms (threshold, rate, hold) and
//! notices silent sensors; [`Fusion`] holds an alarm back briefly for the covering cameras
//! to confirm it.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod analysis;
mod batcher;
mod camera;
mod detection;
mod error;
mod fusion;
pub mod health;
mod image;
mod model;
mod motion;
mod mute;
mod postprocess;
mod preprocess;
mod rules;
mod sensor_rules;
mod track;
mod watched;

pub use analysis::{
    Analysis, CameraAnalysis, HEALTH_REPORT_EVERY, HealthReport, Models, Telemetry, Timings,
    VideoEvent, stage,
};
pub use camera::{EventObject, HazardEvent};
pub use detection::{BBox, Detection};
pub use error::Error;
pub use fusion::Fusion;
pub use model::{Detector, Runtime, SessionTuning};
pub use mute::{MutedRegions, Mutes, Polygon};
pub use postprocess::NmsConfig;
pub use sensor_rules::{SensorAlarm, SensorEvent, SensorRules};
/// What a caught panic said: shared by every task that catches panics.
pub use sharpeyes_ingest::panic_message;

/// The per-frame stages one by one, for the benches and the tests that drive a stage
/// directly; the service runs them through [`Analysis`].
pub mod stages {
    pub use crate::batcher::{
        AsRgb, Batcher, BatcherConfig, BatcherStats, Detections, Infer, Reply,
    };
    pub use crate::camera::{AnalysisSettings, CameraAnalyzer};
    pub use crate::image::{BadImage, RgbImage};
    pub use crate::motion::{Gate, GateCounts, GateReason, MotionConfig, MotionGate};
    pub use crate::postprocess::Decoder;
    pub use crate::preprocess::{
        Batch, InputShape, LETTERBOX_PAD, Placement, PushError, placement,
    };
    pub use crate::rules::{HazardRule, RuleHit};
    pub use crate::track::{Track, Tracker, TrackerConfig};
}
