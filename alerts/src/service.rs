//! The alert service: what the pipeline calls with a confirmed hazard.
//!
//! `submit` applies the cooldown, stores the snapshot, writes the alert to the outbox and
//! schedules its escalation before handing it to the MQTT link; so once `submit` returns,
//! neither a broker outage nor a killed process loses the alert. The cooldown is claimed only
//! once the alert is in the outbox: a process killed before that sent nothing and holds back
//! nothing (killed between the two, it may cost one extra alert after the restart). Two small
//! tasks run beside the link: one turns due escalations into republished alerts, one records
//! acknowledgements.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Serialize;
use sharpeyes_config::Config;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alert::{Alert, SnapshotRef};
use crate::error::{Error, ErrorKind};
use crate::health::HealthNotice;
use crate::mqtt::{
    Inbound, InboundMessage, IncomingAck, Link, LinkCommand, MAX_PACKET, MqttSettings,
};
use crate::snapshot::Snapshot;
use crate::stats::{Stats, guarded, stopped};
use crate::store::{Ack, AckOutcome, MAX_NOTE, OutboxRecord, StateStore, Verdict};
use sharpeyes_config::DispatchOn;
use sharpeyes_ingest::cpu::{Measured, Stage};

/// The longest `by` of an acknowledgement, in characters: a name, not a message.
pub const MAX_BY: usize = 64;
/// The largest acknowledgement message taken: `{"by": ..., "note": ...}` fits many times
/// over.
const MAX_ACK_BYTES: usize = 4096;

/// What an acknowledgement says (`{"by": "...", "verdict": "...", "note": "..."}`, every
/// field optional), over MQTT or the API, before [`Alerts::acknowledge`] checks it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct AckRequest {
    pub by: Option<String>,
    pub verdict: Option<Verdict>,
    pub note: Option<String>,
}

impl AckRequest {
    /// An MQTT acknowledgement's payload: empty or any JSON is a plain acknowledgement
    /// (`by` when it is a string, as before verdicts); a `verdict` must be one of
    /// [`Verdict::ALL`] and a `note` a string, or the whole message is refused (the error
    /// names the field, never repeats the value).
    pub fn from_payload(payload: &[u8]) -> Result<AckRequest, String> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return Ok(AckRequest::default());
        };
        let text = |field: &str| v.get(field).and_then(|f| f.as_str()).map(str::to_owned);
        let verdict = match v.get("verdict") {
            None | Some(serde_json::Value::Null) => None,
            Some(given) => Some(serde_json::from_value::<Verdict>(given.clone()).map_err(
                |_| {
                    let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`verdict` is not one of {}", names.join(", "))
                },
            )?),
        };
        if v.get("note")
            .is_some_and(|n| !n.is_string() && !n.is_null())
        {
            return Err("`note` is not a string".into());
        }
        Ok(AckRequest {
            by: text("by"),
            verdict,
            note: text("note"),
        })
    }
}

/// `text` without control characters, at most `max` characters; `None` when blank.
pub(crate) fn plain_text(text: Option<String>, max: usize) -> Option<String> {
    text.map(|t| {
        t.chars()
            .filter(|c| !c.is_control())
            .take(max)
            .collect::<String>()
    })
    .filter(|t| !t.trim().is_empty())
}

/// How often the shared feed is read for other nodes' alerts and acknowledgements.
const FEED_POLL: Duration = Duration::from_millis(500);

/// Inbound messages waiting for their handler; beyond this they are dropped and counted.
const INBOUND_QUEUE: usize = 10_000;

/// Tuning of the service that the configuration does not carry.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Base of snapshot URLs: `{base}/api/alerts/{id}/snapshot`.
    pub snapshot_base_url: String,
    /// Also carry the JPEG in the message, base64 (subscribers that cannot fetch).
    pub inline_snapshots: bool,
    pub snapshot_ttl: Duration,
    /// How often due escalations are looked for.
    pub escalation_tick: Duration,
    /// Extra MQTT filters to subscribe to (sensor readings); their messages come out of
    /// [`Alerts::take_inbound`].
    pub subscriptions: Vec<String>,
}

impl AlertSettings {
    pub fn from_config(config: &Config) -> Self {
        let base = config
            .http
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.http.listen));
        Self {
            snapshot_base_url: base.trim_end_matches('/').to_owned(),
            inline_snapshots: config.alerts.inline_snapshots,
            snapshot_ttl: config.alerts.snapshot_ttl,
            escalation_tick: Duration::from_secs(1),
            subscriptions: Vec::new(),
        }
    }
}

/// The state of a camera as published, retained, on `{prefix}/cameras/{camera}/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraPhase {
    Connecting,
    Streaming,
    Reconnecting,
    Failed,
    Stopped,
}

impl CameraPhase {
    pub const ALL: [CameraPhase; 5] = [
        Self::Connecting,
        Self::Streaming,
        Self::Reconnecting,
        Self::Failed,
        Self::Stopped,
    ];

