//! The wiring of config -> ingest -> analytics -> fusion -> alerts, shared by the binary and
//! the integration tests; the command line itself lives in `main.rs`.
//!
//! - [`service`]: start and stop, in named steps.
//! - [`cameras`]: the running cameras (ingest, analysis and status per camera) and what
//!   fusion may ask of them; [`reload`]: camera changes while running; [`status`]: camera
//!   state for the API, the metrics and the status topic; [`cluster`]: which of them this
//!   node runs when it is one of several.
//! - [`camera_health`]: picture diagnosis and video loss, to maintenance messages;
//!   [`health_history`]: the online and usable rates behind the reports.
//! - [`sensors`]: sensor readings through the rules; [`fusion`]: video events and sensor
//!   alarms in, alerts out.
//! - [`http`]: the API and the page; [`metrics`]: Prometheus; [`supervise`]: restarts of
//!   long-lived tasks after a panic.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod camera_health;
pub mod cameras;
pub mod cluster;
pub mod export;
pub mod fusion;
pub mod gb28181;
pub mod health_history;
pub mod http;
pub mod import;
pub mod metrics;
pub mod mutes;
pub mod reload;
pub mod sensor_sim;
pub mod sensors;
pub mod service;
pub mod status;
pub mod supervise;

/// Resolves once `shutdown` turns true (or its sender is gone): the stop signal every task of
/// the service selects on.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
