//! One function per subcommand; each returns the process exit code.
//!
//! Exit codes: 0 success, 1 the input is wrong (a bad config, an unreachable camera), 2 the
//! command cannot run here (a part that is not built yet, a missing install).

#![allow(clippy::print_stdout, clippy::print_stderr)] // the commands' output is the product

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

use sharpeyes::reload::{ConfigSource, Control};
use sharpeyes::service::{Endpoints, Service};
use sharpeyes_analytics::{Models, Runtime};
use sharpeyes_config::{
    Config, Install, Loaded, Overrides, Problems, SecretUrl, secret::redact_url,
};

pub fn report_error(msg: &str) {
    eprintln!("error: {msg}");
}

pub fn print_problems(problems: &Problems) {
    eprintln!("{problems}");
}

pub fn check_config(file: &Path) -> ExitCode {
    let install = Install::discover();
    match Config::load(file, &install.model_dirs()) {
        Ok(loaded) => {
            println!("{}: OK", file.display());
            print_loaded(&loaded);
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print_problems(&problems);
            ExitCode::from(1)
        }
    }
}

pub fn print_loaded(loaded: &Loaded) {
    println!("{}", loaded.config.summary());
    // Grouped by what is missing: one line per variable or file, naming the fields that use it.
    let mut unset: Vec<(String, Vec<String>)> = Vec::new();
    for (field, secret) in loaded.config.secrets() {
        if let Err(e) = secret.expand() {
            let e = e.to_string();
            match unset.iter_mut().find(|(msg, _)| *msg == e) {
                Some((_, fields)) => fields.push(field),
                None => unset.push((e, vec![field])),
            }
        }
    }
    if !unset.is_empty() {
        println!("secrets not available in this environment (`run` needs them):");
        for (what, fields) in unset {
            let shown: Vec<&str> = fields.iter().take(3).map(String::as_str).collect();
            let more = fields.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            println!("  {what}: used by {}{more}", shown.join(", "));
        }
    }
    let id_from_env = std::env::var("SHARPEYES_NODE_ID").is_ok();
    if loaded.config.cluster().is_some()
        && loaded.config.node.id == sharpeyes_config::DEFAULT_NODE_ID
        && !id_from_env
    {
        println!(
            "node id: the default `{}`, which `run` refuses in a cluster: give each node its own with --node-id or SHARPEYES_NODE_ID (a pod name)",
            sharpeyes_config::DEFAULT_NODE_ID
        );
    }
    if loaded.warnings.items.is_empty() {
        println!("no warnings");
    } else {
        println!("{}", loaded.warnings);
    }
}

/// Loads ONNX Runtime and every model a camera uses (with its start-up checks).
pub fn load_models(config: &Config, install: &Install) -> Result<Models, String> {
    let lib = install
        .onnxruntime
        .as_ref()
        .ok_or("ONNX Runtime not found: run `make setup` (or set ORT_DYLIB_PATH)")?;
    let runtime = Runtime::load(lib).map_err(|e| e.to_string())?;
    Models::load(config, runtime).map_err(|e| e.to_string())
}

/// How long the ready file waits for the broker to take the subscriptions: a broker that
/// is down at start delays it no longer than this.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Tells whoever started the service where it listens, once it does: JSON with the HTTP
/// address (`[http] listen` may ask for port 0), the broker and the topic prefix, written
/// whole (a temporary file renamed) so a reader never sees half of it.
fn write_ready_file(path: &Path, endpoints: &Endpoints) -> Result<(), String> {
    let json = serde_json::to_string(endpoints).map_err(|e| e.to_string())?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, json)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("--ready-file {}: {e}", path.display()))
}