    /// As published: `connecting`, `streaming`, `reconnecting`, `failed`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Reconnecting => "reconnecting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// What `submit` did with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// In the outbox (unless `durable` is false: the store failed, and it is only in memory)
    /// and on its way to `topic`.
    Queued {
        id: String,
        topic: String,
        durable: bool,
    },
    /// Another alert for the same camera, hazard and zone is within its cooldown.
    Suppressed,
    /// Too many alerts wait for the broker (`[alerts] outbox_limit`): this one, of a
    /// severity refused at this backlog, is not sent. Logged and counted.
    Refused { waiting: usize },
}

/// Whether an alert of `severity` is refused with `waiting` alerts held and `limit` the
/// outbox limit: the least severe go first, so that what matters most still has room.
fn refused(severity: &str, waiting: usize, limit: usize) -> bool {
    let allowed = match severity {
        "critical" => limit + limit / 2,
        "major" => limit + limit / 4,
        _ => limit,
    };
    waiting >= allowed
}

/// A reading of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertStats {
    pub connected: bool,
    /// The broker took the subscriptions: operators' acknowledgements and sensor readings
    /// are heard (nothing keeps them for a node that is not yet subscribed).
    pub subscribed: bool,
    pub submitted: u64,
    pub suppressed: u64,
    pub published: u64,
    pub escalated: u64,
    pub acknowledged: u64,
    /// Sum over `acknowledged`; divide for the mean.
    pub time_to_ack_ms_total: u64,
    pub store_errors: u64,
    /// Waiting for a connection or a free window slot.
    pub queued: usize,
    /// Sent, PUBACK not yet received.
    pub in_flight: usize,
    /// Messages on the extra subscriptions dropped because their handler was behind.
    pub inbound_dropped: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Panics caught while handling one escalation or acknowledgement.
    pub panics: u64,
    /// Panics of the MQTT link, each answered by reconnecting
    /// (`sharpeyes_task_restarts_total{task="mqtt-link"}`).
    pub link_restarts: u64,
    /// Alerts the link holds (queued or in flight).
    pub alerts_waiting: usize,
    /// Alerts refused with the outbox full, by severity.
    pub refused: Vec<(String, u64)>,
}

/// A handle on the running service; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    store: Arc<dyn StateStore>,
    settings: AlertSettings,
    prefix: String,
    link: mpsc::UnboundedSender<LinkCommand>,
    stats: Arc<Stats>,
    inbound: std::sync::Mutex<Option<mpsc::Receiver<InboundMessage>>>,
    recent: crate::recent::Recent,
    /// The `[[dispatch]]` departments: the configuration's at start, replaced on a reload.
    departments: std::sync::RwLock<Arc<Vec<sharpeyes_config::Dispatch>>>,
    /// An adoption failed after Redis may have moved records into this node's outbox: the
    /// next one hands over the whole outbox again (duplicates, never a loss).
    adoption_unsure: std::sync::atomic::AtomicBool,
}

