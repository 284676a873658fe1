//! The soak: N simulated cameras through the real service for many minutes, with the broker
//! and Redis restarted in turn and a camera added over the API every minute and
//! removed the next. It reports what a leak or a lost alert would show: the service's memory and file
//! descriptors at the start and the end, task panics and restarts, and every alert the
//! service queued against what a persistent QoS 1 subscriber received.

use std::time::{Duration, Instant};

use serde::Serialize;
use sharpeyes_ingest::{Simulator, SimulatorConfig};
use sharpeyes_testkit::config::{GRIDS, fire_camera};
use sharpeyes_testkit::http::{delete, post};
use sharpeyes_testkit::{Mosquitto, Redis};

use super::{Options, alerts, camera_id, procs, scrape};

const PREFIX: &str = "soak";
const TOKEN: &str = "soak-admin-token";
/// How long each broker or Redis outage lasts.
const OUTAGE: Duration = Duration::from_secs(20);
/// How long the end waits for the outbox to drain once the faults stop.
const DRAIN: Duration = Duration::from_secs(90);

/// One sample a minute.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub minute: u64,
    pub rss_mib: f64,
    pub fds: usize,
    pub alerts_queued: f64,
    pub alerts_received: usize,
    pub outbox_depth: f64,
    pub panics: f64,
    pub restarts: f64,
    /// What happened in this minute: `broker down 20 s`, `redis down 20 s`, `churn camN`.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub cameras: usize,
    pub minutes: u64,
    pub samples: Vec<Sample>,
    /// Distinct alert ids the subscriber received, and how many arrived more than once.
    pub received: usize,
    pub duplicates: usize,
    /// Alerts the service queued (`sharpeyes_alerts_total`) and refused (outbox full).
    pub queued: f64,
    pub refused: f64,
    /// Queued minus received, once the outbox drained (or [`DRAIN`] passed).
    pub missing: f64,
    pub service_alive: bool,
}

/// The service's configuration: Redis state, a token for the churn, fire cooling down after a
/// minute so that every camera alerts about once a minute.
fn config(
    options: &Options,
    cameras: usize,
    dir: &std::path::Path,
    broker: u16,
    redis: u16,
    sim: &Simulator,
) -> String {
    let fire = super::tuned_fire(options, "1m");
    let mut out = format!(
        r#"[node]
id = "soak-node"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
prefix = "{PREFIX}"

[redis]
url = "redis://127.0.0.1:{redis}/0"
key_prefix = "{PREFIX}"

[http]
listen = "127.0.0.1:0"
token = "{TOKEN}"

{GRIDS}{fire}"#,
        data = dir.join("data").display(),
    );
    for n in 1..=cameras {
        out.push_str(&fire_camera(&camera_id(n), &sim.url(n)));
    }
    out
}

fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Runs the soak for `minutes` with `cameras` cameras; `progress` sees each minute's sample.
pub fn run(
    options: &Options,
    cameras: usize,
    minutes: u64,
    mut progress: impl FnMut(&Sample),
) -> Result<Soak, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
    let mut broker = Mosquitto::start(true, &[]);
    let mut redis = Redis::start(None);
    let subscriber =
        alerts::Subscriber::start_persistent(broker.port, &format!("{PREFIX}/alerts/#"))?;
    let sim = Simulator::start(SimulatorConfig {
        cameras,
        width: options.width,
        height: options.height,
        fps: options.fps,
        gop: options.gop,
        grain: options.grain,
        port: 0,
        scenario: (1..=cameras)
            .map(|n| format!("fire@0s:cam{n}").parse().expect("a scene"))
            .collect(),
        cache_dir: options.clip_cache.clone(),
        stagger_gops: options.stagger_gops,
        ..SimulatorConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let config_path = dir.path().join("soak.toml");
    let text = config(options, cameras, dir.path(), broker.port, redis.port, &sim);
    std::fs::write(&config_path, &text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let log = dir.path().join("service.log");
    let (mut service, http) = procs::start_service(
        &options.binary,
        &config_path,
        &log,
        options.service_cpus.as_deref(),
    )?;
    let pid = service.pid().to_string();
    let started = Instant::now();
    let at = |secs: u64| started + Duration::from_secs(secs);

    let mut samples = Vec::new();
    for minute in 0..minutes {
        let mut events = Vec::new();
        let base = minute * 60;
        super::sleep_until(at(base + 5));
        // A fault every third minute, the broker and Redis in turn, from minute 2.
        if minute >= 2 && minute % 3 == 2 {
            let redis_turn = (minute / 3) % 2 == 1;
            if redis_turn {
                redis.stop();
            } else {
                broker.stop();
            }
            super::sleep_until(at(base + 5) + OUTAGE);
            if redis_turn {
                redis.start_again();
                events.push(format!("redis down {} s", OUTAGE.as_secs()));
            } else {
                broker.start_again();
                events.push(format!("broker down {} s", OUTAGE.as_secs()));
            }
        }
        // Churn: the camera added over the API a minute ago is removed, and another added
        // (a second client of one of the simulator's streams).
        super::sleep_until(at(base + 35));
        if minute > 0 {
            let old = camera_id(1000 + minute as usize - 1);
            let (status, body) = delete(http, &format!("/api/cameras/{old}"), Some(TOKEN));
            if status != 200 {
                events.push(format!(
                    "removing {old} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        let n = (minute as usize % cameras) + 1;
        let id = camera_id(1000 + minute as usize);
        let entry = fire_camera(&id, &sim.url(n));
        let entry = entry
            .trim_start()
            .trim_start_matches("[[cameras]]")
            .trim_start();
        let (status, body) = post(http, "/api/cameras", Some(TOKEN), entry);
        events.push(if status == 200 {
            format!("churn: {id} on cam{n}")
        } else {
            format!(
                "adding {id} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )
        });
        super::sleep_until(at(base + 58));
        let s = scrape(http).unwrap_or_default();
        let sample = Sample {
            minute: minute + 1,
            rss_mib: procs::memory_mib(&pid).map_or(f64::NAN, |m| m.0),
            fds: open_fds(&pid),
            alerts_queued: s.sum("sharpeyes_alerts_total", &[]),
            alerts_received: subscriber.distinct_ids(),
            outbox_depth: s.sum("sharpeyes_outbox_depth", &[]),
            // `+ 0.0`: an empty sum is -0.0.
            panics: s.sum("sharpeyes_task_panics_total", &[]) + 0.0,
            restarts: s.sum("sharpeyes_task_restarts_total", &[]) + 0.0,
            events,
        };
        progress(&sample);
        samples.push(sample);
        if !service.alive() {
            break;
        }
    }

    // The faults stop: everything queued must arrive.
    let deadline = Instant::now() + DRAIN;
    let (mut queued, mut refused) = (0.0, 0.0);
    loop {
        if let Ok(s) = scrape(http) {
            queued = s.sum("sharpeyes_alerts_total", &[]);
            refused = s.sum("sharpeyes_alerts_refused_total", &[]) + 0.0;
            if s.sum("sharpeyes_outbox_depth", &[]) == 0.0
                && subscriber.distinct_ids() as f64 >= queued
            {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let service_alive = service.alive();
    sim.stop();
    drop(service);
    let ids = subscriber.stop_ids();
    let received = ids.len();
    let duplicates = ids.values().filter(|&&n| n > 1).count();
    Ok(Soak {
        cameras,
        minutes,
        samples,
        received,
        duplicates,
        queued,
        refused,
        missing: (queued - received as f64).max(0.0),
        service_alive,
    })
}

/// The soak as a table and a summary.
pub fn report(soak: &Soak) -> String {
    let mut out =
        String::from("minute  RSS MiB  fds  queued  received  outbox  panics  restarts  events\n");
    for s in &soak.samples {
        out += &format!(
            "{:>6}  {:>7.1}  {:>3}  {:>6}  {:>8}  {:>6}  {:>6}  {:>8}  {}\n",
            s.minute,
            s.rss_mib,
            s.fds,
            s.alerts_queued,
            s.alerts_received,
            s.outbox_depth,
            s.panics,
            s.restarts,
            s.events.join(", ")
        );
    }
    let first = soak
        .samples
        .iter()
        .find(|s| s.minute >= 2)
        .or(soak.samples.first());
    if let (Some(a), Some(b)) = (first, soak.samples.last()) {
        out += &format!(
            "\n{} cameras, {} minutes: RSS {:.1} MiB at minute {} -> {:.1} MiB at the end ({:+.1}%); fds {} -> {}\n",
            soak.cameras,
            soak.minutes,
            a.rss_mib,
            a.minute,
            b.rss_mib,
            (b.rss_mib / a.rss_mib - 1.0) * 100.0,
            a.fds,
            b.fds
        );
    }
    out += &format!(
        "alerts: {} queued, {} received (distinct ids), {} duplicated, {} missing, {} refused; service {}\n",
        soak.queued,
        soak.received,
        soak.duplicates,
        soak.missing,
        soak.refused,
        if soak.service_alive { "alive" } else { "DIED" }
    );
    out
}
