//! The county's GB/T 28181 platform (`[gb28181]`): this node registers as one device whose
//! channels are its cameras, and every alert it raises goes there as an Alarm, beside MQTT.
//!
//! The alarm mapping, with the standard's codes (GB/T 28181-2016 A.2.5): video alarms are
//! `AlarmMethod` 5 with the nearest type (danger zone 6 intrusion, entering; crowd 10
//! density; fire, smoke, a fallen person and the rest 11 video anomaly, since the standard
//! has no fire code); sensor alarms are `AlarmMethod` 2 with the default device alarm type.
//! `[gb28181.alarms.HAZARD]` overrides these per hazard. `AlarmPriority` is 1 critical, 2
//! major, 3 minor, 4 info. `AlarmTime` is China Standard Time (UTC+8), the platforms'
//! clock, whatever this machine's zone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use sharpeyes_alerts::{Alert, Alerts, FeedEvent, Source};
use sharpeyes_config::Config;
use sharpeyes_config::gbt28181::DeviceId;
use sharpeyes_gb28181::{Alarm, Channel, Charset, Protocol, Settings, State, Upstream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::status::CameraBoard;

/// How often the alarm counters are refreshed, and a failed SIP port tried again.
const REFRESH: Duration = Duration::from_secs(5);
/// China Standard Time.
const PLATFORM_UTC_OFFSET: Duration = Duration::from_secs(8 * 3600);

/// The device on the platform, for `/readyz`: none while this node does not play it.
#[derive(Clone, Default)]
pub struct Platform(Arc<std::sync::Mutex<Option<Arc<Upstream>>>>);

impl Platform {
    /// Why the platform cannot take alarms now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let upstream = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        match upstream.state() {
            State::Registered => None,
            State::Registering => {
                Some("the GB/T 28181 platform has not answered the registration yet".into())
            }
            State::Unreachable => {
                Some("the GB/T 28181 platform does not answer: alarms wait until it does".into())
            }
            State::Refused(why) => Some(format!(
                "the GB/T 28181 platform refused this device: {why}"
            )),
        }
    }

    fn set(&self, upstream: Option<Arc<Upstream>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = upstream;
    }
}

/// Whether this node is the device now. One node alone always is; in a cluster the device is
/// leased like a camera (key [`crate::cluster::PLATFORM_KEY`]), so exactly one node registers
/// its id and relays every node's alerts, and another takes over within a lease when it dies.
#[derive(Clone)]
pub struct Role(watch::Sender<bool>);

impl Role {
    pub fn new(playing: bool) -> Self {
        Self(watch::channel(playing).0)
    }

    pub fn set(&self, playing: bool) {
        self.0
            .send_if_modified(|p| std::mem::replace(p, playing) != playing);
    }

    pub fn playing(&self) -> bool {
        *self.0.borrow()
    }
}

/// Starts the relay when `[gb28181]` is set: while `role` says so, the device registers and
/// relays alerts.
pub async fn start(
    config: &Arc<Config>,
    alerts: Alerts,
    board: CameraBoard,
    sensors: Arc<crate::sensors::SensorCounters>,
    registry: &Registry,
    role: Role,
    stop: watch::Receiver<bool>,
) -> Result<Option<(Platform, JoinHandle<()>)>, String> {
    let Some(g) = &config.gb28181 else {
        return Ok(None);
    };
    let password = g
        .password
        .expand()
        .map_err(|e| format!("[gb28181] password: {e}"))?;
    let (server, protocol) = resolve(&g.server).await?;
    let settings = Settings {
        server_id: g.server_id.clone(),
        server_domain: g.server_domain.clone(),
        server,
        protocol,
        device_id: g.device_id.clone(),
        password,
        listen: g.listen,
        expires: g.expires,
        keepalive: g.keepalive,
        charset: match g.charset {
            sharpeyes_config::SipCharset::Gb2312 => Charset::Gb2312,
            sharpeyes_config::SipCharset::Utf8 => Charset::Utf8,
        },
    };
    // One node alone finds a taken port now, not at its first alarm.
    let first = if role.playing() {
        Some(
            Upstream::start(settings.clone())
                .await
                .map_err(|e| format!("[gb28181] listen {}: {e}", g.listen))?,
        )
    } else {
        None
    };
    let metrics = PlatformMetrics::new(registry).map_err(|e| format!("gb28181 metrics: {e}"))?;
    let platform = Platform::default();
    let relay = Relay {
        config: config.clone(),
        settings,
        board,
        sensors,
        metrics,
        platform: platform.clone(),
        lease: config.cluster().map_or(Duration::ZERO, |c| c.lease),
    };
    let task = tokio::spawn(relay.run(first, alerts, role, stop));
    Ok(Some((platform, task)))
}

