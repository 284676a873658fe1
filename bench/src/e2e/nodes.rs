//! The cluster run (`--nodes N`): simulated cameras split across N `sharpeyes run`
//! processes on one real redis-server and mosquitto (`[cluster]` with its default 10 s
//! lease), then kills: each round the busiest node is SIGKILLed, and the harness times how
//! long each of its cameras takes to stream again on a survivor (the lease, a step, the RTSP
//! connection and the first keyframe: target 20 s at a 2 s GOP). The node is started again
//! and the cluster left to settle (it takes its share back through planned handoffs) before
//! the next round. On one machine the nodes share its cores: this measures coordination and
//! handoff, not how capacity grows with machines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use sharpeyes_ingest::{Simulator, SimulatorConfig};
use sharpeyes_testkit::config::{GRIDS, fire_camera};
use sharpeyes_testkit::http::get_as;
use sharpeyes_testkit::{Mosquitto, Redis};

use super::{Options, camera_id, percentile, procs};

const PREFIX: &str = "nodes";
const TOKEN: &str = "nodes-admin-token";
/// The default lease, which the target assumes.
const LEASE_S: f64 = 10.0;
/// A killed node's cameras stream again within this, at the default lease and a 2 s GOP.
const TARGET_S: f64 = 20.0;
/// How long the cameras get to settle on the nodes (at the start, after a rejoin).
const SETTLE: Duration = Duration::from_secs(120);
/// How long a killed node's cameras get to stream elsewhere before they count as lost.
const TAKEOVER: Duration = Duration::from_secs(60);
/// How long the settled cluster is watched for what each part costs.
const STEADY: Duration = Duration::from_secs(30);

/// The settled cluster over [`STEADY`], every camera streaming and nothing moving: what the
/// nodes cost together, and what the one shared part, Redis, costs per camera. Redis is
/// where a cluster of many machines bends first, so its share per camera says how far
/// it scales.
#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    pub seconds: f64,
    /// CPU of all the nodes together, in cores.
    pub nodes_cores: f64,
    /// CPU of redis-server, in cores.
    pub redis_cores: f64,
    /// Commands Redis processed a second (the harness' own two INFO calls included).
    pub redis_commands_per_s: f64,
    /// By command (`evalsha`, `set`, ...): calls a second and Redis' microseconds a second
    /// in it, the busiest first.
    pub redis_by_command: Vec<(String, f64, f64)>,
}

/// What Redis' `INFO` says: CPU seconds, commands processed, and calls and microseconds by
/// command (`cmdstat_get:calls=3,usec=12,...`).
struct RedisInfo {
    cpu: f64,
    commands: f64,
    by_command: BTreeMap<String, (f64, f64)>,
}

/// Redis' counters so far, from `INFO all`.
fn redis_counters(port: u16) -> Result<RedisInfo, String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "all"])
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .ok_or_else(|| format!("Redis INFO has no {name}"))
    };
    let by_command = text
        .lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let stat = |key: &str| -> Option<f64> {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            };
            Some((name.to_owned(), (stat("calls")?, stat("usec")?)))
        })
        .collect();
    Ok(RedisInfo {
        cpu: field("used_cpu_user")? + field("used_cpu_sys")?,
        commands: field("total_commands_processed")?,
        by_command,
    })
}

/// Watches the settled cluster for [`STEADY`].
fn steady(nodes: &[Node], redis: u16) -> Result<Steady, String> {
    let cpu = || -> f64 {
        nodes
            .iter()
            .filter_map(|n| n.process.as_ref())
            .filter_map(|p| procs::cpu_seconds(&p.pid().to_string()))
            .sum()
    };
    let (nodes0, redis0, started) = (cpu(), redis_counters(redis)?, Instant::now());
    std::thread::sleep(STEADY);
    let (nodes1, redis1) = (cpu(), redis_counters(redis)?);
    let seconds = started.elapsed().as_secs_f64();
    let mut by_command: Vec<(String, f64, f64)> = redis1
        .by_command
        .iter()
        .map(|(name, (calls, usec))| {
            let (calls0, usec0) = redis0.by_command.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                (calls - calls0) / seconds,
                (usec - usec0) / seconds,
            )
        })
        .filter(|(_, calls, _)| *calls > 0.0)
        .collect();
    by_command.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(Steady {
        seconds,
        nodes_cores: (nodes1 - nodes0) / seconds,
        redis_cores: (redis1.cpu - redis0.cpu) / seconds,
        redis_commands_per_s: (redis1.commands - redis0.commands) / seconds,
        redis_by_command: by_command,
    })
}

