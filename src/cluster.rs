//! This node as one of a cluster (`[cluster]`): every third of the lease it steps its
//! [`Coordinator`] (heartbeat with what it runs, live members, leases of the cameras the
//! hash gives it) and runs exactly the cameras it holds. A failed step is retried at once;
//! cut off from Redis until less than a third of the lease is left, it stops every camera
//! before its lease expires, so no camera is analysed by two nodes at once. At a clean stop
//! it releases every lease and leaves, and the others take its cameras at their next step.
//! After each step it hands the cameras changed over any node's API to the control loop,
//! and adopts the outboxes of nodes that left the membership without emptying them, so a
//! dead node's unsent alerts go out from a survivor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts};
use sharpeyes_alerts::{RedisConnection, RedisStore};
use sharpeyes_cluster::{Coordinator, Member, Registry, Report, Step};
use sharpeyes_config::{Cluster, Config};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cameras::Cameras;
use crate::status::{CameraBoard, CameraView, Handoff};

/// What `GET /api/cluster` shows: this node, and every live member with what it said it
/// runs at its last heartbeat (a step old at most).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterState {
    pub node: Member,
    pub lease_ms: u64,
    /// Whether the last step reached Redis; while not, this node runs nothing once its
    /// leases could have expired.
    pub coordinated: bool,
    /// Cameras whose lease this node holds and runs.
    pub cameras: BTreeSet<String>,
    pub nodes: Vec<NodeView>,
    /// Configured cameras no live member said it runs (none once the cluster has settled).
    pub unassigned: Vec<String>,
    /// The configured cameras not running here, for `/api/cameras`: with the node that runs
    /// each and the state it last reported, or `unassigned`.
    #[serde(skip)]
    pub elsewhere: Vec<CameraView>,
}

/// A live member in [`ClusterState`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    pub id: String,
    pub capacity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub cameras: Vec<String>,
    pub sensors: Vec<String>,
    /// When it last said so (RFC 3339, by its clock); none before its report was read.
    pub last_seen: Option<String>,
    /// Its cameras' states, for `/api/cameras`.
    #[serde(skip)]
    pub states: BTreeMap<String, String>,
}

/// The latest [`ClusterState`]; `None` when this node is not in a cluster. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    state: Arc<Mutex<Option<ClusterState>>>,
    /// When the other members' reports were last asked for.
    asked: Arc<Mutex<Option<Instant>>>,
}

/// How long after the last question the members' reports are still read at every step.
const REPORTS_WANTED: Duration = Duration::from_secs(60);

impl ClusterView {
    /// The state, with the other members' reports as of the last step that read them.
    pub fn get(&self) -> Option<ClusterState> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// [`ClusterView::get`] for someone who wants the whole cluster (`/api/cluster`,
    /// `/api/cameras`): the steps read every member's report for the next minute. After a
    /// quiet minute the first answer can be a step old.
    pub fn ask(&self) -> Option<ClusterState> {
        *self.asked.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.get()
    }

    fn wanted(&self) -> bool {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < REPORTS_WANTED)
    }

    fn set(&self, state: ClusterState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }
}

/// The sensors this node handles: in a cluster, those whose covering cameras the hash gives
/// it (or, for a sensor no camera covers, the sensor itself); `None`: every sensor. Every
/// node hears every reading and keeps every sensor's state, so a sensor that moves here has
/// its history, but only the node that handles it raises its alarms. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SensorsHere(Arc<RwLock<Option<BTreeSet<String>>>>);

impl SensorsHere {
    /// Handles none until told otherwise (a node joining a cluster).
    pub fn none() -> Self {
        Self(Arc::new(RwLock::new(Some(BTreeSet::new()))))
    }

    pub fn handles(&self, sensor: &str) -> bool {
        let here = self.0.read().unwrap_or_else(PoisonError::into_inner);
        here.as_ref().is_none_or(|s| s.contains(sensor))
    }

    fn set(&self, sensors: BTreeSet<String>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(sensors);
    }

    fn list(&self) -> BTreeSet<String> {
        let here = self.0.read().unwrap_or_else(PoisonError::into_inner);
        here.clone().unwrap_or_default()
    }
}