/// `udp://host:port` or `tcp://host:port` to an address and a protocol.
async fn resolve(server: &str) -> Result<(std::net::SocketAddr, Protocol), String> {
    let (protocol, hostport) = match server.split_once("://") {
        Some(("udp", rest)) => (Protocol::Udp, rest),
        Some(("tcp", rest)) => (Protocol::Tcp, rest),
        _ => {
            return Err(format!(
                "[gb28181] server `{server}`: not udp://host:port or tcp://host:port"
            ));
        }
    };
    let addr = tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("[gb28181] server `{server}`: {e}"))?
        .next()
        .ok_or_else(|| format!("[gb28181] server `{server}`: the name has no address"))?;
    Ok((addr, protocol))
}

/// Alarms the platform has not answered 200 OK yet, kept so that a restart, or in a cluster
/// the device moving to another node, loses none: in Redis with `[redis]` (shared by the
/// cluster's nodes, with a mark for each delivered alarm so a new device does not send it
/// again), else in a file under `[node] data_dir`. Alert id -> the alert as JSON.
enum Pending {
    Redis {
        conn: sharpeyes_alerts::RedisConnection,
        key: String,
        prefix: String,
    },
    File {
        path: std::path::PathBuf,
        entries: std::collections::BTreeMap<String, String>,
    },
}

/// Alarms kept at most in the file; the oldest go first past it.
const PENDING_LIMIT: usize = 10_000;
/// How long a delivered mark is kept: longer than any lease.
const SENT_MARK: Duration = Duration::from_secs(3600);

impl Pending {
    async fn open(config: &Config) -> Self {
        if let Some(redis) = &config.redis {
            let connected = tokio::time::timeout(
                Duration::from_secs(5),
                sharpeyes_alerts::RedisStore::connection(redis),
            )
            .await;
            match connected {
                Ok(Ok(conn)) => {
                    let prefix = format!("{}:gb28181", redis.key_prefix);
                    return Self::Redis {
                        conn,
                        key: format!("{prefix}:pending"),
                        prefix,
                    };
                }
                Ok(Err(e)) => tracing::warn!(
                    "gb28181: Redis for the pending alarms: {e}; keeping them on this node's disk"
                ),
                Err(_) => tracing::warn!(
                    "gb28181: Redis did not answer; keeping the pending alarms on this node's disk"
                ),
            }
        }
        let path = config.node.data_dir.join("gb28181-pending.json");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self::File { path, entries }
    }

    /// Every pending alert, as JSON, oldest first (alert ids are ULIDs).
    async fn all(&mut self) -> Vec<String> {
        match self {
            Self::Redis { conn, key, .. } => {
                let got: redis::RedisResult<Vec<(String, String)>> =
                    redis::cmd("HGETALL").arg(&*key).query_async(conn).await;
                let mut got = got.unwrap_or_else(|e| {
                    tracing::warn!("gb28181: cannot read the pending alarms: {e}");
                    Vec::new()
                });
                got.sort();
                got.into_iter().map(|(_, json)| json).collect()
            }
            Self::File { entries, .. } => entries.values().cloned().collect(),
        }
    }