pub fn run(file: &Path, ready_file: Option<&Path>, overrides: Overrides) -> ExitCode {
    let install = Install::discover();
    let mut loaded = match Config::load(file, &install.model_dirs()) {
        Ok(l) => l,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    if let Err(e) = overrides.apply(&mut loaded.config) {
        report_error(&e);
        return ExitCode::from(1);
    }
    for w in loaded.warnings.warnings() {
        tracing::warn!(field = %w.path, hint = w.hint.as_deref().unwrap_or(""), "{}", w.message);
    }
    if let Err(missing) = loaded.config.check_secrets() {
        report_error(&format!("{} secret(s) are not available:", missing.len()));
        for (field, e) in missing {
            eprintln!("  {field}: {e}");
        }
        eprintln!("hint: export the variables (or create the files) named above, then start again");
        return ExitCode::from(1);
    }
    let source = ConfigSource {
        file: Some(file.to_owned()),
        text: std::fs::read_to_string(file).unwrap_or_default(),
        model_dirs: install.model_dirs(),
        overrides,
    };
    let config = std::sync::Arc::new(loaded.config);
    let models = match load_models(&config, &install) {
        Ok(m) => m,
        Err(e) => {
            report_error(&e);
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let service = match Service::start(config.clone(), source, models).await {
            Ok(s) => s,
            Err(e) => {
                report_error(&e);
                return ExitCode::from(2);
            }
        };
        let e = &service.endpoints;
        tracing::info!(
            cameras = config.cameras.iter().filter(|c| c.enabled).count(),
            sensors = config.sensors.len(),
            http = %e.http,
            broker = %e.broker,
            "running; SIGTERM or Ctrl-C stops"
        );
        if let Some(b) = e.embedded_broker {
            tracing::info!(
                "embedded MQTT broker on {b}: mosquitto_sub -h {} -p {} -t '{}/#' -v",
                b.ip(),
                b.port(),
                e.prefix
            );
        }
        if let Some(path) = ready_file {
            // Whoever reads the file may send readings at once: let them be heard.
            if !service.subscribed(READY_WAIT).await {
                tracing::warn!(
                    waited = ?READY_WAIT,
                    "writing the ready file before the broker took this node's subscriptions: readings sent now are lost"
                );
            }
            if let Err(e) = write_ready_file(path, e) {
                report_error(&e);
                service.stop().await;
                return ExitCode::from(2);
            }
        }
        let signal = wait_for_stop_signal(&service).await;
        tracing::info!(
            signal,
            "stopping: intake first, then the models, fusion and the outbox"
        );
        let started = std::time::Instant::now();
        service.stop().await;
        tracing::info!(ms = started.elapsed().as_millis() as u64, "stopped");
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM (systemd, containers) or SIGINT (Ctrl-C) and returns its name; on
/// SIGHUP meanwhile, reloads the cameras from the configuration file.
async fn wait_for_stop_signal(service: &Service) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = tokio::signal::ctrl_c() => return "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the cameras from the configuration file");
                let (tx, rx) = tokio::sync::oneshot::channel();
                if service.control().send(Control::Reload(tx)).await.is_ok() {
                    match rx.await {
                        Ok(Ok(applied)) => tracing::info!(?applied, "reloaded"),
                        Ok(Err(e)) => tracing::error!("reload refused, nothing changed:\n{e}"),
                        Err(_) => {}
                    }
                }
            }
        }
    }
}

