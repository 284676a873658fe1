//! The end-to-end harness: N simulated cameras -> the real service (`sharpeyes run`) -> a
//! real mosquitto, for each N of a list, with a Frigate-style full-decode pipeline on the
//! same cameras in the same run.
//!
//! The simulator runs in this process and the service in its own, so the CPU and memory
//! read from `/proc` are the service's alone. Each step starts everything afresh, lets the
//! cameras settle, then measures a window: frame counters and inference from `/metrics`,
//! and alert latency from each scheduled fire (the simulator logs when its first frame was
//! sent) to its alert arriving at a subscriber of the broker. [`soak`] runs one N for many
//! minutes under broker and Redis faults and camera churn.

mod alerts;
pub mod nodes;
pub mod procs;
mod prom;
pub mod report;
pub mod soak;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sharpeyes_config::Sampling;
use sharpeyes_ingest::simulator::SceneKind;
use sharpeyes_ingest::{ScheduledScene, Simulator, SimulatorConfig};
use sharpeyes_testkit::Mosquitto;
use sharpeyes_testkit::config::{FIRE, GRIDS, with};

pub use prom::Scrape;

/// Which pipeline a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    /// sharpeyes as configured: sampling before decoding (keyframes by default).
    Sharpeyes,
    /// What Frigate does: every frame decoded, a few a second sampled for detection.
    FullDecode,
}

impl Pipeline {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sharpeyes => "sharpeyes",
            Self::FullDecode => "full-decode",
        }
    }
}

/// What a run measures, and the knobs of the service under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// The `sharpeyes` binary under test.
    pub binary: PathBuf,
    /// Camera counts, one step each.
    pub cameras: Vec<usize>,
    pub pipelines: Vec<Pipeline>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop: u32,
    /// The simulated cameras' sensor noise (grey levels): with it, a 1080p stream comes
    /// near its 4 Mbit/s and delta frames cost what a real camera's do to receive and decode.
    pub grain: u8,
    /// From the simulator's start to the measured window: start-up and first keyframes.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// The measured window.
    #[serde(with = "secs")]
    pub measure: Duration,
    /// sharpeyes' sampling.
    #[serde(with = "sampling")]
    pub sampling: Sampling,
    /// Frames a second the full-decode baseline sends to detection (Frigate's `detect.fps`).
    pub baseline_fps: f64,
    pub input_size: u32,
    /// The input's height when not square (`input_height`), in both pipelines.
    #[serde(default)]
    pub input_height: Option<u32>,
    pub max_batch: usize,
    #[serde(with = "secs")]
    pub max_wait: Duration,
    pub threads: usize,
    /// The detector's `precision` (`int8` or `float`), the same in both pipelines: a
    /// full-decode system runs the same model (Frigate's CPU default is a quantized one).
    pub precision: String,
    pub motion: bool,
    /// The motion gate's `forced_interval` in seconds; `None`: the configuration's default.
    #[serde(default)]
    pub forced_interval_s: Option<u64>,
    /// `[ingest] receive_coalesce` in milliseconds; `None`: the configuration's default.
    #[serde(default)]
    pub receive_coalesce_ms: Option<u64>,
    /// `[ingest] keyframe_decoders`; `None`: the configuration's default (one per core).
    #[serde(default)]
    pub keyframe_decoders: Option<usize>,
    /// Each simulated camera's keyframes at their own time in the GOP, as independent
    /// cameras' are (`stagger_gops`); `false`: all together, every GOP.
    #[serde(default = "yes")]
    pub stagger_gops: bool,
    /// `retina` or `gstreamer`.
    pub backend: String,
    /// Stop a pipeline's steps after the first N it does not hold.
    pub stop_at_first_miss: bool,
    /// Where the simulator keeps its encoded clips between runs.
    pub clip_cache: Option<PathBuf>,
    /// The CPUs the service may run on (a `taskset -c` list), when the load generator (this
    /// harness, its simulator and broker) is to have the others to itself.
    #[serde(default)]
    pub service_cpus: Option<String>,
}