impl Alerts {
    /// Starts the MQTT link (replaying the outbox first), the escalation timer and the
    /// acknowledgement handler. The returned task ends after `shutdown` turns true and the
    /// link has drained for a bounded time.
    pub async fn start(
        config: Arc<Config>,
        store: Arc<dyn StateStore>,
        mqtt: MqttSettings,
        settings: AlertSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Alerts, JoinHandle<()>), Error> {
        let pending = store.outbox_pending().await.map_err(|e| {
            Error::new(
                ErrorKind::Encode,
                format!("cannot read the outbox ({}): {e}", store.describe()),
            )
        })?;
        if !pending.is_empty() {
            tracing::info!(alerts = pending.len(), store = %store.describe(), "replaying the outbox: alerts not yet acknowledged by the broker");
        }
        let stats = Arc::new(Stats::default());
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let (ack_tx, ack_rx) = mpsc::channel(1024);
        let prefix = mqtt.prefix.clone();
        let (inbound, inbound_rx) = if settings.subscriptions.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            let filters = settings.subscriptions.clone();
            (Some(Inbound { filters, tx }), Some(rx))
        };
        let link = Link::new(
            mqtt,
            store.clone(),
            stats.clone(),
            pending,
            link_rx,
            ack_tx,
            inbound,
        )?;
        let departments = std::sync::RwLock::new(Arc::new(config.dispatch.clone()));
        let alerts = Alerts {
            inner: Arc::new(Inner {
                departments,
                config,
                store,
                settings,
                prefix,
                link: link_tx,
                stats,
                inbound: std::sync::Mutex::new(inbound_rx),
                recent: crate::recent::Recent::new(),
                adoption_unsure: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        // The link's CPU is the publish stage's: encoding, outbox, MQTT.
        let link_task = tokio::spawn(Measured::new(Stage::Publish, link.run(shutdown.clone())));
        let escalations = tokio::spawn(alerts.clone().escalate_loop(shutdown.clone()));
        let feed = tokio::spawn(alerts.clone().feed_loop(shutdown.clone()));
        let acks = tokio::spawn(alerts.clone().ack_loop(ack_rx, shutdown));
        let task = tokio::spawn(async move {
            let _ = escalations.await;
            let _ = feed.await;
            let _ = acks.await;
            let _ = link_task.await;
        });
        Ok((alerts, task))
    }

    /// Whether as many alerts wait for the broker as `[alerts] outbox_limit` allows: the
    /// least severe are refused from here on.
    pub fn outbox_full(&self) -> bool {
        self.inner.stats.alerts_waiting.load(Ordering::Relaxed)
            >= self.inner.config.alerts.outbox_limit
    }

    pub fn stats(&self) -> AlertStats {
        let s = &self.inner.stats;
        AlertStats {
            connected: s.connected.load(Ordering::Relaxed),
            subscribed: s.subscribed.load(Ordering::Relaxed),
            submitted: s.submitted.load(Ordering::Relaxed),
            suppressed: s.suppressed.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            escalated: s.escalated.load(Ordering::Relaxed),
            acknowledged: s.acknowledged.load(Ordering::Relaxed),
            time_to_ack_ms_total: s.time_to_ack_ms_total.load(Ordering::Relaxed),
            store_errors: s.store_errors.load(Ordering::Relaxed),
            panics: s.panics.load(Ordering::Relaxed),
            link_restarts: s.link_restarts.load(Ordering::Relaxed),
            alerts_waiting: s.alerts_waiting.load(Ordering::Relaxed),
            refused: s
                .refused
                .lock()
                .map(|r| r.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default(),
            queued: s.queued.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            inbound_dropped: s.inbound_dropped.load(Ordering::Relaxed),
            dead_letters: s.dead_letters.load(Ordering::Relaxed),
        }
    }

    /// Waits up to `limit` for the broker to take this node's subscriptions; whether it did.
    pub async fn wait_subscribed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.inner.stats.subscribed.load(Ordering::Relaxed) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The alerts this node queued lately, newest first.
    pub fn recent(&self, filter: &crate::recent::AlertFilter) -> Vec<crate::recent::RecentAlert> {
        self.inner.recent.list(filter)
    }

    /// New alerts and acknowledgements as they happen.
    pub fn feed(&self) -> tokio::sync::broadcast::Receiver<crate::recent::FeedEvent> {
        self.inner.recent.subscribe()
    }

    /// Alerts queued so far by (hazard, severity, source).
    pub fn queued_by_kind(&self) -> Vec<((String, String, String), u64)> {
        self.inner
            .stats
            .by_kind
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Times to acknowledge recorded since the last call (for a histogram).
    pub fn take_ack_times(&self) -> Vec<Duration> {
        self.inner
            .stats
            .ack_times
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// The messages received on [`AlertSettings::subscriptions`]; `None` after the first call,
    /// or without subscriptions.
    pub fn take_inbound(&self) -> Option<mpsc::Receiver<InboundMessage>> {
        self.inner.inbound.lock().ok()?.take()
    }

    /// `{prefix}/deadletter/{kind}`: where refused input is reported.
    pub fn dead_letter_topic(&self, kind: &str) -> String {
        format!("{}/deadletter/{kind}", self.inner.prefix)
    }

    /// Reports refused input on `{prefix}/deadletter/{kind}` (QoS 1, not retained, not in the
    /// outbox): the topic it came on, why, and its first KiB.
    pub fn dead_letter(&self, kind: &str, topic: &str, reason: &str, payload: &[u8]) {
        const KEEP: usize = 1024;
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(KEEP)]).into_owned();
        let message = serde_json::json!({
            "topic": topic,
            "reason": reason,
            "bytes": payload.len(),
            "payload": shown,
            "truncated": payload.len() > KEEP,
            "node": self.node(),
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        self.inner
            .stats
            .dead_letters
            .fetch_add(1, Ordering::Relaxed);
        let _ = self.inner.link.send(LinkCommand::Notice {
            topic: self.dead_letter_topic(kind),
            payload: message.to_string(),
        });
    }

    /// Publishes a sensor's state (`online`, `offline`, `alarm`), retained, on
    /// `{prefix}/sensors/{sensor}/status`.
    pub fn sensor_status(&self, sensor: &str, state: &str, reason: Option<&str>) {
        let payload = serde_json::json!({
            "sensor": sensor,
            "state": state,
            "reason": reason,
            "node": self.node(),
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        let _ = self.inner.link.send(LinkCommand::Retain {
            topic: format!("{}/sensors/{sensor}/status", self.inner.prefix),
            payload: payload.to_string(),
        });
    }

    /// An alert issued by this system, as published (without an inline snapshot): from the
    /// recent list, else as the store kept it with its issue record (as long as it may be
    /// acknowledged). A stored record that is not this alert's (written into Redis by
    /// someone else) is not taken.
    pub(crate) async fn issued_alert(&self, alert_id: &str) -> Option<Alert> {
        if let Some(alert) = self.inner.recent.alert(alert_id) {
            return Some(alert);
        }
        let json = match self.inner.store.issued_alert(alert_id).await {
            Ok(json) => json?,
            Err(e) => {
                self.store_error("issued alert", &e);
                return None;
            }
        };
        match serde_json::from_str::<Alert>(&json) {
            Ok(alert) if alert.id == alert_id => Some(alert),
            _ => {
                tracing::warn!(alert = %alert_id, "the stored record of an issued alert is not that alert: ignored");
                None
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.store
    }

    /// Cooldown, snapshot, outbox, escalation schedule, then publish. See the module docs.
    pub async fn submit(
        &self,
        alert: Alert,
        snapshot: Option<&Snapshot>,
    ) -> Result<Submitted, Error> {
        self.submit_with_frame(alert, snapshot, None).await
    }

    /// As [`Self::submit`], and keeps a video alert's `clean_frame` (see [`Self::keep_frame`])
    /// before the alert can reach anyone: an operator who judges it the moment it arrives
    /// must find its frame kept, or the alert is lost for export.
    pub async fn submit_with_frame(
        &self,
        mut alert: Alert,
        snapshot: Option<&Snapshot>,
        clean_frame: Option<&[u8]>,
    ) -> Result<Submitted, Error> {
        let inner = &self.inner;
        let waiting = inner.stats.alerts_waiting.load(Ordering::Relaxed);
        if refused(&alert.severity, waiting, inner.config.alerts.outbox_limit) {
            let mut by_severity = inner
                .stats
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let count = by_severity.entry(alert.severity.clone()).or_default();
            *count += 1;
            // Loud, but not one line per alert in a flood.
            if count.is_power_of_two() {
                tracing::error!(hazard = %alert.hazard, severity = %alert.severity, waiting, refused = *count, "alert refused: the outbox is full (the broker is gone or too slow); less severe alerts are refused first");
            }
            return Ok(Submitted::Refused { waiting });
        }
        let hazard = inner.config.hazard(&alert.hazard);
        let cooldown = hazard.map_or(Duration::from_secs(300), |h| h.cooldown);
        let key = alert.cooldown_key();
        if !cooldown.is_zero() {
            match inner.store.cooldown_held(&key).await {
                Ok(true) => return Ok(self.suppressed(&key)),
                Ok(false) => {}
                // Better a possible duplicate than a missed alert.
                Err(e) => self.store_error("cooldown", &e),
            }
        }
        if let Some(snap) = snapshot {
            let inline = inner.settings.inline_snapshots;
            alert.snapshot = Some(self.store_snapshot(&alert.id, snap, inline).await);
        }
        if let Some(jpeg) = clean_frame {
            self.keep_frame(&alert.id, jpeg).await;
        }
        if alert.node.is_none() {
            alert.node = Some(self.node().to_owned());
        }
        let record = self.record(&mut alert)?;
        // Before it can reach anyone who might acknowledge it; kept without its inline
        // snapshot (the store has the snapshot itself).
        let kept = {
            let mut bare = alert.clone();
            bare.drop_inline_snapshot();
            serde_json::to_string(&bare).unwrap_or_default()
        };
        if let Err(e) = (inner.store)
            .record_issued(&alert.id, &alert.grid.id, &kept)
            .await
        {
            self.store_error("issued alert", &e);
        }
        // The escalation is scheduled with the alert exactly as published.
        let (topic, json) = (record.topic.clone(), record.payload.clone());
        let outbox_key = self.append(&record).await;
        // Claimed once durable: a process killed before this sent nothing and holds back
        // nothing. An alert that is not durable may never go out, so it claims nothing either.
        if !cooldown.is_zero() && outbox_key.is_some() {
            match inner.store.claim_cooldown(&key, cooldown).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another submit of the same camera, hazard and zone got there first.
                    if let Some(k) = outbox_key.as_deref().filter(|k| !k.is_empty()) {
                        if let Err(e) = inner.store.outbox_remove(k).await {
                            self.store_error("outbox removal of a repeat", &e);
                        }
                    }
                    return Ok(self.suppressed(&key));
                }
                Err(e) => self.store_error("cooldown", &e),
            }
        }
        let durable = outbox_key.is_some();
        self.hand_to_link(outbox_key.unwrap_or_default(), record);
        if let Some(h) = hazard.filter(|h| !h.escalate_after.is_zero()) {
            if alert.escalated(&inner.config).is_some() {
                let due = SystemTime::now() + h.escalate_after;
                if let Err(e) = inner.store.schedule_escalation(&alert.id, due, &json).await {
                    self.store_error("escalation schedule", &e);
                }
            }
        }
        inner.stats.submitted.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut by_kind) = inner.stats.by_kind.lock() {
            *by_kind
                .entry((
                    alert.hazard.clone(),
                    alert.severity.clone(),
                    alert.source.as_str().to_owned(),
                ))
                .or_default() += 1;
        }
        if let Some(event) = inner.recent.push(alert.clone()) {
            self.share(&event).await;
        }
        tracing::info!(alert = %alert.id, hazard = %alert.hazard, severity = %alert.severity, camera = alert.camera.as_ref().map_or("-", |c| c.id.as_str()), grid = %alert.grid.id, bytes = json.len(), "alert queued");
        self.dispatch(&alert, DispatchOn::Every).await;
        Ok(Submitted::Queued {
            id: alert.id,
            topic,
            durable,
        })
    }

    /// Publishes what nodes that are no longer `live` left in their outboxes (in a cluster:
    /// nodes that died with alerts the broker had not acknowledged), as this node's own.
    /// Returns how many; with several callers each record goes to one.
    pub async fn adopt_outboxes(&self, live: &[String]) -> Result<usize, Error> {
        let store = &self.inner.store;
        let unsure = &self.inner.adoption_unsure;
        if unsure.load(Ordering::Relaxed) {
            // What the lost answer moved here is in this node's outbox with the rest.
            for (key, record) in store.outbox_pending().await? {
                self.hand_to_link(key, record);
            }
            unsure.store(false, Ordering::Relaxed);
        }
        let adopted = store.outbox_adopt(live).await.inspect_err(|_| {
            unsure.store(true, Ordering::Relaxed);
        })?;
        let n = adopted.len();
        if n > 0 {
            tracing::warn!(
                alerts = n,
                "publishing alerts that nodes gone from the cluster left unsent"
            );
        }
        for (key, record) in adopted {
            self.hand_to_link(key, record);
        }
        Ok(n)
    }

    /// Publishes a camera's state, retained, whenever it changes.
    pub fn camera_status(&self, camera: &str, phase: CameraPhase, reason: Option<&str>) {
        let payload = serde_json::json!({
            "camera": camera,
            "state": phase,
            "reason": reason.map(sharpeyes_config::redact_url),
            "node": self.node(),
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        let _ = self.inner.link.send(LinkCommand::Retain {
            topic: format!("{}/cameras/{camera}/status", self.inner.prefix),
            payload: payload.to_string(),
        });
    }

    /// Clears a camera's retained status and health (an empty retained message each), for a
    /// camera removed from the configuration: a dashboard listing `cameras/+/status` would
    /// show it `stopped` for good. Only for removal: a camera handed to another node keeps
    /// its topics, which that node overwrites.
    pub fn forget_camera(&self, camera: &str) {
        for kind in ["status", "health"] {
            let _ = self.inner.link.send(LinkCommand::Retain {
                topic: format!("{}/cameras/{camera}/{kind}", self.inner.prefix),
                payload: String::new(),
            });
        }
    }

    /// Publishes a camera's current health (`sharpeyes.health/1` state: its problems, since
    /// when, its measures), retained on `{prefix}/cameras/{id}/health`.
    pub fn camera_health(&self, camera: &str, mut state: serde_json::Value) {
        if let Some(map) = state.as_object_mut() {
            map.insert("node".into(), self.node().into());
        }
        let _ = self.inner.link.send(LinkCommand::Retain {
            topic: format!("{}/cameras/{camera}/health", self.inner.prefix),
            payload: state.to_string(),
        });
    }

    /// A camera problem that started or ended: its snapshot stored as an alert's is (and
    /// served at the same URL), then into the outbox and to the broker like an alert, without
    /// cooldowns (the diagnosis holds each change for `[health] hold` already). Returns
    /// whether it is durable.
    pub async fn submit_health(
        &self,
        mut notice: HealthNotice,
        snapshot: Option<&Snapshot>,
    ) -> Result<bool, Error> {
        let inner = &self.inner;
        if let Some(snap) = snapshot {
            notice.snapshot = Some(self.store_snapshot(&notice.id, snap, false).await);
        }
        notice.node = self.node().to_owned();
        let payload = serde_json::to_string(&notice).map_err(|e| {
            Error::new(
                ErrorKind::Encode,
                format!("cannot encode health message {}: {e}", notice.id),
            )
        })?;
        let record = OutboxRecord {
            alert_id: notice.id.clone(),
            topic: notice.topic(&inner.prefix),
            payload,
        };
        tracing::info!(id = %notice.id, camera = %notice.camera.id, problem = %notice.problem, state = %notice.state, "camera health message queued");
        Ok(self.enqueue(record).await)
    }

    /// Records an acknowledgement of `alert_id` (from MQTT or the HTTP API): no further
    /// escalation. Returns the acknowledgement (the first one, when it was acknowledged
    /// before, with the verdict of this one when it carries one); `None` when no such alert
    /// was issued here, or `grid` (the acknowledging centre's, from its topic) does not
    /// contain the alert's, and then nothing is stored. `by` is kept to [`MAX_BY`]
    /// characters and `note` to [`MAX_NOTE`], without control characters.
    pub async fn acknowledge(
        &self,
        alert_id: &str,
        request: AckRequest,
        grid: Option<String>,
    ) -> Result<Option<Ack>, Error> {
        let Ok(ulid) = ulid::Ulid::from_string(alert_id) else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let detected = ulid.datetime();
        let by = plain_text(request.by, MAX_BY);
        let ack = Ack {
            alert_id: ulid.to_string(),
            by,
            at: humantime::format_rfc3339_millis(now).to_string(),
            time_to_ack_ms: now
                .duration_since(detected)
                .map_or(0, |d| d.as_millis() as u64),
            grid,
            verdict: request.verdict,
            // A note belongs to a verdict.
            note: request
                .verdict
                .and_then(|_| plain_text(request.note, MAX_NOTE)),
        };
        let outcome = self.inner.store.acknowledge(&ack).await.map_err(|e| {
            Error::store(format!(
                "cannot record the acknowledgement of {alert_id}: {e}"
            ))
        })?;
        if outcome == AckOutcome::OutsideGrid {
            tracing::warn!(
                alert = %ack.alert_id,
                grid = ack.grid.as_deref().unwrap_or("-"),
                "acknowledgement ignored: the alert is not in the acknowledging centre's grid"
            );
            return Ok(None);
        }
        if outcome == AckOutcome::Unknown {
            return Ok(None);
        }
        let recorded = match outcome {
            AckOutcome::First => {
                let stats = &self.inner.stats;
                stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                stats
                    .time_to_ack_ms_total
                    .fetch_add(ack.time_to_ack_ms, Ordering::Relaxed);
                if let Ok(mut times) = stats.ack_times.lock() {
                    // Bounded: a scraper that never comes does not grow it.
                    if times.len() < 10_000 {
                        times.push(Duration::from_millis(ack.time_to_ack_ms));
                    }
                }
                tracing::info!(alert = %ack.alert_id, by = ack.by.as_deref().unwrap_or("-"), verdict = ack.verdict.map_or("-", |v| v.as_str()), time_to_ack_ms = ack.time_to_ack_ms, "alert acknowledged");
                ack
            }
            AckOutcome::Judged => {
                // The first acknowledgement with this one's verdict, as the store now has it.
                let Some(judged) = self.inner.store.acknowledgement(alert_id).await? else {
                    return Ok(None);
                };
                tracing::info!(alert = %judged.alert_id, verdict = judged.verdict.map_or("-", |v| v.as_str()), "verdict recorded on an acknowledged alert");
                judged
            }
            _ => return self.inner.store.acknowledgement(alert_id).await,
        };
        // Read once for all three; also when it has left the recent list.
        let alert = match recorded.verdict {
            Some(_) => self.issued_alert(&recorded.alert_id).await,
            None => None,
        };
        self.count_verdict(&recorded, alert.as_ref());
        self.keep_judged(&recorded, alert.as_ref()).await;
        if let Some(event) = self.inner.recent.acknowledged(&recorded) {
            self.share(&event).await;
        }
        self.dispatch_confirmed(&recorded, alert.as_ref()).await;
        Ok(Some(recorded))
    }

    /// Keeps the confirming frame of video alert `alert_id` without boxes, as long as its
    /// snapshot: the picture its learning material is made of, should it be judged.
    pub async fn keep_frame(&self, alert_id: &str, jpeg: &[u8]) {
        let ttl = self.inner.settings.snapshot_ttl;
        if let Err(e) = self.inner.store.put_frame(alert_id, jpeg, ttl).await {
            self.store_error("frame", &e);
        }
    }

    /// Keeps the video alert `ack` judged, with its clean frame, for `[alerts] judged_ttl`.
    /// Recorded once in the cluster (the store's first or changed verdict), so kept once.
    async fn keep_judged(&self, ack: &Ack, alert: Option<&Alert>) {
        if ack.verdict.is_none() {
            return;
        }
        let Some(alert) = alert.cloned() else {
            tracing::warn!(alert = %ack.alert_id, "a judged alert is no longer kept (past its acknowledgement time): not kept for export");
            return;
        };
        // As `issued_alert` gives it: without an inline snapshot.
        if alert.camera.is_none() {
            return;
        }
        let store = &self.inner.store;
        let frame = store.frame(&alert.id).await.unwrap_or_else(|e| {
            self.store_error("frame", &e);
            None
        });
        let judged = crate::store::JudgedAlert {
            alert,
            ack: ack.clone(),
        };
        let ttl = self.inner.config.alerts.judged_ttl;
        if let Err(e) = store.keep_judged(&judged, frame.as_deref(), ttl).await {
            self.store_error("judged alert", &e);
        }
    }

    /// Sends the alert `ack` confirmed on to the departments that take it when confirmed.
    /// Recorded once in the cluster (the store's first or changed verdict), so sent once.
    async fn dispatch_confirmed(&self, ack: &Ack, alert: Option<&Alert>) {
        if ack.verdict != Some(Verdict::Confirmed) {
            return;
        }
        let Some(alert) = alert else {
            if !self.departments().is_empty() {
                tracing::warn!(alert = %ack.alert_id, "a confirmed alert is no longer kept (past its acknowledgement time): not dispatched");
            }
            return;
        };
        self.dispatch(alert, DispatchOn::Confirmed).await;
    }

    fn departments(&self) -> Arc<Vec<sharpeyes_config::Dispatch>> {
        let current = self.inner.departments.read();
        current.map_or_else(|e| e.into_inner().clone(), |d| d.clone())
    }

    /// Replaces the `[[dispatch]]` departments (a reload of the configuration): alerts
    /// raised or confirmed from now on go where the new ones say. `true` when they changed.
    pub fn set_departments(&self, departments: &[sharpeyes_config::Dispatch]) -> bool {
        let mut current = (self.inner.departments.write()).unwrap_or_else(|e| e.into_inner());
        if current.as_slice() == departments {
            return false;
        }
        *current = Arc::new(departments.to_vec());
        let names: Vec<&str> = departments.iter().map(|d| d.name.as_str()).collect();
        tracing::info!(departments = ?names, "dispatch departments changed");
        true
    }

    /// Republishes `alert` (same id, same JSON) to each `[[dispatch]]` department that takes
    /// its hazard in its grid `when`, through the outbox like any alert.
    async fn dispatch(&self, alert: &Alert, when: DispatchOn) {
        let inner = &self.inner;
        let all = self.departments();
        let departments: Vec<&sharpeyes_config::Dispatch> = all
            .iter()
            .filter(|d| {
                d.on == when
                    && d.hazards.contains(&alert.hazard)
                    && d.grid
                        .as_ref()
                        .is_none_or(|g| crate::store::grid_within(&alert.grid.id, g))
            })
            .collect();
        if departments.is_empty() {
            return;
        }
        // Encoded once, as on the alert topic; each department gets it under its own topic.
        let Ok(record) = self.record(&mut alert.clone()) else {
            return;
        };
        let own = format!("{}/alerts", inner.prefix);
        let levels = record.topic.strip_prefix(&own).unwrap_or_default();
        let mut to = Vec::new();
        for d in departments {
            let copy = OutboxRecord {
                topic: format!("{}{levels}", d.topic),
                ..record.clone()
            };
            let durable = self.enqueue(copy).await;
            tracing::info!(alert = %alert.id, department = %d.name, durable, "alert dispatched");
            if let Ok(mut counts) = inner.stats.dispatched.lock() {
                *counts
                    .entry((d.name.clone(), alert.hazard.clone()))
                    .or_default() += 1;
            }
            to.push(d.name.clone());
        }
        if let Some(event) = inner.recent.dispatched(&alert.id, &to) {
            self.share(&event).await;
        }
    }

    /// Counts `ack`'s verdict by the alert's hazard and camera (`unknown` once the alert is
    /// no longer kept).
    fn count_verdict(&self, ack: &Ack, alert: Option<&Alert>) {
        let Some(verdict) = ack.verdict else { return };
        let (hazard, camera) = match alert {
            Some(a) => {
                let camera = a
                    .camera
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |c| c.id.clone());
                (a.hazard.clone(), camera)
            }
            None => ("unknown".into(), "unknown".into()),
        };
        if let Ok(mut counts) = self.inner.stats.verdicts.lock() {
            *counts
                .entry((hazard, camera, verdict.as_str().to_owned()))
                .or_default() += 1;
        }
    }

    /// Alerts dispatched from this node so far, by (department, hazard).
    pub fn dispatch_counts(&self) -> Vec<((String, String), u64)> {
        (self.inner.stats.dispatched.lock())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Verdicts given on this node so far, by (hazard, camera, verdict).
    pub fn verdict_counts(&self) -> Vec<((String, String, String), u64)> {
        self.inner
            .stats
            .verdicts
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    fn node(&self) -> &str {
        &self.inner.config.node.id
    }

    /// Onto the feed every node reads (with Redis), for their pages and lists.
    async fn share(&self, event: &crate::recent::FeedEvent) {
        let Ok(json) = serde_json::to_string(event) else {
            return;
        };
        if let Err(e) = self.inner.store.feed_push(&json).await {
            tracing::debug!("the shared feed did not take an event: {e}");
        }
    }

    /// Reads the shared feed into this node's list and live feed: first the newest
    /// [`KEEP`](crate::recent::KEEP) (a node that starts shows the county's history), then what
    /// comes after, every [`FEED_POLL`].
    async fn feed_loop(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(FEED_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut after: Option<String> = None;
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = tick.tick() => {}
            }
            let events = match self
                .inner
                .store
                .feed_read(after.as_deref(), crate::recent::KEEP)
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::debug!("cannot read the shared feed: {e}");
                    continue;
                }
            };
            for (key, json) in events {
                after = Some(key);
                match serde_json::from_str::<crate::recent::FeedEvent>(&json) {
                    Ok(event) => self.inner.recent.take(event),
                    Err(e) => {
                        tracing::warn!("an event of the shared feed is unreadable ({e}); skipped")
                    }
                }
            }
        }
    }

    fn store_error(&self, what: &str, e: &Error) {
        self.inner
            .stats
            .store_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(store = %self.inner.store.describe(), "{what}: {e}");
    }

    /// The outbox record of `alert`, dropping an inline snapshot that would not fit a packet.
    fn record(&self, alert: &mut Alert) -> Result<OutboxRecord, Error> {
        let encode = |a: &Alert| {
            serde_json::to_string(a).map_err(|e| {
                Error::new(
                    ErrorKind::Encode,
                    format!("cannot encode alert {}: {e}", a.id),
                )
            })
        };
        let mut payload = encode(alert)?;
        // Topic and header need a little room besides the payload.
        if payload.len() > MAX_PACKET - 1024 && alert.drop_inline_snapshot() {
            tracing::warn!(alert = %alert.id, "inline snapshot dropped: the message would exceed {MAX_PACKET} bytes; the URL stays");
            payload = encode(alert)?;
        }
        Ok(OutboxRecord {
            alert_id: alert.id.clone(),
            topic: alert.topic(&self.inner.prefix),
            payload,
        })
    }

    fn suppressed(&self, key: &str) -> Submitted {
        self.inner.stats.suppressed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(key = %key, "alert suppressed: within its cooldown");
        Submitted::Suppressed
    }

    /// Keeps `snap` under message `id` (served at `/api/alerts/{id}/snapshot`) and says where
    /// it is; `inline`: the JPEG itself too. A store that fails is logged: the reference
    /// still goes out.
    async fn store_snapshot(&self, id: &str, snap: &Snapshot, inline: bool) -> SnapshotRef {
        let inner = &self.inner;
        if let Err(e) = inner
            .store
            .put_snapshot(id, &snap.jpeg, inner.settings.snapshot_ttl)
            .await
        {
            self.store_error("snapshot", &e);
        }
        SnapshotRef {
            url: format!(
                "{}/api/alerts/{id}/snapshot",
                inner.settings.snapshot_base_url
            ),
            sha256: snap.sha256.clone(),
            size: snap.jpeg.len(),
            width: snap.width,
            height: snap.height,
            inline_base64: inline
                .then(|| base64::engine::general_purpose::STANDARD.encode(&snap.jpeg)),
        }
    }

    /// Into the outbox: its key, or `None` when the store failed and the alert can only be
    /// published from memory.
    async fn append(&self, record: &OutboxRecord) -> Option<String> {
        match self.inner.store.outbox_append(record).await {
            Ok(key) => Some(key),
            Err(e) => {
                self.store_error("outbox", &e);
                None
            }
        }
    }

    /// To the link, which publishes it and then removes `key` (when not empty) from the outbox.
    fn hand_to_link(&self, key: String, record: OutboxRecord) {
        // Counted until the broker acknowledges it (the link counts it down).
        self.inner
            .stats
            .alerts_waiting
            .fetch_add(1, Ordering::Relaxed);
        let _ = self.inner.link.send(LinkCommand::Publish { key, record });
    }

    /// Into the outbox, then to the link. `false` when the store failed and the alert is only
    /// in memory (published all the same).
    async fn enqueue(&self, record: OutboxRecord) -> bool {
        let key = self.append(&record).await;
        let durable = key.is_some();
        self.hand_to_link(key.unwrap_or_default(), record);
        durable
    }

    async fn escalate_loop(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.settings.escalation_tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = tick.tick() => {}
            }
            let due = match self
                .inner
                .store
                .take_due_escalations(SystemTime::now(), 100)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    self.store_error("escalations", &e);
                    continue;
                }
            };
            for json in due {
                guarded(&self.inner.stats, "escalation", self.escalate(&json)).await;
            }
        }
    }

    async fn escalate(&self, json: &str) {
        let inner = &self.inner;
        let alert: Alert = match serde_json::from_str(json) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("a scheduled escalation is unreadable ({e}); skipped");
                return;
            }
        };
        match inner.store.acknowledgement(&alert.id).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            // Unknown: escalate; an extra message beats a missed one.
            Err(e) => self.store_error("acknowledgement lookup", &e),
        }
        let Some(mut up) = alert.escalated(&inner.config) else {
            return;
        };
        let record = match self.record(&mut up) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        tracing::warn!(alert = %up.id, level = up.escalation_level, topic = %record.topic, "alert not acknowledged in time: escalated");
        inner.stats.escalated.fetch_add(1, Ordering::Relaxed);
        let json = record.payload.clone();
        self.enqueue(record).await;
        let after = inner
            .config
            .hazard(&up.hazard)
            .map_or(Duration::ZERO, |h| h.escalate_after);
        if !after.is_zero() && up.escalated(&inner.config).is_some() {
            let due = SystemTime::now() + after;
            if let Err(e) = inner.store.schedule_escalation(&up.id, due, &json).await {
                self.store_error("escalation schedule", &e);
            }
        }
    }

    async fn ack_loop(
        self,
        mut acks: mpsc::Receiver<IncomingAck>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let ack = tokio::select! {
                _ = stopped(&mut shutdown) => return,
                ack = acks.recv() => match ack {
                    Some(a) => a,
                    None => return,
                },
            };
            if ack.payload.len() > MAX_ACK_BYTES {
                tracing::warn!(
                    bytes = ack.payload.len(),
                    "acknowledgement ignored: over {MAX_ACK_BYTES} bytes"
                );
                continue;
            }
            let request = match AckRequest::from_payload(&ack.payload) {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(
                        topic = %format!("{}/acks/{}", self.inner.prefix, ack.alert_id),
                        "acknowledgement ignored: {why}"
                    );
                    continue;
                }
            };
            let outcome = guarded(
                &self.inner.stats,
                "acknowledgement",
                self.acknowledge(&ack.alert_id, request, ack.grid),
            )
            .await;
            let Some(outcome) = outcome else { continue };
            match outcome {
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(
                    topic = %format!("{}/acks/{}", self.inner.prefix, ack.alert_id),
                    "acknowledgement ignored: no alert of that id was issued here"
                ),
                Err(e) => tracing::error!("{e}"),
            }
        }
    }
}
