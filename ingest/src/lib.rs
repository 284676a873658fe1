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
//! Status: the RTSP simulator ([`simulator`]) is built; the ingest path itself is not yet
//! (issue: Ingest).

#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod simulator;

pub use simulator::{SceneChange, SceneKind, ScheduledScene, SimError, Simulator, SimulatorConfig};