    async fn add(&mut self, id: &str, json: String) {
        match self {
            Self::Redis { conn, key, .. } => {
                let r: redis::RedisResult<()> = redis::cmd("HSET")
                    .arg(&*key)
                    .arg(id)
                    .arg(json)
                    .query_async(conn)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(
                        alert = id,
                        "gb28181: cannot keep the alarm in Redis: {e}; it is sent, but a restart before the platform answers loses it"
                    );
                }
            }
            Self::File { entries, .. } => {
                entries.insert(id.to_owned(), json);
                while entries.len() > PENDING_LIMIT {
                    entries.pop_first();
                }
                self.save();
            }
        }
    }

    /// The platform answered: no longer pending, and (in Redis) marked delivered.
    async fn delivered(&mut self, id: &str) {
        match self {
            Self::Redis { conn, key, prefix } => {
                let r: redis::RedisResult<()> = redis::pipe()
                    .cmd("HDEL")
                    .arg(&*key)
                    .arg(id)
                    .ignore()
                    .cmd("SET")
                    .arg(format!("{prefix}:sent:{id}"))
                    .arg(1)
                    .arg("PX")
                    .arg(u64::try_from(SENT_MARK.as_millis()).unwrap_or(u64::MAX))
                    .ignore()
                    .query_async(conn)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(alert = id, "gb28181: cannot mark the alarm delivered: {e}");
                }
            }
            Self::File { entries, .. } => {
                if entries.remove(id).is_some() {
                    self.save();
                }
            }
        }
    }

    /// Whether `id` was delivered or is pending already (it need not be sent again).
    async fn known(&mut self, id: &str) -> bool {
        match self {
            Self::Redis { conn, key, prefix } => {
                let r: redis::RedisResult<(bool, bool)> = redis::pipe()
                    .cmd("HEXISTS")
                    .arg(&*key)
                    .arg(id)
                    .cmd("EXISTS")
                    .arg(format!("{prefix}:sent:{id}"))
                    .query_async(conn)
                    .await;
                r.is_ok_and(|(pending, sent)| pending || sent)
            }
            Self::File { entries, .. } => entries.contains_key(id),
        }
    }

    fn save(&self) {
        let Self::File { path, entries } = self else {
            return;
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(entries).unwrap_or_default())?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), "gb28181: cannot keep the pending alarms: {e}; set [node] data_dir to a writable place");
        }
    }
}

struct PlatformMetrics {
    registered: IntGauge,
    alarms: IntCounterVec,
}

impl PlatformMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            registered: IntGauge::new(
                "sharpeyes_gb28181_registered",
                "Whether the GB/T 28181 platform has this node's device registered: 1 yes, 0 no (or another node of the cluster is the device).",
            )?,
            alarms: IntCounterVec::new(
                Opts::new(
                    "sharpeyes_gb28181_alarms_total",
                    "Alarms for the GB/T 28181 platform: delivered (answered 200 OK), retried (sent again after no answer or a refusal), dropped (the queue was full).",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(metrics.registered.clone()))?;
        registry.register(Box::new(metrics.alarms.clone()))?;
        Ok(metrics)
    }
}

/// What one spell as the device follows the alerts with.
struct Follow<'a> {
    upstream: &'a Upstream,
    pending: &'a mut Pending,
    deliveries: &'a mut Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Alerts detected before this were taken care of when the spell began.
    since: SystemTime,
}

struct Relay {
    config: Arc<Config>,
    settings: Settings,
    board: CameraBoard,
    sensors: Arc<crate::sensors::SensorCounters>,
    metrics: PlatformMetrics,
    platform: Platform,
    /// In a cluster, how long a dead device's alerts may have gone unsent: sent again by the
    /// node that takes over.
    lease: Duration,
}