/// Limit on the RTSP handshake of `probe`.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn probe(url: &str, snapshot: &Path, watch_secs: u64) -> ExitCode {
    let shown = redact_url(url);
    let expanded = SecretUrl::parse(url).and_then(|u| u.expand());
    let url = match expanded {
        Ok(u) if matches!(u.scheme(), "rtsp" | "rtsps") => u,
        Ok(u) => {
            report_error(&format!(
                "{shown}: scheme `{}` is not RTSP; use rtsp://host[:port]/path",
                u.scheme()
            ));
            return ExitCode::from(1);
        }
        Err(e) => {
            report_error(&format!("{shown}: {e}"));
            return ExitCode::from(1);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("probing {shown}");
    let report = runtime.block_on(sharpeyes_ingest::probe(
        &url,
        PROBE_CONNECT_TIMEOUT,
        Duration::from_secs(watch_secs),
    ));
    match report {
        Ok(report) => {
            println!("{report}");
            match &report.snapshot {
                Some(frame) => {
                    match image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone())
                        .map(|img| img.save_with_format(snapshot, image::ImageFormat::Jpeg))
                    {
                        Some(Ok(())) => println!(
                            "snapshot:       {} ({}x{})",
                            snapshot.display(),
                            frame.width,
                            frame.height
                        ),
                        Some(Err(e)) => {
                            println!("snapshot:       not saved: {}: {e}", snapshot.display())
                        }
                        None => println!(
                            "snapshot:       not saved: the decoded frame has the wrong size"
                        ),
                    }
                }
                None => println!("snapshot:       the first keyframe did not decode"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_error(&format!(
                "{shown}: {}; {}",
                e.kind(),
                sharpeyes_ingest::probe_hint(&e)
            ));
            if let Some(detail) = e.detail() {
                tracing::debug!(%detail, "what the camera or the library said");
            }
            ExitCode::from(1)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Cameras, served as /cam1 ... /camN.
    #[arg(long, default_value_t = 4)]
    cameras: usize,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Frames from one keyframe to the next.
    #[arg(long, default_value_t = 50)]
    gop: u32,
    /// Sensor noise in grey levels (0-32): real cameras' delta frames cost what they do
    /// mostly because of it; 6 brings a 1080p stream near its 4 Mbit/s.
    #[arg(long, default_value_t = 0)]
    grain: u8,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// A scheduled scene, e.g. `fire@10s:cam3` or `person@5s+30s:cam1` (repeatable).
    #[arg(long)]
    scenario: Vec<sharpeyes_ingest::ScheduledScene>,
    /// Also publish readings for the `[[sensors]]` of this configuration file over MQTT.
    #[arg(long, value_name = "CONFIG")]
    sensors: Option<PathBuf>,
    /// The broker sensor readings go to, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Topic prefix of the readings (`{prefix}/sensors/{id}`).
    #[arg(long, default_value = "sharpeyes")]
    prefix: String,
    /// Seconds between two readings of a sensor.
    #[arg(long, default_value_t = 1.0)]
    sensor_interval: f64,
    /// A scheduled sensor alarm, e.g. `smoke-dy-0001@10s+30s` (repeatable).
    #[arg(long)]
    sensor_alarm: Vec<sharpeyes_ingest::ScheduledAlarm>,
}

/// The sensor side of `simulate`: the sensors of `--sensors` and where their readings go.
fn sensor_simulator(
    args: &SimulateArgs,
) -> Result<Option<(sharpeyes_ingest::SensorSimulator, String, u16)>, String> {
    let Some(path) = &args.sensors else {
        if !args.sensor_alarm.is_empty() {
            return Err("--sensor-alarm needs --sensors CONFIG: the sensors to simulate".into());
        }
        return Ok(None);
    };
    let install = sharpeyes_config::Install::discover();
    let loaded = sharpeyes_config::Config::load(path, &install.model_dirs()).map_err(|p| {
        print_problems(&p);
        format!(
            "--sensors {}: the configuration does not load",
            path.display()
        )
    })?;
    let sensors = &loaded.config.sensors;
    if sensors.is_empty() {
        return Err(format!(
            "--sensors {}: it has no [[sensors]]",
            path.display()
        ));
    }
    let (host, port) = args
        .mqtt
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            format!(
                "--mqtt {}: expected HOST:PORT, e.g. 127.0.0.1:1883",
                args.mqtt
            )
        })?;
    if !(args.sensor_interval >= 0.05 && args.sensor_interval <= 3600.0) {
        return Err(format!(
            "--sensor-interval {}: use 0.05 to 3600 seconds",
            args.sensor_interval
        ));
    }
    let sim = sharpeyes_ingest::SensorSimulator::new(sensors, args.sensor_alarm.clone())
        .map_err(|e| e.to_string())?;
    Ok(Some((sim, host, port)))
}

/// How often `simulate` looks for scene changes to print.
const SCENE_POLL: Duration = Duration::from_millis(500);

pub fn simulate(args: SimulateArgs) -> ExitCode {
    let sensors = match sensor_simulator(&args) {
        Ok(s) => s,
        Err(e) => {
            report_error(&e);
            return ExitCode::from(2);
        }
    };
    let sensor_interval = Duration::from_secs_f64(args.sensor_interval);
    let config = sharpeyes_ingest::SimulatorConfig {
        cameras: args.cameras,
        width: args.width,
        height: args.height,
        fps: args.fps,
        gop: args.gop,
        grain: args.grain,
        port: args.port,
        scenario: args.scenario,
        ..sharpeyes_ingest::SimulatorConfig::default()
    };
    let started = std::time::Instant::now();
    let sim = match sharpeyes_ingest::Simulator::start(config) {
        Ok(s) => s,
        Err(e) => {
            report_error(&format!("the simulator does not start: {e}"));
            return ExitCode::from(1);
        }
    };
    println!(
        "# {} simulated camera(s) on rtsp://127.0.0.1:{}/cam1 ... (ready in {:.1} s); Ctrl-C stops.",
        args.cameras,
        sim.port(),
        started.elapsed().as_secs_f64()
    );
    println!("# Camera config for these streams:\n{}", sim.config_block());
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let publisher = sensors.map(|(sim, host, port)| {
            println!(
                "# sensor readings every {:.1} s to mqtt://{host}:{port}/{}/sensors/...",
                sensor_interval.as_secs_f64(),
                args.prefix
            );
            let prefix = args.prefix.clone();
            tokio::spawn(async move {
                sharpeyes::sensor_sim::publish(sim, &host, port, prefix, sensor_interval, shutdown)
                    .await
            })
        });
        let mut shown = 0;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => break,
                _ = tokio::time::sleep(SCENE_POLL) => {
                    let log = sim.scene_log();
                    for change in &log[shown.min(log.len())..] {
                        println!("# t=+{:.1}s cam{}: {}", change.instant.duration_since(started).as_secs_f64(), change.camera, change.scene);
                    }
                    shown = log.len();
                }
            }
        }
        let _ = stop.send(true);
        if let Some(p) = publisher {
            if let Ok(sent) = p.await {
                println!("# {sent} sensor reading(s) published");
            }
        }
    });
    sim.stop();
    ExitCode::SUCCESS
}

