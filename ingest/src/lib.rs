//! Cameras in, frames out.
//!
//! In: `[[cameras]]` from `sharpeyes-config`. Out: decoded frames at the detector's working
//! size, one bounded slot per camera (when analytics falls behind, the oldest frame is
//! dropped and counted; the network reader never waits).
//!
//! Per camera: receive with retina (TCP interleaved by default), sample *before* decoding
//! (`keyframes` by default: decoding is the dominant CPU cost), decode with GStreamer, hand
//! off. Also the RTSP simulator (`sharpeyes simulate`) and the `probe` tool.
//!
//! Sensors: readings arrive as MQTT messages (the node's one broker connection belongs to
//! `sharpeyes-alerts`); [`SensorRegistry`] parses and checks them against `[[sensors]]`.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod camera;
mod decode;
mod frame;
mod gst_source;
mod probe;
mod sensors;
pub mod simulator;
mod start;

pub use camera::{CameraCounters, CameraHandle, CameraState, SourceConfig, Timeouts, spawn};
pub use decode::{Codec, DecodeCounters, DecodeError, Decoder, output_size};
pub use frame::{Frame, FrameSlot};
pub use gst_source::{GstInput, GstSourceConfig, spawn_gst};
pub use probe::{ProbeError, ProbeReport, probe, profile_name};
pub use sensors::{
    MAX_BATCH, MAX_MESSAGE_BYTES, Rejected, SensorReading, SensorRegistry, topic_of,
};
pub use simulator::{
    ScenarioError, SceneChange, SceneKind, ScheduledAlarm, ScheduledScene, SensorSimulator,
    SimError, Simulator, SimulatorConfig,
};
pub use start::start_camera;
