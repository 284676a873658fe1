//! The parts of the wiring that the binary and the integration tests share. The command line
//! itself lives in `main.rs`.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod sensing;
pub mod sensor_sim;
