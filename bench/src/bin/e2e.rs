//! `make bench-e2e`: the end-to-end harness. See `sharpeyes_bench::e2e` and the README's
//! tuning guide.

#![allow(clippy::print_stdout, clippy::print_stderr)] // the figures are the output

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sharpeyes_bench::e2e::{self, Options, Pipeline, report};
use sharpeyes_config::Sampling;

/// Simulated cameras through the real service to a real broker, for each N of a list, with
/// a Frigate-style full-decode baseline on the same cameras; a table, JSON and an SVG plot.
#[derive(Parser)]
struct Args {
    /// Camera counts, one step each.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,48")]
    cameras: Vec<usize>,
    /// Seconds measured per step (after the warm-up).
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// Seconds from start to the measured window.
    #[arg(long, default_value_t = 12)]
    warmup: u64,
    /// sharpeyes' sampling: `keyframes`, `all`, or frames a second.
    #[arg(long, default_value = "keyframes", value_parser = e2e::parse_sampling)]
    sampling: Sampling,
    /// Frames a second the full-decode baseline sends to detection.
    #[arg(long, default_value_t = 5.0)]
    baseline_fps: f64,
    /// Run the full-decode baseline too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    baseline: bool,
    /// Run sharpeyes' own steps.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sharpeyes: bool,
    /// Detector input side (the fire detector; a multiple of 32).
    #[arg(long, default_value_t = 320)]
    input_size: u32,
    /// Detector input height. Default: the 16:9 fit with no bars, as the demo runs (192 with
    /// 320, 384 with 640); `--input-size` again for a square input.
    #[arg(long)]
    input_height: Option<u32>,
    #[arg(long, default_value_t = 4)]
    max_batch: usize,
    /// Milliseconds a batch waits to fill.
    #[arg(long, default_value_t = 50)]
    max_wait_ms: u64,
    /// ONNX Runtime threads per inference worker.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The detector's precision in both pipelines: `int8` (what the demo runs) or `float`.
    #[arg(long, default_value = "int8", value_parser = ["int8", "float"])]
    precision: String,
    /// The motion gate in front of inference.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    motion: bool,
    /// The motion gate's `forced_interval` in seconds (default: the service's, 10 s): how
    /// often a still scene is analysed anyway.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    forced_interval: Option<u64>,
    /// `[ingest] receive_coalesce` in milliseconds (default: the service's, 20 ms): how much
    /// of a camera's stream waits in its socket to be read at once; 0 reads every packet.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=200))]
    receive_coalesce: Option<u64>,
    /// `[ingest] keyframe_decoders` (default: the service's, one per core it may run on):
    /// keyframes decoded at once, first come, first served; 0 lets every camera's decoder
    /// run whenever it has a keyframe.
    #[arg(long)]
    keyframe_decoders: Option<usize>,
    /// Each simulated camera's keyframes at their own time in the GOP, as independent
    /// cameras' are; `false`: every camera's keyframe in the same instant, every GOP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stagger_gops: bool,
    /// `retina` or `gstreamer`.
    #[arg(long, default_value = "retina")]
    backend: String,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    #[arg(long, default_value_t = 25)]
    fps: u32,
    #[arg(long, default_value_t = 50)]
    gop: u32,
    /// Sensor noise of the simulated cameras, grey levels (0: clean, cheap delta frames).
    #[arg(long, default_value_t = 6)]
    grain: u8,
    /// Keep going after the first N a pipeline does not hold.
    #[arg(long)]
    all_steps: bool,
    /// Run the service on these CPUs only (`taskset -c`, e.g. `0`) and the load generator
    /// (this harness, the simulator, the broker) on the others, so that sending the
    /// cameras' streams does not take the service's CPU.
    #[arg(long)]
    service_cpus: Option<String>,
    /// The `sharpeyes` binary under test.
    #[arg(long, default_value_os_t = default_binary())]
    binary: PathBuf,
    /// Only re-render the table and plot of an earlier run's `e2e.json`.
    #[arg(long, value_name = "E2E_JSON")]
    replot: Option<PathBuf>,
    /// Instead of the steps: a soak of this many minutes with the first `--cameras` count,
    /// the broker and Redis restarted in turn every third minute and a camera removed and
    /// added back every minute; writes `soak.json` and `soak.txt`.
    #[arg(long, value_name = "MINUTES")]
    soak_minutes: Option<u64>,
    /// Instead of the steps: the first `--cameras` count split across this many nodes of a
    /// cluster (one Redis, the default lease), then `--kills` rounds that SIGKILL the busiest
    /// node and time its cameras' handoff; writes `nodes.json` and `nodes.txt`.
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,
    /// Kills of the `--nodes` run.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Where `e2e.json`, `e2e.svg` and `e2e.txt` go.
    #[arg(long, default_value_os_t = target_dir().join("e2e"))]
    out: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn default_binary() -> PathBuf {
    target_dir().join("release/sharpeyes")
}

fn main() -> ExitCode {
    let a = Args::parse();
    if let Some(path) = &a.replot {
        let run = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<e2e::Run>(&t).map_err(|e| e.to_string()));
        return match run {
            Ok(run) => {
                write_outputs(&a.out, &run, false);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("e2e: {}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut pipelines = Vec::new();
    if a.sharpeyes {
        pipelines.push(Pipeline::Sharpeyes);
    }
    if a.baseline {
        pipelines.push(Pipeline::FullDecode);
    }
    let options = Options {
        cameras: a.cameras,
        pipelines,
        width: a.width,
        height: a.height,
        fps: a.fps,
        gop: a.gop,
        grain: a.grain,
        warmup: Duration::from_secs(a.warmup),
        measure: Duration::from_secs(a.seconds),
        sampling: a.sampling,
        baseline_fps: a.baseline_fps,
        input_size: a.input_size,
        input_height: Some(
            a.input_height
                .unwrap_or((a.input_size * 9 / 16).div_ceil(32) * 32),
        ),
        max_batch: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        threads: a.threads,
        precision: a.precision,
        motion: a.motion,
        forced_interval_s: a.forced_interval,
        receive_coalesce_ms: a.receive_coalesce,
        keyframe_decoders: a.keyframe_decoders,
        stagger_gops: a.stagger_gops,
        backend: a.backend,
        stop_at_first_miss: !a.all_steps,
        clip_cache: Some(target_dir().join("sim-clips")),
        service_cpus: a.service_cpus.clone(),
        ..Options::new(a.binary)
    };
    if let Some(cpus) = &options.service_cpus {
        match e2e::procs::keep_off(cpus) {
            Ok(rest) => println!("e2e: the service on CPUs {cpus}, the load generator on {rest}"),
            Err(e) => {
                eprintln!("e2e: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(minutes) = a.soak_minutes {
        return soak(&options, minutes, &a.out);
    }
    if let Some(nodes) = a.nodes {
        return cluster(&options, nodes, a.kills, &a.out);
    }
    println!(
        "e2e: {:?} cameras at {}x{} {} fps GOP {}, {} s per step after {} s warm-up; pipelines {:?}",
        options.cameras,
        options.width,
        options.height,
        options.fps,
        options.gop,
        a.seconds,
        a.warmup,
        options
            .pipelines
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
    );
    let run = match e2e::run(&options, |s| {
        println!(
            "  {} N={}: {:.1}% of a core per camera, p99 {}, {}",
            s.pipeline.as_str(),
            s.cameras,
            s.cores_per_camera * 100.0,
            s.latency.p99.map_or("-".into(), |v| format!("{v:.2} s")),
            if s.held {
                "held".to_owned()
            } else {
                format!("not held: {}", s.reasons.join("; "))
            }
        );
    }) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("e2e: {e}");
            return ExitCode::FAILURE;
        }
    };
    write_outputs(&a.out, &run, true);
    ExitCode::SUCCESS
}

/// Runs the soak with the first camera count and writes its report.
fn soak(options: &Options, minutes: u64, out: &std::path::Path) -> ExitCode {
    let cameras = options.cameras.first().copied().unwrap_or(32);
    println!(
        "soak: {cameras} cameras at {}x{} {} fps GOP {} for {minutes} minutes, with faults and churn",
        options.width, options.height, options.fps, options.gop
    );
    let soak = match e2e::soak::run(options, cameras, minutes, |s| {
        println!(
            "  minute {}: RSS {:.1} MiB, {} fds, {} queued, {} received, {}",
            s.minute,
            s.rss_mib,
            s.fds,
            s.alerts_queued,
            s.alerts_received,
            s.events.join(", ")
        );
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = e2e::soak::report(&soak);
    println!("\n{text}");
    let written = std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(out.join("soak.txt"), &text))
        .and_then(|()| {
            std::fs::write(
                out.join("soak.json"),
                serde_json::to_string_pretty(&soak).unwrap_or_default(),
            )
        });
    match written {
        Ok(()) => println!("wrote {}", out.join("soak.txt").display()),
        Err(e) => eprintln!("soak: {}: {e}", out.display()),
    }
    ExitCode::SUCCESS
}

/// Runs the cluster with the first camera count and writes its report.
fn cluster(options: &Options, nodes: usize, kills: usize, out: &std::path::Path) -> ExitCode {
    let cameras = options.cameras.first().copied().unwrap_or(24);
    println!(
        "nodes: {cameras} cameras at {}x{} {} fps GOP {} on {nodes} nodes, {kills} kills",
        options.width, options.height, options.fps, options.gop
    );
    let run = match e2e::nodes::run(options, nodes, cameras, kills, |k| {
        println!(
            "  kill {}: {} ran {} cameras; {} streamed elsewhere, the last after {:.1} s; settled again {:.1} s after its restart",
            k.round,
            k.node,
            k.handoffs.len() + k.lost,
            k.handoffs.len(),
            k.handoffs.iter().copied().fold(0.0, f64::max),
            k.rejoin_s
        );
    }) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("nodes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = e2e::nodes::report(&run);
    println!("\n{text}");
    let written = std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(out.join("nodes.txt"), &text))
        .and_then(|()| {
            std::fs::write(
                out.join("nodes.json"),
                serde_json::to_string_pretty(&run).unwrap_or_default(),
            )
        });
    match written {
        Ok(()) => println!("wrote {}", out.join("nodes.txt").display()),
        Err(e) => eprintln!("nodes: {}: {e}", out.display()),
    }
    ExitCode::SUCCESS
}

/// Prints the table and summary, and writes them with the plot (and the JSON when `json`).
fn write_outputs(out: &std::path::Path, run: &e2e::Run, json: bool) {
    let table = report::table(run) + "\n" + &report::stage_table(run);
    let summary = report::summary(run);
    println!("\n{table}\n{summary}");
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        match std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, text)) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => eprintln!("e2e: {}: {e}", path.display()),
        }
    };
    if json {
        match serde_json::to_string_pretty(run) {
            Ok(text) => write("e2e.json", &text),
            Err(e) => eprintln!("e2e: JSON: {e}"),
        }
    }
    write("e2e.svg", &report::svg(run));
    write("e2e.txt", &format!("{table}\n{summary}"));
}