impl Options {
    /// Defaults of the README command: 1080p25, GOP 50, the fire detector at 320.
    pub fn new(binary: PathBuf) -> Options {
        Options {
            binary,
            cameras: vec![4, 8, 16, 32, 48],
            pipelines: vec![Pipeline::Sharpeyes, Pipeline::FullDecode],
            width: 1920,
            height: 1080,
            fps: 25,
            gop: 50,
            grain: 6,
            warmup: Duration::from_secs(12),
            measure: Duration::from_secs(40),
            sampling: Sampling::Keyframes,
            baseline_fps: 5.0,
            input_size: 320,
            input_height: None,
            max_batch: 4,
            max_wait: Duration::from_millis(50),
            threads: 1,
            precision: "int8".into(),
            motion: true,
            forced_interval_s: None,
            receive_coalesce_ms: None,
            keyframe_decoders: None,
            stagger_gops: true,
            backend: "retina".into(),
            stop_at_first_miss: true,
            clip_cache: None,
            service_cpus: None,
        }
    }

    /// The sampling a pipeline's cameras use.
    pub fn sampling_of(&self, pipeline: Pipeline) -> Sampling {
        match pipeline {
            Pipeline::Sharpeyes => self.sampling,
            Pipeline::FullDecode => Sampling::Fps(self.baseline_fps),
        }
    }

    /// Frames a second each camera should hand to analytics under `sampling`.
    pub fn expected_rate(&self, sampling: Sampling) -> f64 {
        let fps = f64::from(self.fps);
        match sampling {
            Sampling::Keyframes => fps / f64::from(self.gop),
            Sampling::All => fps,
            Sampling::Fps(f) => f.min(fps),
        }
    }

    /// The DESIGN.md latency target: one GOP + 2 s.
    pub fn latency_target(&self) -> f64 {
        f64::from(self.gop) / f64::from(self.fps) + 2.0
    }
}

fn yes() -> bool {
    true
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        f64::deserialize(d).map(Duration::from_secs_f64)
    }
}

mod sampling {
    use serde::{Deserialize, Deserializer, Serializer};
    use sharpeyes_config::Sampling;

    pub fn serialize<S: Serializer>(v: &Sampling, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::sampling_name(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sampling, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_sampling(&text).map_err(serde::de::Error::custom)
    }
}

/// `keyframes`, `all`, `fps=N` (as [`sampling_name`] writes) or a bare N.
pub fn parse_sampling(s: &str) -> Result<Sampling, String> {
    match s {
        "keyframes" => Ok(Sampling::Keyframes),
        "all" => Ok(Sampling::All),
        n => n
            .trim_start_matches("fps=")
            .parse::<f64>()
            .ok()
            .filter(|f| *f > 0.0)
            .map(Sampling::Fps)
            .ok_or_else(|| format!("`{n}`: expected keyframes, all, or frames a second")),
    }
}

/// `keyframes`, `all` or `fps=N`.
pub fn sampling_name(s: Sampling) -> String {
    match s {
        Sampling::Keyframes => "keyframes".into(),
        Sampling::All => "all".into(),
        Sampling::Fps(f) => format!("fps={f}"),
    }
}

fn sampling_toml(s: Sampling) -> String {
    match s {
        Sampling::Keyframes => "\"keyframes\"".into(),
        Sampling::All => "\"all\"".into(),
        Sampling::Fps(f) => format!("{{ fps = {f} }}"),
    }
}

/// One camera over the measured window, in frames a second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CameraFigures {
    pub camera: String,
    pub received: f64,
    /// Decoded, whether handed on or decoded only as a reference.
    pub decoded: f64,
    /// Handed on to analytics as RGB.
    pub handed_on: f64,
    pub dropped: f64,
    pub gated: f64,
    pub analysed: f64,
    pub reconnects: f64,
    pub streaming: bool,
}

/// Alert latency: a scheduled fire first on screen -> its alert at the subscriber.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Seconds, one per fire that raised an alert.
    pub samples: Vec<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Fires shown that raised no alert before the step ended.
    pub missed: usize,
}