/// What the cluster assigns: every camera with its assignment key, and every sensor's key.
/// Cameras that share a sensor (directly or through a chain of sensors) share a key, the
/// least camera id among them, so they go to one node and fusion sees them all; a sensor no
/// camera covers is its own key.
pub fn assignment(
    cameras: &[String],
    config: &Config,
) -> (Vec<(String, String)>, BTreeMap<String, String>) {
    fn root<'a>(key: &BTreeMap<&'a str, &'a str>, mut c: &'a str) -> &'a str {
        while let Some(&parent) = key.get(c).filter(|&&p| p != c) {
            c = parent;
        }
        c
    }
    let mut key: BTreeMap<&str, &str> = cameras.iter().map(|c| (c.as_str(), c.as_str())).collect();
    for sensor in &config.sensors {
        let covering: Vec<&str> = sensor
            .cameras
            .iter()
            .map(String::as_str)
            .filter(|c| key.contains_key(c))
            .collect();
        for pair in covering.windows(2) {
            let (a, b) = (root(&key, pair[0]), root(&key, pair[1]));
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            key.insert(high, low);
        }
    }
    let cameras: Vec<(String, String)> = cameras
        .iter()
        .map(|c| (c.clone(), root(&key, c).to_owned()))
        .collect();
    let sensors = config
        .sensors
        .iter()
        .map(|s| {
            let k = s
                .cameras
                .iter()
                .find(|c| key.contains_key(c.as_str()))
                .map_or(s.id.as_str(), |c| root(&key, c));
            (s.id.clone(), k.to_owned())
        })
        .collect();
    (cameras, sensors)
}

/// `sharpeyes_cluster_*`.
#[derive(Clone)]
pub struct ClusterMetrics {
    nodes: IntGauge,
    unassigned: IntGauge,
    cameras: IntGaugeVec,
    handed_over: IntCounter,
    lost: IntCounter,
    cut_off: IntCounter,
    handoff: Histogram,
}

impl ClusterMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            nodes: IntGauge::new(
                "sharpeyes_cluster_nodes",
                "Live members of the cluster as this node last saw them.",
            )?,
            unassigned: IntGauge::new(
                "sharpeyes_cluster_unassigned_cameras",
                "Cameras no live member has room for (each holds at most its [cluster] capacity): the cluster needs more nodes.",
            )?,
            cameras: IntGaugeVec::new(
                Opts::new(
                    "sharpeyes_cluster_cameras",
                    "Cameras a node runs: this node's own, and every live member's as it last said while someone asks for the cluster (/api/cluster, /api/cameras).",
                ),
                &["node"],
            )?,
            handed_over: IntCounter::new(
                "sharpeyes_cluster_handed_over_total",
                "Cameras this node stopped and released because the assignment moved them to another node.",
            )?,
            lost: IntCounter::new(
                "sharpeyes_lease_lost_total",
                "Leases this node held but found expired or taken by another node at a renewal (it was cut off or frozen past the lease); each such camera is stopped here.",
            )?,
            cut_off: IntCounter::new(
                "sharpeyes_cluster_steps_failed_total",
                "Coordination steps that did not reach Redis in time.",
            )?,
            handoff: Histogram::with_opts(
                HistogramOpts::new(
                    "sharpeyes_camera_handoff_seconds",
                    "Cameras taken over here: from their last holder's last renewal or release (by Redis' clock) to streaming here.",
                )
                .buckets(vec![0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0]),
            )?,
        };
        registry.register(Box::new(metrics.nodes.clone()))?;
        registry.register(Box::new(metrics.unassigned.clone()))?;
        registry.register(Box::new(metrics.cameras.clone()))?;
        registry.register(Box::new(metrics.handed_over.clone()))?;
        registry.register(Box::new(metrics.lost.clone()))?;
        registry.register(Box::new(metrics.cut_off.clone()))?;
        registry.register(Box::new(metrics.handoff.clone()))?;
        Ok(metrics)
    }
}

/// What the coordinating task needs; see the module docs.
pub(crate) struct Coordination {
    pub cameras: Arc<Cameras>,
    /// The cameras' states, which the heartbeat reports.
    pub board: CameraBoard,
    /// For the outboxes of dead nodes, which this node may adopt.
    pub alerts: sharpeyes_alerts::Alerts,
    /// Where the cameras changed over the API of any node go, when they change.
    pub control: mpsc::Sender<crate::reload::Control>,
    pub sensors: SensorsHere,
    pub view: ClusterView,
    pub metrics: ClusterMetrics,
    /// Turns true when intake stops: no more steps.
    pub stop: watch::Receiver<bool>,
    /// Turns true once every camera has stopped: release and leave.
    pub leave: watch::Receiver<bool>,
    /// With `[gb28181]`: whether this node is the device on the county platform, leased
    /// like a camera under [`PLATFORM_KEY`].
    pub platform: Option<crate::gb28181::Role>,
}

