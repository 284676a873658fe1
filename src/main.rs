//! The `sharpeyes` binary: the command line and the wiring of config -> ingest -> analytics ->
//! alerts. It is the only place that knows all the crates.

mod commands;
mod demo;
mod detect;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Streaming video-and-sensor ingestion for the Sharp Eyes public-video network: RTSP cameras
/// in, ONNX hazard detection, grid-tagged alerts out over MQTT.
#[derive(Debug, Parser)]
#[command(name = "sharpeyes", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Human)]
    log_format: logging::Format,

    /// Log filter, e.g. `info` or `warn,sharpeyes_ingest=debug`.
    #[arg(long, global = true, env = "SHARPEYES_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service for every configured camera and sensor.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Once listening, write where (HTTP address, broker, topic prefix) to this file as
        /// JSON: for supervisors and tests that give `[http] listen` port 0.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// This node's id, over `[node] id` (e.g. a Kubernetes pod name): several nodes can
        /// share one file.
        #[arg(long, env = "SHARPEYES_NODE_ID", value_name = "ID")]
        node_id: Option<String>,
        /// Where the API listens, over `[http] listen`.
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<std::net::SocketAddr>,
    },
    /// Run the demo on embedded defaults: simulated cameras and sensors, embedded broker,
    /// in-memory state, the real pipeline. Ctrl-C stops it.
    Demo {
        /// Stop after this long, e.g. `45s` (default: run until Ctrl-C).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        r#for: Option<std::time::Duration>,
    },
    /// Serve simulated cameras over RTSP on 127.0.0.1, from pre-encoded H.264 loops.
    Simulate(commands::SimulateArgs),
    /// Test a camera before adding it: codec, resolution, GOP, bitrate, a snapshot.
    Probe {
        /// rtsp://[user:${PASS}@]host[:port]/path (`${VAR}` is read from the environment).
        url: String,
        /// Where to save the JPEG snapshot of the first keyframe.
        #[arg(long, default_value = "probe-snapshot.jpg")]
        snapshot: PathBuf,
        /// How long to watch the stream after connecting, in seconds.
        #[arg(long, default_value_t = 8)]
        watch: u64,
    },
    /// Run a detector on images and print the detections of each as one JSON line.
    Detect(detect::DetectArgs),
    /// GB/T 28181 tools.
    Gb28181 {
        #[command(subcommand)]
        command: Gb28181Command,
    },
    /// Check a configuration file: a summary when it is valid, every problem when it is not.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Check and probe the cameras of a CSV file (unit cameras by the hundred): a report
    /// with every problem by line and column, thumbnails, and the `[[cameras]]` entries of
    /// those that passed. Exits 1 when any row did not pass.
    Import {
        /// Configuration file (TOML) the cameras join: its grids, hazards and credentials.
        #[arg(long, short)]
        config: PathBuf,
        /// Where to write report.html, the thumbnails and cameras.toml (new or empty).
        #[arg(long, default_value = "import-report")]
        out: PathBuf,
        /// Cameras probed at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
        /// How long each stream is watched (frame rate, GOP, bitrate): at least one GOP.
        #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
        watch: std::time::Duration,
        /// Bound on each connection and RTSP handshake.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        connect: std::time::Duration,
        /// The CSV: a header row naming its columns (id, name, kind, unit, grid, hazards,
        /// url or vendor + host [+ port, channel, stream], credentials, industry).
        csv: PathBuf,
    },
    /// Write the alerts operators judged as a YOLO dataset (images, labels, data.yaml and a
    /// manifest), to fine-tune the models on the county's own false alarms.
    Export {
        /// Configuration file (TOML): where the judged alerts are kept (Redis or the spool).
        #[arg(long, short)]
        config: PathBuf,
        /// Only alerts with this verdict (default: every judged alert).
        #[arg(long, value_parser = ["confirmed", "false-alarm", "handled"])]
        verdict: Option<String>,
        /// Only this hazard.
        #[arg(long)]
        hazard: Option<String>,
        /// Alerts detected in this window, e.g. `30d` (judged alerts are kept for
        /// `[alerts] judged_ttl`, 90 days by default).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Leave false alarms' label files empty: background images that teach a model
        /// there was nothing there (their boxes stay in the manifest).
        #[arg(long)]
        background: bool,
        /// A new (or empty) directory to write into.
        dir: PathBuf,
    },
    /// Online and usable rates of every camera over a window, a table per grid, worst first.
    Report {
        /// Configuration file (TOML): its cameras, grids and where the history is kept.
        #[arg(long, short)]
        config: PathBuf,
        /// The window, e.g. `24h`, `7d`, `30d` (to the hour; the history keeps 32 days).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// One CSV line per camera instead of the tables.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Gb28181Command {
    /// Act as a county platform, to try `[gb28181]` without one: accept this realm's
    /// devices with this password, and print what they send as JSON lines.
    Listen {
        /// Where to listen for SIP.
        #[arg(long, default_value = "127.0.0.1:5060")]
        listen: std::net::SocketAddr,
        /// The 10-digit realm, as `[gb28181] server_domain`.
        #[arg(long)]
        realm: String,
        /// The devices' password, as `[gb28181] password`: literal, `${VAR}` or
        /// `${file:PATH}`.
        #[arg(long)]
        password: String,
        /// Listen on TCP instead of UDP.
        #[arg(long)]
        tcp: bool,
        /// Stop after this long, e.g. `60s` (default: run until Ctrl-C).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        r#for: Option<std::time::Duration>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints what happens; its logs stay quiet unless asked for.
    let log = match (&cli.command, cli.log.as_str()) {
        (Command::Demo { .. }, "info") => "warn",
        (_, filter) => filter,
    };
    if let Err(e) = logging::init(cli.log_format, log) {
        commands::report_error(&format!("bad --log filter: {e}"));
        return ExitCode::from(2);
    }
    match cli.command {
        Command::CheckConfig { file } => commands::check_config(&file),
        Command::Report { config, since, csv } => commands::report(&config, since, csv),
        Command::Import {
            config,
            out,
            concurrency,
            watch,
            connect,
            csv,
        } => commands::import(
            &config,
            &csv,
            &out,
            sharpeyes::import::ImportOptions {
                concurrency: usize::from(concurrency),
                connect,
                watch,
            },
        ),
        Command::Export {
            config,
            verdict,
            hazard,
            since,
            background,
            dir,
        } => {
            let verdict = verdict.and_then(|v| {
                sharpeyes_alerts::Verdict::ALL
                    .into_iter()
                    .find(|x| x.as_str() == v)
            });
            let request = sharpeyes::export::ExportRequest {
                verdict,
                hazard,
                since: std::time::SystemTime::now() - since,
                background,
            };
            commands::export(&config, &request, &dir)
        }
        Command::Demo { r#for } => demo::run(r#for),
        Command::Run {
            config,
            ready_file,
            node_id,
            http_listen,
        } => commands::run(
            &config,
            ready_file.as_deref(),
            sharpeyes_config::Overrides {
                node_id,
                http_listen,
            },
        ),
        Command::Simulate(args) => commands::simulate(args),
        Command::Gb28181 {
            command:
                Gb28181Command::Listen {
                    listen,
                    realm,
                    password,
                    tcp,
                    r#for,
                },
        } => commands::gb28181_listen(listen, &realm, &password, tcp, r#for),
        Command::Probe {
            url,
            snapshot,
            watch,
        } => commands::probe(&url, &snapshot, watch),
        Command::Detect(args) => detect::run(args).unwrap_or_else(|e| {
            commands::report_error(&e);
            ExitCode::from(2)
        }),
    }
}
