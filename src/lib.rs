//! The parts of the wiring that the binary and the integration tests share. The command line
//! itself lives in `main.rs`.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod sensing;
pub mod sensor_sim;

/// Resolves once `shutdown` turns true (or its sender is gone): the stop signal every task of
/// the service selects on.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