impl Latency {
    pub fn from_samples(mut samples: Vec<f64>, missed: usize) -> Latency {
        samples.sort_by(f64::total_cmp);
        Latency {
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied(),
            samples,
            missed,
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One step: one pipeline with N cameras.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub pipeline: Pipeline,
    pub cameras: usize,
    pub sampling: String,
    /// Seconds measured.
    pub seconds: f64,
    /// No camera starved, no queue grew, every fire alerted.
    pub held: bool,
    /// Why not, when not held.
    pub reasons: Vec<String>,
    /// Means over the cameras, frames a second each.
    pub received: f64,
    pub decoded: f64,
    pub handed_on: f64,
    pub analysed: f64,
    pub dropped: f64,
    /// The least any camera handed on, frames a second.
    pub min_handed_on: f64,
    /// Frames inferred a second, all cameras.
    pub inferred: f64,
    /// Mean frames per inference batch, and that over `max_batch`.
    pub batch_mean: f64,
    pub batch_fill: f64,
    /// Mean wait before a frame's batch ran, first and second half of the window, ms.
    pub queue_wait_ms: [f64; 2],
    /// The service's CPU, cores (CPU seconds a second), and that per camera.
    pub service_cores: f64,
    pub cores_per_camera: f64,
    /// This process (the simulator and the subscriber), cores: it shares the machine.
    pub simulator_cores: f64,
    pub rss_mib: f64,
    /// Resident memory at the end of the window less that at its start.
    pub rss_growth_mib: f64,
    pub peak_rss_mib: f64,
    pub latency: Latency,
    pub per_camera: Vec<CameraFigures>,
    /// Where a camera's CPU goes: % of a core per camera by stage
    /// (`sharpeyes_stage_cpu_seconds_total`, thread CPU), in the stages' order, then
    /// `other` (the service's CPU that no stage counted: runtime, HTTP, logging...).
    #[serde(default)]
    pub stage_cpu: Vec<(String, f64)>,
}

impl Step {
    /// A step that ended before its figures were read: not held, for `reason`.
    pub fn unmeasured(
        options: &Options,
        pipeline: Pipeline,
        cameras: usize,
        reason: String,
    ) -> Step {
        Step {
            pipeline,
            cameras,
            sampling: sampling_name(options.sampling_of(pipeline)),
            seconds: 0.0,
            held: false,
            reasons: vec![format!("not measured: {reason}")],
            received: 0.0,
            decoded: 0.0,
            handed_on: 0.0,
            analysed: 0.0,
            dropped: 0.0,
            min_handed_on: 0.0,
            inferred: 0.0,
            batch_mean: 0.0,
            batch_fill: 0.0,
            queue_wait_ms: [0.0; 2],
            service_cores: 0.0,
            cores_per_camera: 0.0,
            simulator_cores: 0.0,
            rss_mib: 0.0,
            rss_growth_mib: 0.0,
            peak_rss_mib: 0.0,
            latency: Latency::default(),
            per_camera: Vec::new(),
            stage_cpu: Vec::new(),
        }
    }

    /// Whether the step's window was measured at all (see [`Step::unmeasured`]).
    pub fn measured(&self) -> bool {
        self.seconds > 0.0
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub machine: Machine,
    pub options: Options,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// The cores the service may use: the machine's, or those of `--service-cpus`.
    pub cores: usize,
    pub cpu: String,
}

impl Machine {
    /// This machine, as the service sees it: on `service_cpus` (a `taskset -c` list) when
    /// given.
    pub fn this(service_cpus: Option<&str>) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = match service_cpus {
            Some(list) => list.split(',').count(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Machine { cores, cpu }
    }
}

impl Run {
    /// The largest N a pipeline held, if any.
    pub fn capacity(&self, pipeline: Pipeline) -> Option<usize> {
        self.steps
            .iter()
            .filter(|s| s.pipeline == pipeline && s.held)
            .map(|s| s.cameras)
            .max()
    }

    pub fn step(&self, pipeline: Pipeline, cameras: usize) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.pipeline == pipeline && s.cameras == cameras)
    }
}

/// Runs every step; `progress` hears of each as it ends.
pub fn run(options: &Options, mut progress: impl FnMut(&Step)) -> Result<Run, String> {
    if !options.binary.exists() {
        return Err(format!(
            "{} does not exist; build it with `cargo build --release`",
            options.binary.display()
        ));
    }
    let mut steps = Vec::new();
    for &pipeline in &options.pipelines {
        for &n in &options.cameras {
            // A step that could not be measured (an overloaded service that stops answering
            // `/metrics`) did not hold; the run goes on to its table.
            let step = run_step(options, pipeline, n)
                .unwrap_or_else(|e| Step::unmeasured(options, pipeline, n, e));
            progress(&step);
            let held = step.held;
            steps.push(step);
            if !held && options.stop_at_first_miss {
                break;
            }
        }
    }
    Ok(Run {
        machine: Machine::this(options.service_cpus.as_deref()),
        options: options.clone(),
        steps,
    })
}

/// Fires, one per camera, spread over the first two thirds of the window so that every
/// alert can arrive within it; each stays on screen for five GOPs.
fn fire_schedule(options: &Options, cameras: usize) -> Vec<ScheduledScene> {
    let gop = Duration::from_secs_f64(f64::from(options.gop) / f64::from(options.fps));
    let span = options.measure.mul_f64(0.6);
    (1..=cameras)
        .map(|i| ScheduledScene {
            scene: SceneKind::Fire,
            camera: i,
            at: options.warmup + gop + span.mul_f64((i - 1) as f64 / cameras as f64),
            duration: Some(gop * 5),
        })
        .collect()
}

/// The camera id of `/camN`: a GB/T 28181 IP-camera id with N as its serial.
pub fn camera_id(n: usize) -> String {
    format!("32132200001320{n:06}")
}

const PREFIX: &str = "bench";

/// `[ingest]` with what the options set, or nothing.
fn ingest_section(options: &Options) -> String {
    let mut lines = String::new();
    if let Some(ms) = options.receive_coalesce_ms {
        lines += &format!("receive_coalesce = \"{ms}ms\"\n");
    }
    if let Some(n) = options.keyframe_decoders {
        lines += &format!("keyframe_decoders = {n}\n");
    }
    if lines.is_empty() {
        lines
    } else {
        format!("[ingest]\n{lines}\n")
    }
}

fn service_config(
    options: &Options,
    pipeline: Pipeline,
    cameras: usize,
    dir: &std::path::Path,
    broker: u16,
    sim_port: u16,
) -> String {
    // One alert per camera in the whole run.
    let fire = tuned_fire(options, "30m");
    let mut out = format!(
        r#"[node]
id = "bench-node"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
prefix = "{PREFIX}"

[http]
listen = "127.0.0.1:0"

{ingest}[motion]
enabled = {motion}
{forced}{GRIDS}{fire}"#,
        data = dir.join("data").display(),
        motion = options.motion,
        ingest = ingest_section(options),
        forced = (options.forced_interval_s)
            .map(|s| format!("forced_interval = \"{s}s\"\n"))
            .unwrap_or_default(),
    );
    let sampling = sampling_toml(options.sampling_of(pipeline));
    for n in 1..=cameras {
        out.push_str(&format!(
            "\n[[cameras]]\nid = \"{id}\"\nname = \"bench cam{n}\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://127.0.0.1:{sim_port}/cam{n}\"\ngrid = \"321322-001-003-07\"\nsampling = {sampling}\nbackend = \"{backend}\"\nhazards = [\"fire\"]\n",
            id = camera_id(n),
            backend = options.backend,
        ));
    }
    out
}

/// The shared fire fixture with the detector tuned as the options ask, cooling down for
/// `cooldown` (e.g. `"30m"`).
fn tuned_fire(options: &Options, cooldown: &str) -> String {
    let mut fire = FIRE.to_owned();
    for (key, value) in [
        (
            "input_size",
            match options.input_height {
                Some(h) => format!("{}\ninput_height = {h}", options.input_size),
                None => options.input_size.to_string(),
            },
        ),
        ("threads", options.threads.to_string()),
        ("precision", format!("\"{}\"", options.precision)),
        ("max_batch", options.max_batch.to_string()),
        (
            "max_wait",
            format!("\"{}ms\"", options.max_wait.as_millis()),
        ),
        ("cooldown", format!("\"{cooldown}\"")),
    ] {
        fire = with(&fire, key, &value);
    }
    fire
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// One `/metrics` scrape; a service too busy to answer within the read timeout gets two
/// more tries before the step gives up on it.
fn scrape(port: u16) -> Result<Scrape, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match procs::http_get(port, "/metrics") {
            Ok((200, body)) => return Ok(Scrape::parse(&body)),
            Ok((status, _)) => last = format!("GET /metrics answered {status}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(last)
}

/// Runs one pipeline with `cameras` cameras and measures it.
pub fn run_step(options: &Options, pipeline: Pipeline, cameras: usize) -> Result<Step, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
    let broker = Mosquitto::start(false, &[]);
    let broker_port = broker.port;
    let subscriber = alerts::Subscriber::start(broker_port, &format!("{PREFIX}/alerts/#"))?;

    let sim = Simulator::start(SimulatorConfig {
        cameras,
        width: options.width,
        height: options.height,
        fps: options.fps,
        gop: options.gop,
        grain: options.grain,
        port: 0,
        scenario: fire_schedule(options, cameras),
        cache_dir: options.clip_cache.clone(),
        stagger_gops: options.stagger_gops,
        ..SimulatorConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let started = Instant::now();

    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        service_config(
            options,
            pipeline,
            cameras,
            dir.path(),
            broker_port,
            sim.port(),
        ),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let log = dir.path().join("service.log");
    let (mut service, http) = procs::start_service(
        &options.binary,
        &config,
        &log,
        options.service_cpus.as_deref(),
    )?;
    let pid = service.pid().to_string();
    let me = std::process::id().to_string();
    let service_log = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };

    // Every camera streaming, within the warm-up and 30 s more (a service that cannot
    // start them all fails the step, not the run).
    let deadline = started + options.warmup + Duration::from_secs(30);
    loop {
        if !service.alive() {
            return Err(format!(
                "the service exited during start-up:\n{}",
                service_log()
            ));
        }
        let streaming = scrape(http)
            .map(|s| s.sum("sharpeyes_camera_state", &[("state", "streaming")]))
            .unwrap_or(0.0);
        if streaming as usize >= cameras {
            break;
        }
        if Instant::now() > deadline {
            // Measured anyway: the cameras that never streamed are starved in the verdict.
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    sleep_until(started + options.warmup);
    let read_cpu = |pid: &str| procs::cpu_seconds(pid).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    let (s0, cpu0, me0) = (scrape(http)?, read_cpu(&pid), read_cpu(&me));
    let rss0 = procs::memory_mib(&pid).map_or(f64::NAN, |m| m.0);
    sleep_until(t0 + options.measure / 2);
    let s1 = scrape(http)?;
    sleep_until(t0 + options.measure);
    let (s2, cpu2, me2) = (scrape(http)?, read_cpu(&pid), read_cpu(&me));
    let seconds = t0.elapsed().as_secs_f64();
    let (rss, peak) = procs::memory_mib(&pid).unwrap_or((f64::NAN, f64::NAN));
    let alive = service.alive();

    // Fires late in the window: their alerts may still be on their way.
    let fires = cameras; // one each
    let grace = Instant::now() + Duration::from_secs(10);
    while Instant::now() < grace && subscriber.fire_alerts() < fires {
        std::thread::sleep(Duration::from_millis(100));
    }
    let scenes = sim.scene_log();
    // The simulator first, so that its clients leave the way RTSP clients do.
    sim.stop();
    drop(service);
    let received = subscriber.stop();

    let samples: Vec<f64> = (1..=cameras)
        .filter_map(|n| {
            let shown = scenes
                .iter()
                .find(|c| c.camera == n && c.scene == SceneKind::Fire)?
                .at;
            let id = camera_id(n);
            received
                .iter()
                .find(|a| a.camera == id && a.hazard == "fire" && a.at >= shown)
                .and_then(|a| a.at.duration_since(shown).ok())
                .map(|d| d.as_secs_f64())
        })
        .collect();
    let missed = fires.saturating_sub(samples.len());

    let window = Window {
        s0,
        s1,
        s2,
        seconds,
    };
    let ids: Vec<String> = (1..=cameras).map(camera_id).collect();
    let mut step = judge(
        options,
        pipeline,
        &ids,
        &window,
        Latency::from_samples(samples, missed),
    );
    step.service_cores = (cpu2 - cpu0) / seconds;
    step.cores_per_camera = step.service_cores / cameras as f64;
    let counted: f64 = step.stage_cpu.iter().map(|(_, v)| v).sum();
    step.stage_cpu.push((
        "other".into(),
        (step.cores_per_camera * 100.0 - counted).max(0.0),
    ));
    step.simulator_cores = (me2 - me0) / seconds;
    step.rss_mib = rss;
    step.rss_growth_mib = rss - rss0;
    step.peak_rss_mib = peak;
    if !alive {
        step.held = false;
        step.reasons.push(format!(
            "the service exited during the window:\n{}",
            service_log()
        ));
    }
    Ok(step)
}

/// Three scrapes of the measured window: its start, middle and end.
pub struct Window {
    pub s0: Scrape,
    pub s1: Scrape,
    pub s2: Scrape,
    pub seconds: f64,
}

const FRAMES: &str = "sharpeyes_frames_total";

/// The figures of a window, and whether the pipeline held: no camera starved (each received
/// its stream, handed on what its sampling asks, lost few frames to a busy analytics stage,
/// never reconnected), no queue grew (inference refused or aged out almost nothing, and
/// waits did not climb), and every fire raised its alert.
pub fn judge(
    options: &Options,
    pipeline: Pipeline,
    cameras: &[String],
    w: &Window,
    latency: Latency,
) -> Step {
    let sampling = options.sampling_of(pipeline);
    let expected = options.expected_rate(sampling);
    let rate = |camera: &str, outcome: &str| {
        let l = [("camera", camera), ("outcome", outcome)];
        (w.s2.sum(FRAMES, &l) - w.s0.sum(FRAMES, &l)) / w.seconds
    };
    let per_camera: Vec<CameraFigures> = cameras
        .iter()
        .map(|c| {
            let handed_on = rate(c, "decoded");
            let reconnects =
                w.s2.sum("sharpeyes_camera_reconnects_total", &[("camera", c)])
                    - w.s0
                        .sum("sharpeyes_camera_reconnects_total", &[("camera", c)]);
            CameraFigures {
                camera: c.clone(),
                received: rate(c, "received"),
                decoded: handed_on + rate(c, "decode_only"),
                handed_on,
                dropped: rate(c, "dropped"),
                gated: rate(c, "gated"),
                analysed: rate(c, "analysed"),
                reconnects,
                streaming: w.s2.sum(
                    "sharpeyes_camera_state",
                    &[("camera", c), ("state", "streaming")],
                ) >= 1.0,
            }
        })
        .collect();

    let mut reasons = Vec::new();
    let mut starved =
        |what: &str, which: Vec<&CameraFigures>, show: &dyn Fn(&CameraFigures) -> String| {
            if let Some(first) = which.first() {
                reasons.push(format!(
                    "{} of {} cameras {what} (e.g. {}: {})",
                    which.len(),
                    cameras.len(),
                    first.camera,
                    show(first)
                ));
            }
        };
    let fps = f64::from(options.fps);
    starved(
        "not streaming at the end",
        per_camera.iter().filter(|c| !c.streaming).collect(),
        &|_| "state is not streaming".into(),
    );
    starved(
        "reconnected",
        per_camera.iter().filter(|c| c.reconnects > 0.0).collect(),
        &|c| format!("{} reconnects", c.reconnects),
    );
    // The GStreamer backend does not count what it receives; its frames handed on tell.
    if options.backend != "gstreamer" {
        starved(
            "received under 90% of their frames",
            per_camera
                .iter()
                .filter(|c| c.received < 0.9 * fps)
                .collect(),
            &|c| format!("{:.1} of {fps} fps", c.received),
        );
    }
    starved(
        "handed on under 80% of what their sampling asks",
        per_camera
            .iter()
            .filter(|c| c.handed_on < 0.8 * expected)
            .collect(),
        &|c| format!("{:.2} of {expected:.2} fps", c.handed_on),
    );
    starved(
        "lost over 10% of their frames to a busy analytics stage",
        per_camera
            .iter()
            .filter(|c| c.dropped > 0.1 * c.handed_on.max(f64::MIN_POSITIVE))
            .collect(),
        &|c| format!("{:.2} of {:.2} fps dropped", c.dropped, c.handed_on),
    );

    let model =
        |s: &Scrape, outcome: &str| s.sum("sharpeyes_model_frames_total", &[("outcome", outcome)]);
    let delta = |outcome: &str| model(&w.s2, outcome) - model(&w.s0, outcome);
    let (inferred, refused, stale) = (delta("inferred"), delta("refused"), delta("stale"));
    let lost = refused + stale;
    if lost > 0.02 * (inferred + lost) {
        reasons.push(format!(
            "inference could not keep up: {lost:.0} of {:.0} frames refused or aged out",
            inferred + lost
        ));
    }
    let mean = |a: &Scrape, b: &Scrape, name: &str, labels: &[(&str, &str)]| {
        let count =
            b.sum(&format!("{name}_count"), labels) - a.sum(&format!("{name}_count"), labels);
        let sum = b.sum(&format!("{name}_sum"), labels) - a.sum(&format!("{name}_sum"), labels);
        if count > 0.0 { sum / count } else { 0.0 }
    };
    let queue = [("stage", "queue_wait")];
    let wait = [
        mean(&w.s0, &w.s1, "sharpeyes_stage_seconds", &queue) * 1e3,
        mean(&w.s1, &w.s2, "sharpeyes_stage_seconds", &queue) * 1e3,
    ];
    if wait[1] > (2.0 * wait[0]).max(wait[0] + 250.0) {
        reasons.push(format!(
            "the inference queue grew: frames waited {:.0} ms, then {:.0} ms",
            wait[0], wait[1]
        ));
    }
    let outbox = w.s2.sum("sharpeyes_outbox_depth", &[]);
    if outbox > cameras.len() as f64 {
        reasons.push(format!("{outbox} alerts waiting in the outbox at the end"));
    }
    if latency.missed > 0 {
        reasons.push(format!(
            "{} of {} fires raised no alert",
            latency.missed,
            latency.missed + latency.samples.len()
        ));
    }
    // The target is part of holding (#20): a node whose alerts come seconds late because its
    // CPU is full is not holding its cameras, whichever pipeline it runs.
    let target = options.latency_target();
    if let Some(p99) = latency.p99.filter(|p| *p > target) {
        reasons.push(format!(
            "alerts came late: p99 {p99:.2} s, over the target of {target:.1} s (one GOP + 2 s)"
        ));
    }
    let batch_mean = mean(&w.s0, &w.s2, "sharpeyes_inference_batch_size", &[]);

    let n = per_camera.len().max(1) as f64;
    let avg = |f: fn(&CameraFigures) -> f64| per_camera.iter().map(f).sum::<f64>() / n;
    Step {
        pipeline,
        cameras: cameras.len(),
        sampling: sampling_name(sampling),
        seconds: w.seconds,
        held: reasons.is_empty(),
        reasons,
        received: avg(|c| c.received),
        decoded: avg(|c| c.decoded),
        handed_on: avg(|c| c.handed_on),
        analysed: avg(|c| c.analysed),
        dropped: avg(|c| c.dropped),
        min_handed_on: per_camera
            .iter()
            .map(|c| c.handed_on)
            .fold(f64::INFINITY, f64::min),
        inferred: inferred / w.seconds,
        batch_mean,
        batch_fill: batch_mean / options.max_batch as f64,
        queue_wait_ms: wait,
        service_cores: 0.0,
        cores_per_camera: 0.0,
        simulator_cores: 0.0,
        rss_mib: 0.0,
        rss_growth_mib: 0.0,
        peak_rss_mib: 0.0,
        latency,
        per_camera,
        stage_cpu: stage_cpu(w, cameras.len()),
    }
}

const STAGE_CPU: &str = "sharpeyes_stage_cpu_seconds_total";

/// % of a core per camera by stage over the window, in the stages' order.
fn stage_cpu(w: &Window, cameras: usize) -> Vec<(String, f64)> {
    let per = 100.0 / w.seconds.max(f64::MIN_POSITIVE) / cameras.max(1) as f64;
    sharpeyes_ingest::cpu::Stage::ALL
        .into_iter()
        .map(|stage| {
            let labels = [("stage", stage.as_str())];
            let used = w.s2.sum(STAGE_CPU, &labels) - w.s0.sum(STAGE_CPU, &labels);
            (stage.as_str().to_owned(), used.max(0.0) * per)
        })
        .collect()
}

#[cfg(test)]
mod tests;