/// The lease of the GB/T 28181 device: one node at a time registers its id.
pub const PLATFORM_KEY: &str = "~gb28181-device";

/// Starts coordinating when `[cluster]` is on (it needs `[redis]`, checked with the file).
pub(crate) fn start(config: &Config, parts: Coordination) -> Option<JoinHandle<()>> {
    let (cluster, redis) = (config.cluster()?.clone(), config.redis.clone()?);
    let me = Member {
        id: config.node.id.clone(),
        capacity: cluster.capacity(),
        zone: cluster.zone.clone(),
    };
    let coordinator = Coordinator::new(&prefix(&redis), me, cluster.lease);
    // In a cluster from the start: before the first step the view says so, not coordinated.
    parts.view.set(ClusterState {
        node: coordinator.me().clone(),
        lease_ms: u64::try_from(cluster.lease.as_millis()).unwrap_or(u64::MAX),
        coordinated: false,
        cameras: BTreeSet::new(),
        nodes: Vec::new(),
        unassigned: Vec::new(),
        elsewhere: Vec::new(),
    });
    Some(tokio::spawn(coordinate(cluster, redis, coordinator, parts)))
}

async fn coordinate(
    cluster: Cluster,
    redis: sharpeyes_config::Redis,
    mut coordinator: Coordinator,
    mut parts: Coordination,
) {
    let lease = cluster.lease;
    // Renewed every third of the lease. A step gets a third of that; a failed one is tried
    // again as soon, so a blip costs nothing while the leases have time left.
    let period = lease / 3;
    let attempt = period / 3;
    let mut conn: Option<RedisConnection> = None;
    // When the last successful step started: its renewals happened after this.
    let mut last_ok: Option<Instant> = None;
    let mut members: Vec<Member> = Vec::new();
    let mut reports: BTreeMap<String, Report> = BTreeMap::new();
    let mut failing = false;
    let mut adopting: Option<JoinHandle<()>> = None;
    let registry = Registry::new(&prefix(&redis));
    let mut api_version = 0;
    let mut next = tokio::time::Instant::now();
    tracing::info!(node = %coordinator.me().id, capacity = coordinator.me().capacity, lease = ?lease, "joining the cluster");
    loop {
        tokio::select! {
            _ = crate::stopped(&mut parts.stop) => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let configured = parts.cameras.configured();
        let ids: Vec<String> = configured.iter().map(|c| c.id.clone()).collect();
        let (mut cameras, sensor_keys) = assignment(&ids, parts.cameras.config());
        if parts.platform.is_some() {
            cameras.push((PLATFORM_KEY.to_owned(), PLATFORM_KEY.to_owned()));
        }
        let result = step(&redis, &mut conn, &mut coordinator, &cameras, attempt).await;
        let coordinated = match result {
            Ok(mut step) => {
                if let Some(role) = &parts.platform {
                    // Not a camera: the device plays while its lease is held here.
                    step.taken_over.remove(PLATFORM_KEY);
                    role.set(step.run.remove(PLATFORM_KEY));
                }
                if failing {
                    tracing::info!("Redis answers again: coordinating");
                    failing = false;
                }
                last_ok = Some(started);
                next = tokio::time::Instant::from_std(started) + period;
                members = step.members.clone();
                let me = &coordinator.me().id;
                parts.sensors.set(
                    sensor_keys
                        .into_iter()
                        .filter(|(_, key)| coordinator.owner(key) == Some(me.as_str()))
                        .map(|(sensor, _)| sensor)
                        .collect(),
                );
                let hand_over = apply(&parts, step, started).await;
                show(&parts, &coordinator, &members, &reports, true, &configured).await;
                coordinator.set_report(report(&parts));
                // Shown as stopped before released: no moment when two nodes show one camera.
                release(&mut conn, &mut coordinator, &hand_over, attempt).await;
                // What is left of the step's time, not more: the renewals come first.
                if let (Some(c), true) = (conn.as_mut(), started.elapsed() < attempt) {
                    share(&registry, c, &mut api_version, &parts.control, attempt).await;
                    if parts.view.wanted() {
                        let read = coordinator.reports(c, &members);
                        if let Ok(Ok(read)) = tokio::time::timeout(attempt, read).await {
                            reports = read;
                            show(&parts, &coordinator, &members, &reports, true, &configured).await;
                        }
                    }
                }
                // Off the step: a slow Redis must not delay the next renewal.
                if adopting.as_ref().is_none_or(JoinHandle::is_finished) {
                    let live = members.iter().map(|m| m.id.clone()).collect();
                    adopting = Some(tokio::spawn(adopt(parts.alerts.clone(), live)));
                }
                continue;
            }
            Err(why) => {
                parts.metrics.cut_off.inc();
                if !failing {
                    tracing::warn!("cluster step failed: {why}");
                    failing = true;
                }
                next = tokio::time::Instant::now() + attempt;
                // The next answer could come two attempts from now; with less than a
                // period of the lease left, stop before another node can take over.
                let left = last_ok.map_or(Duration::ZERO, |t| lease.saturating_sub(t.elapsed()));
                if left <= period && !parts.cameras.running().await.is_empty() {
                    tracing::warn!(lease = ?lease, "cut off from Redis for too long: stopping every camera here before its lease expires; another node takes them over");
                    parts.cameras.set_owned(BTreeSet::new()).await;
                    parts.sensors.set(BTreeSet::new());
                }
                if left <= period {
                    if let Some(role) = &parts.platform {
                        role.set(false);
                    }
                }
                false
            }
        };
        show(
            &parts,
            &coordinator,
            &members,
            &reports,
            coordinated,
            &configured,
        )
        .await;
        coordinator.set_report(report(&parts));
    }
    // Intake has stopped; the service stops every camera, then says leave.
    if let Some(role) = &parts.platform {
        role.set(false);
    }
    let _ = parts.leave.wait_for(|leave| *leave).await;
    if let Some(conn) = conn.as_mut() {
        match tokio::time::timeout(period, coordinator.leave(conn)).await {
            Ok(Ok(())) => tracing::info!("left the cluster: its leases are free"),
            Ok(Err(e)) => tracing::warn!(
                "could not leave the cluster cleanly ({}): its leases expire within {lease:?}",
                sharpeyes_config::redact_url(&e.to_string())
            ),
            Err(_) => tracing::warn!(
                "Redis did not answer the leave: this node's leases expire within {lease:?}"
            ),
        }
    }
}

/// Where the cluster's keys live in Redis.
fn prefix(redis: &sharpeyes_config::Redis) -> String {
    format!("{}:cluster", redis.key_prefix)
}

/// Hands the cameras changed over the API (on any node) to the control loop when their
/// version moved past `seen`; one small read when nothing changed.
async fn share(
    registry: &Registry,
    conn: &mut RedisConnection,
    seen: &mut u64,
    control: &mpsc::Sender<crate::reload::Control>,
    limit: Duration,
) {
    let read = tokio::time::timeout(limit, async {
        if registry.version(conn).await? <= *seen {
            return Ok(None);
        }
        registry.read(conn).await.map(Some)
    })
    .await;
    match read {
        Ok(Ok(Some(changes))) => {
            let version = changes.version;
            if control
                .try_send(crate::reload::Control::Shared(changes))
                .is_ok()
            {
                *seen = version;
            }
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!(
            "cannot read the cameras changed over the API: {}",
            sharpeyes_config::redact_url(&e.to_string())
        ),
        Err(_) => tracing::warn!("Redis did not give the cameras changed over the API in time"),
    }
}

/// Publishes the unsent alerts of nodes that left the membership without sending them (a
/// kill, a lost machine): whichever live node gets there first takes each, within a step of
/// the dead node's heartbeat expiring.
async fn adopt(alerts: sharpeyes_alerts::Alerts, live: Vec<String>) {
    // Not cut short: an answer dropped after Redis moved the records would strand them
    // (the store's own response timeout bounds it).
    if let Err(e) = alerts.adopt_outboxes(&live).await {
        tracing::warn!("cannot look for the outboxes of dead nodes: {e}");
    }
}

/// One coordination step within `limit`, connecting first if need be.
async fn step(
    redis: &sharpeyes_config::Redis,
    conn: &mut Option<RedisConnection>,
    coordinator: &mut Coordinator,
    cameras: &[(String, String)],
    limit: Duration,
) -> Result<Step, String> {
    if conn.is_none() {
        let connected = tokio::time::timeout(limit, RedisStore::connection(redis))
            .await
            .map_err(|_| format!("Redis did not answer within {limit:?}"))?
            .map_err(|e| e.to_string())?;
        *conn = Some(connected);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no Redis connection".into());
    };
    match tokio::time::timeout(limit, coordinator.step(c, cameras)).await {
        Ok(Ok(step)) => Ok(step),
        Ok(Err(e)) => Err(format!(
            "Redis: {}",
            sharpeyes_config::redact_url(&e.to_string())
        )),
        Err(_) => Err(format!("Redis did not answer within {limit:?}")),
    }
}

/// What this node's next heartbeats say it runs.
fn report(parts: &Coordination) -> Report {
    Report {
        cameras: parts
            .board
            .list()
            .into_iter()
            .map(|c| (c.id, c.state.to_owned()))
            .collect(),
        sensors: parts.sensors.list(),
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// The view and the gauges after a step. `reports` are the members' last words; this
/// node's own entry is what runs here now.
async fn show(
    parts: &Coordination,
    coordinator: &Coordinator,
    members: &[Member],
    reports: &BTreeMap<String, Report>,
    coordinated: bool,
    configured: &[sharpeyes_config::Camera],
) {
    let running = parts.cameras.running().await;
    let me = coordinator.me();
    let own = report(parts);
    parts.metrics.nodes.set(members.len() as i64);
    parts.metrics.cameras.reset();
    let nodes: Vec<NodeView> = members
        .iter()
        .map(|m| {
            let said = if m.id == me.id {
                Some(own.clone())
            } else {
                reports.get(&m.id).cloned()
            };
            // Each node's own count always; the others' while their reports are read.
            if let Some(said) = &said {
                parts
                    .metrics
                    .cameras
                    .with_label_values(&[&m.id])
                    .set(said.cameras.len() as i64);
            }
            let said = said.unwrap_or_default();
            NodeView {
                id: m.id.clone(),
                capacity: m.capacity,
                zone: m.zone.clone(),
                cameras: said.cameras.keys().cloned().collect(),
                sensors: said.sensors.iter().cloned().collect(),
                last_seen: (said.at_ms > 0).then(|| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_millis(said.at_ms),
                    )
                    .to_string()
                }),
                states: said.cameras,
            }
        })
        .collect();
    let mut unassigned = Vec::new();
    let mut elsewhere = Vec::new();
    for camera in configured.iter().filter(|c| !running.contains(&c.id)) {
        let runner = nodes.iter().find_map(|n| {
            let state = n.states.get(&camera.id)?;
            Some((n, state))
        });
        let view = match runner {
            Some((n, state)) => CameraView {
                node: Some(n.id.clone()),
                since: n.last_seen.clone().unwrap_or_default(),
                ..CameraView::new(camera, crate::status::phase_name(state))
            },
            None => {
                unassigned.push(camera.id.clone());
                CameraView::new(camera, "unassigned")
            }
        };
        elsewhere.push(view);
    }
    parts.view.set(ClusterState {
        node: me.clone(),
        lease_ms: u64::try_from(coordinator.lease().as_millis()).unwrap_or(u64::MAX),
        coordinated,
        cameras: running,
        nodes,
        unassigned,
        elsewhere,
    });
}

/// Runs what the step says this node holds: stops what moved away or was lost, starts what
/// it gained. Returns what moved away, to release. `started`: when the step began, for the
/// handoff times of the cameras taken over.
async fn apply(parts: &Coordination, step: Step, started: Instant) -> BTreeSet<String> {
    let unassigned = i64::from(step.unassigned);
    if parts.metrics.unassigned.get() != unassigned {
        if unassigned > 0 {
            tracing::warn!(
                cameras = unassigned,
                "no live node has room for these cameras (each holds at most its [cluster] capacity): add nodes or raise capacity"
            );
        } else {
            tracing::info!("every camera has a node again");
        }
        parts.metrics.unassigned.set(unassigned);
    }
    if !step.lost.is_empty() {
        parts.metrics.lost.inc_by(step.lost.len() as u64);
        tracing::warn!(cameras = ?step.lost, "leases taken by another node while this one was cut off: stopped here");
    }
    for (camera, vacant) in &step.taken_over {
        parts.cameras.expect_handoff(
            camera,
            Handoff {
                since: started.checked_sub(*vacant).unwrap_or(started),
                seconds: parts.metrics.handoff.clone(),
            },
        );
    }
    let applied = parts.cameras.set_owned(step.run).await;
    if !applied.added.is_empty() {
        tracing::info!(cameras = ?applied.added, "took over");
    }
    if !step.hand_over.is_empty() {
        parts
            .metrics
            .handed_over
            .inc_by(step.hand_over.len() as u64);
        tracing::info!(cameras = ?step.hand_over, "handing over to another node");
    }
    step.hand_over
}

/// Releases the leases of `cameras`, stopped here; not released in time, the new owner
/// takes them when the lease expires.
async fn release(
    conn: &mut Option<RedisConnection>,
    coordinator: &mut Coordinator,
    cameras: &BTreeSet<String>,
    limit: Duration,
) {
    if let (false, Some(c)) = (cameras.is_empty(), conn.as_mut()) {
        let _ = tokio::time::timeout(limit, coordinator.release(c, cameras)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: &str = "[[grids]]\nid = \"321322\"\nname = \"沭阳县\"\ncentre = \"县中心\"\n";

    fn camera(id: &str) -> String {
        format!(
            "[[cameras]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://10.0.0.1/{id}\"\ngrid = \"321322\"\n"
        )
    }

    fn sensor(id: &str, cameras: &[&str]) -> String {
        let cameras: Vec<String> = cameras.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            "[[sensors]]\nid = \"{id}\"\ntype = \"water_level\"\nunit = \"m\"\ngrid = \"321322\"\ncameras = [{}]\nabove = 5.0\n",
            cameras.join(", ")
        )
    }

    /// The Kubernetes manifests render (kustomize, offline), give each pod its name as node
    /// id, and carry the configuration the config tests load.
    #[test]
    fn the_kubernetes_manifests_render_with_pod_names_as_node_ids() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/k8s");
        let out = std::process::Command::new("kubectl")
            .args(["kustomize", dir])
            .output()
            .expect("kubectl runs (apt install kubectl): it renders ops/k8s offline");
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for kind in [
            "Namespace",
            "ConfigMap",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
        ] {
            assert!(
                yaml.contains(&format!("kind: {kind}\n")),
                "no {kind}:\n{yaml}"
            );
        }
        let after: Vec<&str> = yaml
            .lines()
            .skip_while(|l| l.trim() != "- name: SHARPEYES_NODE_ID")
            .skip(1)
            .take(3)
            .map(str::trim)
            .collect();
        assert_eq!(
            after,
            ["valueFrom:", "fieldRef:", "fieldPath: metadata.name"]
        );
        // The generated ConfigMap's name (with its content hash) is the one mounted.
        let generated: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name: sharpeyes-config-"))
            .collect();
        assert_eq!(generated.len(), 2, "declared and mounted: {generated:?}");
        assert_eq!(generated[0], generated[1]);
        assert!(yaml.contains("[cluster]") && yaml.contains("namespace: sharpeyes"));
        assert!(yaml.contains("/etc/sharpeyes/sharpeyes.toml"));

        // Every resource against Kubernetes' own schemas, rejecting unknown fields.
        let rendered = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rendered.path(), &out.stdout).unwrap();
        let validate = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.deps/venv/bin/kubernetes-validate"
        );
        let out = std::process::Command::new(validate)
            .arg("--strict")
            .arg(rendered.path())
            .output()
            .unwrap_or_else(|e| panic!("{validate}: {e} (make setup installs it)"));
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert_eq!(said.matches(" passed for resource ").count(), 5, "{said}");
    }

    #[test]
    fn cameras_that_share_a_sensor_share_a_key_and_the_sensor_goes_with_them() {
        let mut text = GRID.to_owned();
        for c in ["c1", "c2", "c3", "c4"] {
            text += &camera(c);
        }
        text += &sensor("s-a", &["c3", "c2"]);
        text += &sensor("s-b", &["c4", "c3"]);
        text += &sensor("s-alone", &[]);
        let config = Config::parse(&text, std::path::Path::new("t.toml"), &[])
            .unwrap()
            .config;
        let ids: Vec<String> = ["c1", "c2", "c3", "c4"].map(String::from).to_vec();
        let (cameras, sensors) = assignment(&ids, &config);
        let key = |c: &str| cameras.iter().find(|(id, _)| id == c).unwrap().1.clone();
        assert_eq!(key("c1"), "c1");
        // s-a joins c2 and c3, s-b joins c3 and c4: one group under the least id.
        assert_eq!([key("c2"), key("c3"), key("c4")], ["c2", "c2", "c2"]);
        assert_eq!(sensors["s-a"], "c2");
        assert_eq!(sensors["s-b"], "c2");
        assert_eq!(sensors["s-alone"], "s-alone");
    }
}