impl Relay {
    async fn run(
        self,
        mut first: Option<Upstream>,
        alerts: Alerts,
        role: Role,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut playing = role.0.subscribe();
        loop {
            if !*playing.borrow_and_update() {
                self.metrics.registered.set(0);
                tokio::select! {
                    _ = crate::stopped(&mut stop) => return,
                    changed = playing.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let upstream = match first.take() {
                Some(u) => u,
                None => match Upstream::start(self.settings.clone()).await {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::error!(listen = %self.settings.listen, "gb28181: cannot open the SIP port: {e}; trying again in 5 s");
                        tokio::select! {
                            _ = crate::stopped(&mut stop) => return,
                            _ = tokio::time::sleep(REFRESH) => {}
                        }
                        continue;
                    }
                },
            };
            let upstream = Arc::new(upstream);
            let (listed, on, sensors) = (
                self.config.clone(),
                self.board.clone(),
                self.sensors.clone(),
            );
            upstream.set_channels(move || channels(&listed, &on, &sensors));
            self.platform.set(Some(upstream.clone()));
            tracing::info!(device = %self.settings.device_id, "gb28181: this node is the device on the platform");
            let since = SystemTime::now() - self.lease - Duration::from_secs(1);
            let mut pending = Pending::open(&self.config).await;
            let mut deliveries = upstream.deliveries();
            // What the platform had not answered before a restart or a move.
            for json in pending.all().await {
                match serde_json::from_str::<Alert>(&json) {
                    Ok(alert) => self.send(&upstream, &alert),
                    Err(e) => {
                        tracing::warn!("gb28181: a pending alarm that does not read back: {e}")
                    }
                }
            }
            if !self.lease.is_zero() {
                // What the last device may not have taken before it died.
                let filter = sharpeyes_alerts::AlertFilter {
                    since: Some(since),
                    ..Default::default()
                };
                let mut missed = alerts.recent(&filter);
                missed.reverse();
                for recent in missed {
                    if !pending.known(&recent.alert.id).await {
                        self.relay(&upstream, &mut pending, &recent.alert).await;
                    }
                }
            }
            let mut follow = Follow {
                upstream: &upstream,
                pending: &mut pending,
                deliveries: &mut deliveries,
                since,
            };
            let ended = self
                .follow(&mut follow, &alerts, &mut playing, &mut stop)
                .await;
            self.platform.set(None);
            drop(upstream);
            if ended {
                return;
            }
            tracing::info!("gb28181: another node is the device on the platform now");
        }
    }

    /// Relays alerts until the role moves away (`false`) or the service stops (`true`).
    async fn follow(
        &self,
        f: &mut Follow<'_>,
        alerts: &Alerts,
        playing: &mut watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let (upstream, since) = (f.upstream, f.since);
        let mut feed = alerts.feed();
        let mut tick = tokio::time::interval(REFRESH);
        let mut counted = [0u64; 3];
        let mut state = upstream.watch_state();
        loop {
            tokio::select! {
                _ = crate::stopped(stop) => return true,
                Some(id) = async { f.deliveries.as_mut()?.recv().await } => f.pending.delivered(&id).await,
                changed = state.changed() => {
                    if changed.is_err() {
                        return true;
                    }
                    let registered = *state.borrow_and_update() == State::Registered;
                    self.metrics.registered.set(i64::from(registered));
                }
                changed = playing.changed() => {
                    if changed.is_err() {
                        return true;
                    }
                    if !*playing.borrow_and_update() {
                        return false;
                    }
                }
                event = feed.recv() => match event {
                    Ok(FeedEvent::Alert(recent)) => {
                        let detected = ulid::Ulid::from_string(&recent.alert.id)
                            .map_or(SystemTime::now(), |u| u.datetime());
                        // The shared feed's history, sent already or above.
                        if detected >= since {
                            self.relay(upstream, f.pending, &recent.alert).await;
                        }
                    }
                    Ok(FeedEvent::Ack(_) | FeedEvent::Dispatched { .. }) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::error!(missed = n, "gb28181: alerts went by faster than the platform relay read them; those are not sent to the platform");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return true,
                },
                _ = tick.tick() => {
                    let stats = upstream.stats();
                    let now = [
                        stats.delivered.load(Ordering::Relaxed),
                        stats.retried.load(Ordering::Relaxed),
                        stats.dropped.load(Ordering::Relaxed),
                    ];
                    for (i, outcome) in ["delivered", "retried", "dropped"].into_iter().enumerate() {
                        self.metrics
                            .alarms
                            .with_label_values(&[outcome])
                            .inc_by(now[i].saturating_sub(counted[i]));
                    }
                    counted = now;
                }
            }
        }
    }

    /// The device sends every alert: its own node's and, in a cluster, every other node's;
    /// kept as pending until the platform answers.
    async fn relay(&self, upstream: &Upstream, pending: &mut Pending, alert: &Alert) {
        if let Ok(json) = serde_json::to_string(alert) {
            pending.add(&alert.id, json).await;
        }
        self.send(upstream, alert);
    }

    fn send(&self, upstream: &Upstream, alert: &Alert) {
        if !upstream.send(alarm(alert, &self.config)) {
            tracing::error!(alert = %alert.id, "gb28181: the platform's queue is full; this alert is not sent there");
        }
    }
}

/// The alarm the platform gets for `alert`: `[gb28181.alarms.HAZARD]` when the file says,
/// else the defaults of the module docs. A sensor alert no camera shows stands on the
/// device itself.
pub fn alarm(alert: &Alert, config: &Config) -> Alarm {
    let g = config.gb28181.as_ref();
    let device = g.map_or("", |g| g.device_id.as_str());
    let camera = alert
        .camera
        .as_ref()
        .filter(|c| DeviceId::looks_like(&c.id));
    let video = !matches!(alert.source, Source::Sensor);
    let configured = g.and_then(|g| g.alarms.get(&alert.hazard));
    let (method, alarm_type, event_type) = match configured {
        Some(a) => (a.method, a.alarm_type, a.event_type),
        None if video => match alert.hazard.as_str() {
            "danger-zone" | "intrusion" => (5, Some(6), Some(1)),
            "crowd" => (5, Some(10), None),
            _ => (5, Some(11), None),
        },
        None => (2, None, None),
    };
    let priority = match alert.severity.as_str() {
        "critical" => 1,
        "major" => 2,
        "minor" => 3,
        _ => 4,
    };
    let path: Vec<&str> = alert.grid.path.iter().map(|s| s.name.as_str()).collect();
    let mut description = alert.hazard.clone();
    if let Some(c) = &alert.camera {
        description.push_str(&format!(": {}", c.name));
    }
    description.push_str(&format!(", {}", path.join("/")));
    if let Some(s) = &alert.snapshot {
        description.push_str(&format!(", {}", s.url));
    }
    let location = alert
        .camera
        .as_ref()
        .and_then(|c| config.cameras.iter().find(|k| k.id == c.id))
        .and_then(|c| c.location)
        .map(|[lon, lat]| (lon, lat));
    Alarm {
        alert_id: alert.id.clone(),
        device_id: camera.map_or(device, |c| c.id.as_str()).to_owned(),
        priority,
        method,
        time: platform_time(&alert.detected_at),
        description,
        alarm_type,
        event_type,
        location,
    }
}

/// RFC 3339 to `YYYY-MM-DDTHH:MM:SS` in China Standard Time.
fn platform_time(rfc3339: &str) -> String {
    let at = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(rfc3339))
        .unwrap_or_else(|_| SystemTime::now());
    let local = humantime::format_rfc3339_seconds(at + PLATFORM_UTC_OFFSET).to_string();
    local.trim_end_matches('Z').to_owned()
}