/// A single-threaded tokio runtime for a command's network I/O.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            report_error(&format!("cannot start the async runtime: {e}"));
            ExitCode::from(2)
        })
}

/// `sharpeyes gb28181 listen`: a small GB/T 28181 platform on `listen`, for integrators to
/// try `[gb28181]` without one. Prints one JSON line per thing it sees (registrations,
/// keepalives, alarms as WVP reads them, the Catalog it asks for after each registration)
/// until Ctrl-C or `for_`.
pub fn gb28181_listen(
    listen: std::net::SocketAddr,
    realm: &str,
    password: &str,
    tcp: bool,
    for_: Option<Duration>,
) -> ExitCode {
    let password = match sharpeyes_config::Secret::new(password).expand() {
        Ok(p) => p,
        Err(e) => {
            report_error(&format!("--password: {e}"));
            return ExitCode::from(2);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        report_error("cannot start the runtime");
        return ExitCode::from(1);
    };
    runtime.block_on(async move {
        let platform = match sharpeyes_gb28181::platform::SipPlatform::listen_at(
            listen, realm, &password, tcp,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                report_error(&format!("cannot listen on {listen}: {e}"));
                return ExitCode::from(1);
            }
        };
        let line = |v: serde_json::Value| println!("{v}");
        line(serde_json::json!({
            "event": "listening",
            "addr": platform.addr().to_string(),
            "transport": if tcp { "tcp" } else { "udp" },
            "realm": realm,
        }));
        let deadline = for_.map(|d| tokio::time::Instant::now() + d);
        let mut shown = sharpeyes_gb28181::platform::Seen::default();
        let mut sn = 0u32;
        loop {
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = wait => {}
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
            let seen = platform.seen();
            for (i, from) in seen.sources.iter().enumerate().skip(shown.sources.len()) {
                let device = seen.usernames.get(i).cloned().unwrap_or_default();
                line(serde_json::json!({"event": "registered", "device": device, "from": from.to_string()}));
                sn += 1;
                platform.query("Catalog", sn, &device).await;
            }
            if seen.refused > shown.refused {
                line(serde_json::json!({"event": "refused", "count": seen.refused, "why": "the Digest answer did not match this realm and password"}));
            }
            if seen.keepalives > shown.keepalives {
                line(serde_json::json!({"event": "keepalive", "count": seen.keepalives}));
            }
            for a in seen.alarms.iter().skip(shown.alarms.len()) {
                line(serde_json::json!({
                    "event": "alarm",
                    "device_id": a.device_id,
                    "priority": a.priority,
                    "method": a.method,
                    "time": a.time,
                    "type": a.alarm_type,
                    "event_type": a.event_type,
                    "description": a.description,
                }));
            }
            if seen.dropped > shown.dropped {
                line(serde_json::json!({"event": "alarm-dropped", "count": seen.dropped, "why": "no AlarmTime: WVP drops such alarms"}));
            }
            for xml in seen.responses.iter().skip(shown.responses.len()) {
                line(serde_json::json!({"event": "response", "xml": xml}));
            }
            shown = seen;
        }
        ExitCode::SUCCESS
    })
}

