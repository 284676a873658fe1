//! Where alert state lives: cooldowns, the outbox, escalation timers, acknowledgements and
//! snapshots. One trait, two homes: Redis (shared by nodes, survives restarts) and memory
//! with a disk spool (the embedded default: the outbox and snapshots still survive a restart).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sharpeyes_config::Config;

use crate::error::Error;

mod fallback;
mod memory;
mod redis_store;

pub use fallback::FallbackStore;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// What every store call returns: boxed, so `Arc<dyn StateStore>` works without a macro crate.
/// A failed call's error is of kind [`ErrorKind::Store`](crate::ErrorKind::Store), naming
/// the store (never its credentials) and the operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// One MQTT message waiting in the outbox for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub alert_id: String,
    pub topic: String,
    /// The alert JSON, exactly as published.
    pub payload: String,
}

/// An operator's judgement of an alert, given with its acknowledgement or after it: what
/// tells a county how often a camera's alerts are real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A real hazard.
    Confirmed,
    /// Nothing there (a sunset on glass, steam).
    FalseAlarm,
    /// Real, and dealt with (the fire brigade came).
    Handled,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Confirmed, Verdict::FalseAlarm, Verdict::Handled];

    /// As in messages and the `verdict` label: `confirmed`, `false-alarm`, `handled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::FalseAlarm => "false-alarm",
            Verdict::Handled => "handled",
        }
    }
}

/// The longest `note` of a verdict, in characters: a remark, not a report.
pub const MAX_NOTE: usize = 200;

/// An operator's acknowledgement of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub alert_id: String,
    /// Who acknowledged, when the acknowledgement said so.
    pub by: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// From detection (the id's timestamp) to the acknowledgement.
    pub time_to_ack_ms: u64,
    /// The grid whose centre acknowledged it, for an acknowledgement on
    /// `{prefix}/acks/{grid}/{alert_id}`: the topic level the broker's ACL ties to the
    /// centre's account (`pattern write {prefix}/acks/%u/#`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    /// The operator's judgement: with the first acknowledgement, or a later one that
    /// replaces it (first "confirmed", then "handled").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// A few words with the verdict, at most [`MAX_NOTE`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Ack {
    /// Whether `other` judges the alert as this one does (the same verdict and note): a
    /// repeat that changes nothing, as when every node hears the same acknowledgement.
    pub(crate) fn judges_alike(&self, other: &Ack) -> bool {
        self.verdict == other.verdict && self.note == other.note
    }
}

/// What became of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded: the first for an alert this system issued.
    First,
    /// The alert was acknowledged before; nothing changed (no verdict now, or the same).
    Again,
    /// The alert was acknowledged before, and this acknowledgement's verdict (and note)
    /// replaced the recorded ones; who acknowledged first, and when, stay.
    Judged,
    /// No alert of that id was issued here (or it is older than acknowledgements are kept):
    /// nothing is stored.
    Unknown,
    /// The acknowledging centre's grid ([`Ack::grid`]) does not contain the alert's grid:
    /// nothing is stored.
    OutsideGrid,
}

/// A region of one camera where one hazard is not alerted: an operator's answer to a false
/// alarm there (a sunset on the same window every evening). Shared by the cluster with Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    /// A ULID.
    pub id: String,
    pub camera: String,
    pub hazard: String,
    /// A polygon in normalised frame coordinates (x right, y down, 0..=1).
    pub region: Vec<[f64; 2]>,
    /// The false alarm it was made from.
    pub alert_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// An alert an operator judged, kept as learning material: the alert as published and the
/// acknowledgement with its verdict. `sharpeyes export` writes these out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedAlert {
    pub alert: crate::Alert,
    pub ack: Ack,
}

/// Whether grid `inner` is `outer` or below it: grid ids are dashed paths
/// (`321322-001-003` is under `321322-001`).
pub fn grid_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// Shared alert state. Every call is one round trip at most; none holds a lock across awaits.
pub trait StateStore: Send + Sync {
    /// For logs and errors: kind and address, never credentials.
    fn describe(&self) -> String;

    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Whether someone holds the cooldown `key`: a look before the work of an alert, which
    /// [`claim_cooldown`](Self::claim_cooldown) settles once the alert is durable.
    fn cooldown_held<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Takes the cooldown `key` for `ttl`: `true` when nobody held it, so the caller alerts.
    fn claim_cooldown<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool>;

    /// Durably appends `record`; returns its outbox key. Durable means: written before this
    /// returns, so a killed process replays it.
    fn outbox_append<'a>(&'a self, record: &'a OutboxRecord) -> StoreFuture<'a, String>;

    /// Every record not yet removed, oldest first, with its key.
    fn outbox_pending(&self) -> StoreFuture<'_, Vec<(String, OutboxRecord)>>;

    fn outbox_remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    fn outbox_len(&self) -> StoreFuture<'_, usize>;