/// The configured cameras with 20-digit ids, as channels, ON while streaming here; then
/// the sensors with 20-digit ids (alarm inputs, type 134), ON while they report.
fn channels(
    config: &Config,
    board: &CameraBoard,
    sensors: &crate::sensors::SensorCounters,
) -> Vec<Channel> {
    let streaming: std::collections::HashSet<String> = board
        .list()
        .into_iter()
        .filter(|s| s.state == "streaming")
        .map(|s| s.id)
        .collect();
    let cameras = config
        .cameras
        .iter()
        .filter(|c| DeviceId::looks_like(&c.id))
        .map(|c| Channel {
            id: c.id.clone(),
            name: c.name.clone(),
            civil_code: civil_code(c.grid.as_deref().unwrap_or(""), &c.id),
            online: streaming.contains(&c.id),
            location: c.location.map(|[lon, lat]| (lon, lat)),
        });
    let inputs = config
        .sensors
        .iter()
        .filter(|s| DeviceId::looks_like(&s.id))
        .map(|s| Channel {
            id: s.id.clone(),
            name: format!("{} {}", s.kind, s.id),
            civil_code: civil_code(&s.grid, &s.id),
            online: sensors.online(&s.id),
            location: s.position.as_ref().map(|p| (p.lon, p.lat)),
        });
    cameras.chain(inputs).collect()
}