/// One kill.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    pub round: usize,
    pub node: String,
    /// Seconds from the kill until each of its cameras streamed on a survivor.
    pub handoffs: Vec<f64>,
    /// Its cameras that did not stream elsewhere within [`TAKEOVER`].
    pub lost: usize,
    /// Seconds from starting it again (the process listening) until every camera streamed
    /// on exactly one node and it had its share back.
    pub rejoin_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Nodes {
    pub nodes: usize,
    pub cameras: usize,
    pub gop_s: f64,
    /// Seconds from the last node listening until every camera streamed on exactly one node
    /// and every node had its share.
    pub settle_s: f64,
    /// Cameras per node once settled, by node.
    pub shares: BTreeMap<String, usize>,
    pub steady: Steady,
    pub kills: Vec<Kill>,
}

struct Node {
    id: String,
    config: PathBuf,
    log: PathBuf,
    process: Option<procs::Process>,
    http: u16,
}

impl Node {
    fn start(&mut self, binary: &Path) -> Result<(), String> {
        let (process, http) = procs::start_service_as(
            binary,
            &self.config,
            &self.log,
            &[("SHARPEYES_NODE_ID", &self.id)],
            None,
        )?;
        (self.process, self.http) = (Some(process), http);
        Ok(())
    }

    fn kill(&mut self) {
        // Dropping kills with SIGKILL and reaps it.
        self.process = None;
    }

    /// The cameras this node itself says are streaming here now.
    fn streaming(&self) -> BTreeSet<String> {
        if self.process.is_none() {
            return BTreeSet::new();
        }
        let (status, body) = get_as(self.http, "/api/cameras", TOKEN);
        if status != 200 {
            return BTreeSet::new();
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|c| c["node"] == self.id.as_str() && c["state"] == "streaming")
            .filter_map(|c| Some(c["id"].as_str()?.to_owned()))
            .collect()
    }
}

