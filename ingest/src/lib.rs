//! Cameras in, frames out.
//!
//! In: `[[cameras]]` from `sharpeyes-config`. Out: decoded frames at the detector's working
//! size, one bounded slot per camera (when analytics falls behind, the oldest frame is
//! dropped and counted; the network reader never waits).
//!
//! Per camera: receive with retina (TCP interleaved by default), sample *before* decoding
//! (`keyframes` by default: decoding is the dominant CPU cost), decode (libavcodec, else
//! GStreamer), hand off. [`start_camera`] is the entry point; the [`CameraHandle`] it returns carries the
//! camera's state, its counters and its [`FrameSlot`], which is also what others hold of the
//! camera: its latest frame (for snapshots) and verify mode ([`FrameSlot::set_verify`]:
//! every frame, whatever the sampling, while a sensor it covers is in alarm). Why a camera
//! is not streaming is an [`Error`] with a kind, in our words; what the camera sent stays
//! in its `detail`, for the debug log. Also the RTSP simulator (`sharpeyes simulate`) and
//! the `probe` tool.
//!
//! Sensors: readings arrive as MQTT messages (the node's one broker connection belongs to
//! `sharpeyes-alerts`); [`SensorRegistry`] parses and checks them against `[[sensors]]`.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod camera;
pub mod cpu;
mod error;
mod frame;
mod gst_source;
mod probe;
mod quiet;
mod sensors;
pub mod simulator;
mod start;

pub mod decode;
mod libav;
mod pacing;
mod turns;

pub use camera::{CameraCounters, CameraHandle, CameraState, Timeouts};
pub use error::{Error, ErrorKind, panic_message};
pub use frame::{Frame, FrameSlot};
pub use pacing::coalesce_reads;
pub use probe::{ProbeReport, probe, probe_hint, profile_name};
pub use sensors::{Rejected, SensorReading, SensorRegistry};
pub use simulator::{ScheduledAlarm, ScheduledScene, SensorSimulator, Simulator, SimulatorConfig};
pub use start::{login_url, start_camera};
pub use turns::keyframe_decoders;

/// One backend on its own, without a `[[cameras]]` entry: for the tests and benches that
/// measure or break one part. The service starts cameras with [`start_camera`].
pub mod backends {
    pub use crate::camera::{SourceConfig, spawn};
    pub use crate::gst_source::{GstInput, GstSourceConfig, spawn_gst};
}