/// The county code a grid id starts with (`321322-001-...`), else the id's.
fn civil_code(grid: &str, id: &str) -> String {
    let county = grid.split('-').next().unwrap_or("");
    if county.len() == 6 && county.bytes().all(|b| b.is_ascii_digit()) {
        county.to_owned()
    } else {
        id[..6].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[grids]]
id = "321322"
name = "沭阳县"

[gb28181]
server_id = "32132200002000000001"
server_domain = "3213220000"
server = "udp://127.0.0.1:5060"
device_id = "32132200001180000001"
password = "${GB}"

[gb28181.alarms.smoke]
method = 5
type = 2

[gb28181.alarms.flood]
method = 2
type = 1

[[cameras]]
id = "32132200001320000001"
name = "东元超市门口"
kind = "sharp-eyes"
url = "rtsp://10.0.0.1/1"
grid = "321322"
location = [118.77, 34.13]
"#;

    fn config() -> Config {
        Config::parse(CONFIG, std::path::Path::new("gb.toml"), &[])
            .unwrap()
            .config
    }

    fn alert(hazard: &str, source: &str, camera: bool, severity: &str) -> Alert {
        let camera = if camera {
            serde_json::json!({"id": "32132200001320000001", "name": "东元超市门口", "kind": "sharp-eyes", "unit": null})
        } else {
            serde_json::Value::Null
        };
        serde_json::from_value(serde_json::json!({
            "schema": "sharpeyes.alert/1",
            "id": "01KBM7Z3Y1T6T4PMP76KKE49QY",
            "hazard": hazard,
            "severity": severity,
            "confidence": 0.9,
            "source": source,
            "camera": camera,
            "grid": {"id": "321322", "path": [{"id": "321322", "name": "沭阳县", "level": "county"}], "centre": null},
            "region_code": null,
            "detected_at": "2026-12-03T07:04:05Z",
            "frame": null,
            "boxes": [],
            "zone": null,
            "snapshot": null,
            "evidence": [],
            "escalation_level": 0
        }))
        .unwrap()
    }

    #[test]
    fn hazards_map_to_the_standards_alarms_unless_the_file_says_otherwise() {
        let config = config();
        let fire = alarm(&alert("fire", "video", true, "critical"), &config);
        assert_eq!(
            (fire.method, fire.alarm_type, fire.event_type, fire.priority),
            (5, Some(11), None, 1)
        );
        assert_eq!(fire.device_id, "32132200001320000001");
        assert_eq!(fire.location, Some((118.77, 34.13)));
        assert_eq!(fire.time, "2026-12-03T15:04:05");
        assert_eq!(fire.description, "fire: 东元超市门口, 沭阳县");
        let zone = alarm(&alert("danger-zone", "video", true, "major"), &config);
        assert_eq!(
            (zone.method, zone.alarm_type, zone.event_type, zone.priority),
            (5, Some(6), Some(1), 2)
        );
        let crowd = alarm(&alert("crowd", "fused", true, "minor"), &config);
        assert_eq!(
            (crowd.method, crowd.alarm_type, crowd.priority),
            (5, Some(10), 3)
        );
        // The file's mapping wins.
        let smoke = alarm(&alert("smoke", "video", true, "info"), &config);
        assert_eq!(
            (smoke.method, smoke.alarm_type, smoke.priority),
            (5, Some(2), 4)
        );
        // A sensor's alarm with no camera stands on the device.
        let water = alarm(&alert("water-level", "sensor", false, "major"), &config);
        assert_eq!((water.method, water.alarm_type), (2, None));
        assert_eq!(water.device_id, "32132200001180000001");
        assert_eq!(water.location, None);
        let flood = alarm(&alert("flood", "sensor", false, "major"), &config);
        assert_eq!((flood.method, flood.alarm_type), (2, Some(1)));
    }

    #[test]
    fn alarm_time_is_china_standard_time_without_a_zone() {
        assert_eq!(platform_time("2026-12-03T07:04:05Z"), "2026-12-03T15:04:05");
        assert_eq!(
            platform_time("2026-12-03T20:00:00.123Z"),
            "2026-12-04T04:00:00"
        );
    }
}