/// `sharpeyes report`: the online and usable rates of every camera over `since`, from the
/// health history the nodes keep (Redis with `[redis]`, else this node's `data_dir`). A table
/// per grid, worst grid and worst camera first; or one CSV line per camera.
pub fn report(file: &Path, since: std::time::Duration, csv: bool) -> ExitCode {
    let install = Install::discover();
    let loaded = match Config::load(file, &install.model_dirs()) {
        Ok(l) => l,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    let config = loaded.config;
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let from = std::time::SystemTime::now() - since;
    let tallies = rt.block_on(async {
        let mut history = sharpeyes::health_history::HealthHistory::open(&config).await;
        history.read(from).await
    });
    let tallies = match tallies {
        Ok(t) => t,
        Err(e) => {
            report_error(&format!("the health history cannot be read: {e}"));
            return ExitCode::from(2);
        }
    };
    let report = sharpeyes::health_history::report;
    let (Some(grids), Some(cameras)) = (
        report(&config, &tallies, "grid"),
        report(&config, &tallies, "camera"),
    ) else {
        return ExitCode::from(2);
    };
    let percent = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let hours = |s: u64| format!("{:.1}", s as f64 / 3600.0);
    if csv {
        println!("grid,camera,name,watched_hours,online_rate,usable_rate");
        for g in &grids {
            for c in cameras
                .iter()
                .filter(|c| c.grid.as_deref() == Some(g.id.as_str()))
            {
                let rate = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.4}"));
                println!(
                    "{},{},{},{},{},{}",
                    g.id,
                    c.id,
                    csv_field(&c.name),
                    hours(c.watched_seconds),
                    rate(c.online_rate),
                    rate(c.usable_rate)
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "camera health since {} (to the hour; `-`: not watched)",
        humantime::format_rfc3339_seconds(from)
    );
    for g in &grids {
        println!(
            "\n{} {}: {} cameras, online {}, usable {}",
            g.id,
            g.name,
            g.cameras,
            percent(g.online_rate),
            percent(g.usable_rate)
        );
        println!(
            "  {:<24} {:>8} {:>8} {:>9}  name",
            "camera", "online", "usable", "watched h"
        );
        for c in cameras
            .iter()
            .filter(|c| c.grid.as_deref() == Some(g.id.as_str()))
        {
            println!(
                "  {:<24} {:>8} {:>8} {:>9}  {}",
                c.id,
                percent(c.online_rate),
                percent(c.usable_rate),
                hours(c.watched_seconds),
                c.name
            );
        }
    }
    ExitCode::SUCCESS
}

/// `sharpeyes import`: checks and probes the cameras of `csv` against the configuration
/// `file`; the report on the terminal and in `out`.
pub fn import(
    file: &Path,
    csv: &Path,
    out: &Path,
    options: sharpeyes::import::ImportOptions,
) -> ExitCode {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let (config_text, csv_text) = match (read(file), read(csv)) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => {
            report_error(&e);
            return ExitCode::from(2);
        }
    };
    let install = Install::discover();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let reports = rt.block_on(sharpeyes::import::import(
        &csv_text,
        &config_text,
        file,
        &install.model_dirs(),
        options,
    ));
    let reports = match reports {
        Ok(r) => r,
        Err(e) => {
            report_error(&format!("{}: {e}", csv.display()));
            return ExitCode::from(2);
        }
    };
    print!("{}", sharpeyes::import::table(&reports));
    if let Err(e) = sharpeyes::import::write_report(out, &reports) {
        report_error(&e);
        return ExitCode::from(2);
    }
    println!(
        "report: {}, entries of the cameras that passed: {}",
        out.join("report.html").display(),
        out.join("cameras.toml").display()
    );
    let all_passed = reports
        .iter()
        .all(|r| matches!(r.status, sharpeyes::import::Status::Passed(_)));
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `sharpeyes export`: the judged alerts of the store the configuration names, as a YOLO
/// dataset in `dir`. A configured Redis must answer: an export of the spool alone would
/// look complete and miss the cluster's alerts.
pub fn export(file: &Path, request: &sharpeyes::export::ExportRequest, dir: &Path) -> ExitCode {
    let install = Install::discover();
    let config = match Config::load(file, &install.model_dirs()) {
        Ok(l) => l.config,
        Err(problems) => {
            print_problems(&problems);
            return ExitCode::from(1);
        }
    };
    if let Some(h) = &request.hazard {
        if config.hazard(h).is_none() {
            let known: Vec<&str> = config.hazards.iter().map(|h| h.name.as_str()).collect();
            report_error(&format!(
                "--hazard {h}: no such hazard in {}; it has {}",
                file.display(),
                known.join(", ")
            ));
            return ExitCode::from(2);
        }
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let done = rt.block_on(async {
        let store = sharpeyes_alerts::open_store(&config)
            .await
            .map_err(|e| e.to_string())?;
        if config.redis.is_some() {
            store.ping().await.map_err(|e| e.to_string())?;
        }
        sharpeyes::export::export(&config, store.as_ref(), request, dir).await
    });
    match done {
        Ok(done) => {
            println!(
                "exported {} judged alerts ({} boxes) to {}",
                done.alerts,
                done.boxes,
                dir.display()
            );
            if done.without_frame > 0 {
                println!(
                    "{} more matched but have no frame kept (sensor alerts, or judged before their frame was kept)",
                    done.without_frame
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_error(&e);
            ExitCode::from(2)
        }
    }
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