    /// Takes over the outboxes of nodes not in `live` (in a cluster: nodes whose membership
    /// expired): their records move into this node's outbox and are returned with their new
    /// keys, for this node to publish. Each record goes to exactly one caller. Only a shared
    /// store holds other nodes' outboxes; the others answer nothing.
    fn outbox_adopt<'a>(
        &'a self,
        live: &'a [String],
    ) -> StoreFuture<'a, Vec<(String, OutboxRecord)>>;

    /// Adds `event` (a [`FeedEvent`](crate::FeedEvent) as JSON) to the feed every node
    /// reads, capped at the newest [`FEED_KEEP`]. Only a shared store has one; the others
    /// keep nothing.
    fn feed_push<'a>(&'a self, event: &'a str) -> StoreFuture<'a, ()>;

    /// Events of the shared feed after `after` (a key this returned), oldest first, at most
    /// `limit`, with their keys; with no `after`, the newest `limit`.
    fn feed_read<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, String)>>;

    /// (Re)schedules the escalation of `alert_id` at `due`; `alert_json` is the alert as last
    /// published. One schedule per alert id: a later call replaces the earlier.
    fn schedule_escalation<'a>(
        &'a self,
        alert_id: &'a str,
        due: SystemTime,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()>;

    /// Removes and returns up to `limit` escalations due by `now`. With several nodes, each due
    /// escalation goes to exactly one caller.
    fn take_due_escalations(&self, now: SystemTime, limit: usize) -> StoreFuture<'_, Vec<String>>;

    /// Notes that this system issued `alert_id` in `grid`: only issued alerts may be
    /// acknowledged, by centres of their grid. Kept as long as acknowledgements are
    /// ([`ACK_TTL`]), with the alert as published (`alert_json`, without an inline
    /// snapshot): a verdict given after the alert has left the recent list still finds it,
    /// to keep it for export, dispatch it or mute its region.
    fn record_issued<'a>(
        &'a self,
        alert_id: &'a str,
        grid: &'a str,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()>;

    /// The alert JSON `record_issued` kept for `alert_id`, while it may be acknowledged.
    fn issued_alert<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Records `ack` if its alert was issued, within `ack.grid` when that is set, and not yet
    /// acknowledged, in one step.
    fn acknowledge<'a>(&'a self, ack: &'a Ack) -> StoreFuture<'a, AckOutcome>;

    fn acknowledgement<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Ack>>;

    fn put_snapshot<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    fn snapshot<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Keeps the confirming frame of `alert_id` without boxes (the snapshot has them drawn)
    /// for `ttl`: what the alert's learning material is made of once it is judged.
    fn put_frame<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    fn frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Keeps `judged` with its clean frame for `ttl`, replacing what an earlier verdict on
    /// the same alert kept; judged alerts detected more than `ttl` ago go.
    fn keep_judged<'a>(
        &'a self,
        judged: &'a JudgedAlert,
        frame: Option<&'a [u8]>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Judged alerts detected at `since` or later, oldest first.
    fn judged_since(&self, since: SystemTime) -> StoreFuture<'_, Vec<JudgedAlert>>;

    /// The clean frame kept with a judged alert.
    fn judged_frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Adds or replaces (by id) a muted region. Kept until removed, across restarts. With
    /// Redis, only in Redis: a mute the other nodes would not see fails instead.
    fn put_mute<'a>(&'a self, mute: &'a Mute) -> StoreFuture<'a, ()>;

    /// Removes a muted region: `false` when none has that id.
    fn remove_mute<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Every muted region, by id.
    fn mutes(&self) -> StoreFuture<'_, Vec<Mute>>;

    /// Records that an operator accepted `camera`'s view as it is now, at `at_ms` (ms since
    /// the epoch): whichever node runs the camera learns its view again. With Redis, only in
    /// Redis, as mutes are. Not spooled: a node that starts learns every view afresh.
    fn accept_view<'a>(&'a self, camera: &'a str, at_ms: u64) -> StoreFuture<'a, ()>;

    /// When each camera's view was last accepted (camera id -> ms since the epoch).
    fn accepted_views(&self) -> StoreFuture<'_, BTreeMap<String, u64>>;
}

/// Events the shared feed keeps: as many alerts as a node's list shows, with their
/// acknowledgements.
pub const FEED_KEEP: usize = 2 * crate::recent::KEEP;

/// How long acknowledgements are kept: long enough to answer "was it acknowledged" for any
/// alert an operator still looks at.
pub const ACK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The store the configuration asks for: Redis when `[redis]` is set, with the local spool
/// behind it for when Redis does not answer ([`FallbackStore`]); else memory with the outbox,
/// escalations and snapshots spooled under `[node] data_dir`. Fails on a configuration
/// error (a secret, a TLS file), never because Redis is down.
pub async fn open_store(config: &Config) -> Result<Arc<dyn StateStore>, Error> {
    let dir = config.node.data_dir.join("spool");
    match &config.redis {
        Some(redis) => {
            let client = redis_store::RedisClient::new(redis, &config.node.id)?;
            let local = MemoryStore::with_spool(&dir)?;
            Ok(FallbackStore::open(client, local).await)
        }
        None => {
            let store = MemoryStore::with_spool(&dir)?;
            Ok(Arc::new(store))
        }
    }
}

/// When alert `id` was detected, from its ULID: 0 for an id that is not one.
fn detected_ms(id: &str) -> u64 {
    ulid::Ulid::from_string(id).map_or(0, |u| u.timestamp_ms())
}

pub(crate) fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
