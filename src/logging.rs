//! Structured logs on stderr: human-readable by default, JSON lines with `--log-format json`.

use clap::ValueEnum;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Installs the global subscriber. `filter` is a `Targets` directive list (`info`,
/// `warn,sharpeyes_ingest=debug`).
pub fn init(format: Format, filter: &str) -> Result<(), String> {
    // The embedded broker logs every connection at info and every client that leaves as an
    // error; our MQTT client reports connection trouble itself. Silent unless the filter
    // names it (`--log info,rumqttd=info`).
    let filter = if filter.contains("rumqttd") {
        filter.to_owned()
    } else {
        format!("{filter},rumqttd=off")
    };
    let targets: Targets = filter.parse().map_err(|e| format!("{e}"))?;
    let registry = tracing_subscriber::registry().with(targets);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        Format::Human => registry.with(layer).init(),
        Format::Json => registry.with(layer.json().flatten_event(true)).init(),
    }
    Ok(())
}