fn config(
    options: &Options,
    cameras: usize,
    dir: &Path,
    broker: u16,
    redis: u16,
    sim: &Simulator,
) -> String {
    let fire = super::tuned_fire(options, "1m");
    let mut out = format!(
        r#"[node]
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
prefix = "{PREFIX}"

[redis]
url = "redis://127.0.0.1:{redis}/0"
key_prefix = "{PREFIX}"

[cluster]
capacity = {cameras}

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

/// Camera -> the nodes streaming it.
fn placement(nodes: &[Node]) -> BTreeMap<String, Vec<String>> {
    let mut on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in nodes {
        for camera in node.streaming() {
            on.entry(camera).or_default().push(node.id.clone());
        }
    }
    on
}

/// Waits until every camera streams on exactly one node, every live node streams some (a
/// node just started has taken its share), and that placement held for two coordination
/// steps; the time until it was first seen.
fn settle(nodes: &[Node], cameras: usize) -> Result<Duration, String> {
    const STABLE: Duration = Duration::from_secs(7);
    let start = Instant::now();
    let mut since: Option<(Duration, BTreeMap<String, Vec<String>>)> = None;
    loop {
        let on = placement(nodes);
        let live = nodes.iter().filter(|n| n.process.is_some()).count();
        let holders: BTreeSet<&String> = on.values().flatten().collect();
        let settled =
            on.len() == cameras && on.values().all(|n| n.len() == 1) && holders.len() == live;
        match (&since, settled) {
            (Some((first, seen)), true) if *seen == on => {
                if start.elapsed() - *first > STABLE {
                    return Ok(*first);
                }
            }
            (_, true) => since = Some((start.elapsed(), on.clone())),
            (_, false) => since = None,
        }
        if start.elapsed() > SETTLE {
            let twice: Vec<_> = on.iter().filter(|(_, n)| n.len() > 1).collect();
            return Err(format!(
                "not settled after {SETTLE:?}: {} of {cameras} cameras streaming on {} of {live} nodes; on two nodes: {twice:?}",
                on.len(),
                holders.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `nodes` nodes with `cameras` cameras and `kills` kills; `progress` sees each kill.
pub fn run(
    options: &Options,
    nodes: usize,
    cameras: usize,
    kills: usize,
    mut progress: impl FnMut(&Kill),
) -> Result<Nodes, String> {
    if nodes < 2 {
        return Err("--nodes needs at least 2: a killed node's cameras need a survivor".into());
    }
    let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
    let broker = Mosquitto::start(false, &[]);
    let redis = Redis::start(None);
    let sim = Simulator::start(SimulatorConfig {
        cameras,
        width: options.width,
        height: options.height,
        fps: options.fps,
        gop: options.gop,
        grain: options.grain,
        port: 0,
        cache_dir: options.clip_cache.clone(),
        stagger_gops: options.stagger_gops,
        ..SimulatorConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut cluster: Vec<Node> = Vec::new();
    for i in 1..=nodes {
        let home = dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let path = home.join("node.toml");
        let text = config(options, cameras, &home, broker.port, redis.port, &sim);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        cluster.push(Node {
            id: format!("node-{i}"),
            config: path,
            log: home.join("service.log"),
            process: None,
            http: 0,
        });
    }
    for node in &mut cluster {
        node.start(&options.binary)?;
    }
    let settle_s = settle(&cluster, cameras)?.as_secs_f64();
    let shares = cluster
        .iter()
        .map(|n| (n.id.clone(), n.streaming().len()))
        .collect();
    let steady = steady(&cluster, redis.port)?;

    let mut done = Vec::new();
    for round in 1..=kills {
        let busiest = (0..cluster.len())
            .max_by_key(|&i| cluster[i].streaming().len())
            .unwrap_or(0);
        let moved = cluster[busiest].streaming();
        let killed = Instant::now();
        cluster[busiest].kill();
        let mut handoffs: BTreeMap<String, f64> = BTreeMap::new();
        while handoffs.len() < moved.len() && killed.elapsed() < TAKEOVER {
            for camera in placement(&cluster).into_keys() {
                if moved.contains(&camera) && !handoffs.contains_key(&camera) {
                    handoffs.insert(camera, killed.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let lost = moved.len() - handoffs.len();
        cluster[busiest].start(&options.binary)?;
        let rejoined = settle(&cluster, cameras)?;
        let kill = Kill {
            round,
            node: cluster[busiest].id.clone(),
            handoffs: handoffs.into_values().collect(),
            lost,
            rejoin_s: rejoined.as_secs_f64(),
        };
        progress(&kill);
        done.push(kill);
    }
    // The nodes first: a simulator stopped under clients that reconnect at once is not
    // what this measures.
    drop(cluster);
    sim.stop();
    Ok(Nodes {
        nodes,
        cameras,
        gop_s: f64::from(options.gop) / f64::from(options.fps.max(1)),
        settle_s,
        shares,
        steady,
        kills: done,
    })
}

/// The run as text: the shares, each kill, and the handoff distribution over every camera
/// of every kill against the target.
pub fn report(run: &Nodes) -> String {
    let mut out = format!(
        "cluster: {} cameras on {} nodes, lease {LEASE_S} s, GOP {:.1} s; settled in {:.1} s, shares {:?}\n\n",
        run.cameras, run.nodes, run.gop_s, run.settle_s, run.shares
    );
    let st = &run.steady;
    let per_camera = |v: f64| v / run.cameras.max(1) as f64;
    out += &format!(
        "settled, {:.0} s: the nodes {:.2} cores ({:.2}% of a core per camera); Redis {:.4} cores ({:.4}% per camera), {:.0} commands/s ({:.2} per camera)\n\n",
        st.seconds,
        st.nodes_cores,
        per_camera(st.nodes_cores) * 100.0,
        st.redis_cores,
        per_camera(st.redis_cores) * 100.0,
        st.redis_commands_per_s,
        per_camera(st.redis_commands_per_s),
    );
    if !st.redis_by_command.is_empty() {
        let busiest: Vec<String> = st
            .redis_by_command
            .iter()
            .take(6)
            .map(|(name, calls, usec)| format!("{name} {calls:.1}/s {usec:.0} us/s"))
            .collect();
        out += &format!("Redis by command: {}\n\n", busiest.join(", "));
    }
    out += "| kill | node | cameras | handoff p50 | max | lost | settled again |\n|---|---|---|---|---|---|---|\n";
    let mut all = Vec::new();
    for k in &run.kills {
        let mut sorted = k.handoffs.clone();
        sorted.sort_by(f64::total_cmp);
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} s |\n",
            k.round,
            k.node,
            k.handoffs.len() + k.lost,
            percentile(&sorted, 0.50).map_or("-".into(), |v| format!("{v:.1} s")),
            sorted.last().map_or("-".into(), |v| format!("{v:.1} s")),
            k.lost,
            k.rejoin_s
        );
        all.extend(sorted);
    }
    all.sort_by(f64::total_cmp);
    let lost: usize = run.kills.iter().map(|k| k.lost).sum();
    let at = |p: f64| percentile(&all, p).map_or("-".into(), |v| format!("{v:.1} s"));
    let over = all.iter().filter(|&&v| v > TARGET_S).count();
    out += &format!(
        "\nhandoffs after a kill, over {} cameras of {} kills: p50 {}, p90 {}, p99 {}, max {}; {over} over the {TARGET_S} s target, {lost} never streamed elsewhere within {} s\n",
        all.len(),
        run.kills.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        all.last().map_or("-".into(), |v| format!("{v:.1} s")),
        TAKEOVER.as_secs(),
    );
    out
}
