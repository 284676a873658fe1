//! Redis with the local disk spool behind it: one Redis outage, at start-up or at run time,
//! never stops alerting.
//!
//! Every call goes to Redis while it answers. When it does not (not reachable at start-up,
//! or a call fails), the call goes to the spool instead ([`MemoryStore::with_spool`]): the
//! outbox and escalations stay on disk, cooldowns and acknowledgements in memory. Outbox keys
//! say where their record is (`r:` or `l:`), so a record is removed where it was written.
//! Nothing is copied back: the link publishes the spooled outbox and removes it, and due
//! escalations are taken from both, so the spool drains by itself once Redis is back.
//! While Redis cannot be reached at start-up, a task tries again every few seconds.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use super::redis_store::RedisClient;
use super::{
    Ack, AckOutcome, JudgedAlert, MemoryStore, Mute, OutboxRecord, RedisStore, StateStore,
    StoreFuture,
};
use crate::error::Error;

/// How often Redis is tried again while it could not be reached at start-up.
const RETRY: Duration = Duration::from_secs(2);
/// After a failed call, Redis is left alone this long: each call to a Redis that is down can
/// take seconds, and an alert makes several.
const REST: Duration = Duration::from_secs(5);
/// While Redis rests, it is pinged this often, so that the store uses it again as soon as it
/// is back: the cluster's leases already do, and a camera moved to this node must find the
/// cooldowns in Redis, not the spool's.
const PROBE: Duration = Duration::from_millis(500);

pub struct FallbackStore {
    redis: RwLock<Option<Arc<RedisStore>>>,
    local: MemoryStore,
    shown: String,
    /// Whether the last Redis call failed: the switch is logged once each way.
    down: std::sync::atomic::AtomicBool,
    /// Calls go to the spool until then, after a failure.
    resting_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl FallbackStore {
    /// Redis as `client` says, the spool in `local`. A configuration error (a secret, a TLS
    /// file) was found by `client` already; an unreachable Redis is not an error here.
    pub(crate) async fn open(client: RedisClient, local: MemoryStore) -> Arc<Self> {
        let shown = client.shown().to_owned();
        let first = client.connect().await;
        let store = Arc::new(Self {
            redis: RwLock::new(None),
            local,
            shown,
            down: std::sync::atomic::AtomicBool::new(false),
            resting_until: std::sync::Mutex::new(None),
        });
        match first {
            Ok(redis) => store.set_redis(redis),
            Err(e) => {
                store.went_down(&e);
                tokio::spawn(reconnect(Arc::downgrade(&store), client));
            }
        }
        tokio::spawn(probe(Arc::downgrade(&store)));
        store
    }

    /// Whether calls go to the spool for now after a failure.
    fn resting(&self) -> bool {
        self.resting_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn set_redis(&self, redis: RedisStore) {
        *self.redis.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(redis));
    }

    /// Redis, unless it is not connected or rests after a failure.
    fn redis(&self) -> Option<Arc<RedisStore>> {
        if self.resting() {
            None
        } else {
            self.connected()
        }
    }

    /// Redis when connected, resting or not: for removing what is already there.
    fn connected(&self) -> Option<Arc<RedisStore>> {
        self.redis.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn went_down(&self, e: &Error) {
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now() + REST);
        if !self.down.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                "Redis cannot be used ({e}); alerting goes on with the local spool until it answers again"
            );
        }
    }

    fn came_back(&self) {
        *self.resting_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.down.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(redis = %self.shown, "Redis answers again; the local spool drains into use");
        }
    }

    /// What a Redis call answered: the value, or `None` after noting that Redis is down. An
    /// answer means it is up again.
    fn answered<T>(&self, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(value) => {
                self.came_back();
                Some(value)
            }
            Err(e) => {
                self.went_down(&e);
                None
            }
        }
    }

    /// Redis for what only makes sense shared (`what`: muted regions, accepted views: one
    /// node's spool would reach that node's cameras only), or an error that says to try
    /// again.
    fn shared_only(&self, what: &str) -> Result<Arc<RedisStore>, Error> {
        self.connected().ok_or_else(|| {
            Error::store(format!(
                "Redis {} does not answer; {what} are kept there for every node: try again when it does",
                self.shown
            ))
        })
    }

    /// What `call` finds in Redis when it is there, answers and has it; else in the spool
    /// (written there while Redis was down).
    async fn found_either<'a, T>(
        &'a self,
        call: impl Fn(&'a dyn StateStore) -> StoreFuture<'a, Option<T>>,
        redis: Option<&'a RedisStore>,
    ) -> Result<Option<T>, Error> {
        if let Some(redis) = redis {
            if let Some(Some(found)) = self.answered(call(redis).await) {
                return Ok(Some(found));
            }
        }
        call(&self.local).await
    }

    /// `call` on Redis when it is there and answers, else on the spool.
    async fn either<'a, T>(
        &'a self,
        call: impl Fn(&'a dyn StateStore) -> StoreFuture<'a, T>,
        redis: Option<&'a RedisStore>,
    ) -> Result<T, Error> {
        if let Some(redis) = redis {
            if let Some(value) = self.answered(call(redis).await) {
                return Ok(value);
            }
        }
        call(&self.local).await
    }
}

/// Tries Redis every [`RETRY`] until it answers, or the store is gone.
async fn reconnect(store: Weak<FallbackStore>, client: RedisClient) {
    loop {
        tokio::time::sleep(RETRY).await;
        let Some(store) = store.upgrade() else { return };
        if let Ok(redis) = client.connect().await {
            store.set_redis(redis);
            store.came_back();
            return;
        }
    }
}

/// Ends the rest after a failure as soon as Redis answers a ping; returns when the store is
/// gone.
async fn probe(store: Weak<FallbackStore>) {
    loop {
        tokio::time::sleep(PROBE).await;
        let Some(store) = store.upgrade() else { return };
        if !store.resting() {
            continue;
        }
        if let Some(redis) = store.connected() {
            if let Ok(Ok(())) = tokio::time::timeout(PROBE, redis.ping()).await {
                store.came_back();
            }
        }
    }
}

const IN_REDIS: &str = "r:";
const IN_SPOOL: &str = "l:";

impl StateStore for FallbackStore {
    fn describe(&self) -> String {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            format!("redis {} (down: on the local spool)", self.shown)
        } else {
            format!("redis {}", self.shown)
        }
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match self.connected() {
                Some(redis) => {
                    let answer = redis.ping().await;
                    match &answer {
                        Ok(()) => self.came_back(),
                        Err(e) => self.went_down(e),
                    }
                    answer
                }
                None => Err(Error::store(format!(
                    "Redis {} has not answered since the start; alerts are kept on the local spool",
                    self.shown
                ))),
            }
        })
    }

    // The cooldowns this node takes in Redis are kept in memory too, so that a hazard that
    // goes on through a Redis outage is not alerted again from the spool. The memory copy
    // only ever holds back: Redis, when it answers, decides for the whole cluster.
    fn cooldown_held<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if self.local.cooldown_held(key).await? {
                return Ok(true);
            }
            let redis = self.redis();
            self.either(|s| s.cooldown_held(key), redis.as_deref())
                .await
        })
    }

    fn claim_cooldown<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if let Some(redis) = self.redis() {
                if let Some(claimed) = self.answered(redis.claim_cooldown(key, ttl).await) {
                    if claimed {
                        self.local.claim_cooldown(key, ttl).await?;
                    }
                    return Ok(claimed);
                }
            }
            self.local.claim_cooldown(key, ttl).await
        })
    }

    fn outbox_append<'a>(&'a self, record: &'a OutboxRecord) -> StoreFuture<'a, String> {
        Box::pin(async move {
            if let Some(redis) = self.redis() {
                if let Some(key) = self.answered(redis.outbox_append(record).await) {
                    return Ok(format!("{IN_REDIS}{key}"));
                }
            }
            let key = self.local.outbox_append(record).await?;
            Ok(format!("{IN_SPOOL}{key}"))
        })
    }

    fn outbox_pending(&self) -> StoreFuture<'_, Vec<(String, OutboxRecord)>> {
        Box::pin(async move {
            let mut pending: Vec<(String, OutboxRecord)> = self
                .local
                .outbox_pending()
                .await?
                .into_iter()
                .map(|(k, r)| (format!("{IN_SPOOL}{k}"), r))
                .collect();
            // Unreadable now, they stay in Redis for the next start.
            if let Some(redis) = self.redis() {
                if let Some(records) = self.answered(redis.outbox_pending().await) {
                    pending.extend(
                        records
                            .into_iter()
                            .map(|(k, r)| (format!("{IN_REDIS}{k}"), r)),
                    );
                }
            }
            Ok(pending)
        })
    }

    fn outbox_remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Some(key) = key.strip_prefix(IN_SPOOL) {
                return self.local.outbox_remove(key).await;
            }
            let key = key.strip_prefix(IN_REDIS).unwrap_or(key);
            match self.connected() {
                Some(redis) => redis.outbox_remove(key).await,
                None => Err(Error::store(format!(
                    "Redis {} is not connected: outbox entry {key} stays",
                    self.shown
                ))),
            }
        })
    }

    fn outbox_len(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let mut len = self.local.outbox_len().await?;
            if let Some(redis) = self.redis() {
                len += self.answered(redis.outbox_len().await).unwrap_or(0);
            }
            Ok(len)
        })
    }

    fn outbox_adopt<'a>(
        &'a self,
        live: &'a [String],
    ) -> StoreFuture<'a, Vec<(String, OutboxRecord)>> {
        Box::pin(async move {
            // The spool is this node's alone; other nodes' outboxes are only in Redis.
            let Some(redis) = self.redis() else {
                return Ok(Vec::new());
            };
            let adopted = self.answered(redis.outbox_adopt(live).await);
            Ok(adopted
                .unwrap_or_default()
                .into_iter()
                .map(|(k, r)| (format!("{IN_REDIS}{k}"), r))
                .collect())
        })
    }

    fn feed_push<'a>(&'a self, event: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Without Redis the other nodes do not see it; this node's list has it.
            if let Some(redis) = self.redis() {
                self.answered(redis.feed_push(event).await);
            }
            Ok(())
        })
    }

    fn feed_read<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, String)>> {
        Box::pin(async move {
            let Some(redis) = self.redis() else {
                return Ok(Vec::new());
            };
            Ok(self
                .answered(redis.feed_read(after, limit).await)
                .unwrap_or_default())
        })
    }

    fn schedule_escalation<'a>(
        &'a self,
        alert_id: &'a str,
        due: SystemTime,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let redis = self.redis();
            self.either(
                |s| s.schedule_escalation(alert_id, due, alert_json),
                redis.as_deref(),
            )
            .await
        })
    }

    fn take_due_escalations(&self, now: SystemTime, limit: usize) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut due = self.local.take_due_escalations(now, limit).await?;
            if let Some(redis) = self.redis() {
                let left = limit.saturating_sub(due.len());
                if left > 0 {
                    let more = self.answered(redis.take_due_escalations(now, left).await);
                    due.extend(more.unwrap_or_default());
                }
            }
            Ok(due)
        })
    }

    fn record_issued<'a>(
        &'a self,
        alert_id: &'a str,
        grid: &'a str,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // In both: an acknowledgement is accepted wherever it is looked up.
            self.local.record_issued(alert_id, grid, alert_json).await?;
            if let Some(redis) = self.redis() {
                self.answered(redis.record_issued(alert_id, grid, alert_json).await);
            }
            Ok(())
        })
    }

    fn issued_alert<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let redis = self.redis();
            self.found_either(|s| s.issued_alert(alert_id), redis.as_deref())
                .await
        })
    }

    fn acknowledge<'a>(&'a self, ack: &'a Ack) -> StoreFuture<'a, AckOutcome> {
        Box::pin(async move {
            if let Some(redis) = self.redis() {
                match self.answered(redis.acknowledge(ack).await) {
                    // Issued while Redis was down: only the spool knows it.
                    None | Some(AckOutcome::Unknown) => {}
                    Some(outcome) => return Ok(outcome),
                }
            }
            self.local.acknowledge(ack).await
        })
    }

    fn acknowledgement<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Ack>> {
        Box::pin(async move {
            let redis = self.redis();
            self.found_either(|s| s.acknowledgement(alert_id), redis.as_deref())
                .await
        })
    }

    fn put_snapshot<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let redis = self.redis();
            self.either(|s| s.put_snapshot(alert_id, jpeg, ttl), redis.as_deref())
                .await
        })
    }

    fn put_frame<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let redis = self.redis();
            self.either(|s| s.put_frame(alert_id, jpeg, ttl), redis.as_deref())
                .await
        })
    }

    fn frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let redis = self.redis();
            self.found_either(|s| s.frame(alert_id), redis.as_deref())
                .await
        })
    }

    fn keep_judged<'a>(
        &'a self,
        judged: &'a JudgedAlert,
        frame: Option<&'a [u8]>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let redis = self.redis();
            self.either(|s| s.keep_judged(judged, frame, ttl), redis.as_deref())
                .await
        })
    }

    fn judged_since(&self, since: SystemTime) -> StoreFuture<'_, Vec<JudgedAlert>> {
        Box::pin(async move {
            // Both: what was judged while Redis was down is on the spool.
            let mut judged = self.local.judged_since(since).await?;
            if let Some(redis) = self.redis() {
                let shared = self.answered(redis.judged_since(since).await);
                let local: std::collections::HashSet<String> =
                    judged.iter().map(|j| j.alert.id.clone()).collect();
                let more = shared.unwrap_or_default().into_iter();
                judged.extend(more.filter(|j| !local.contains(&j.alert.id)));
                judged.sort_by(|a, b| a.alert.id.cmp(&b.alert.id));
            }
            Ok(judged)
        })
    }

    fn judged_frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let redis = self.redis();
            self.found_either(|s| s.judged_frame(alert_id), redis.as_deref())
                .await
        })
    }

    fn put_mute<'a>(&'a self, mute: &'a Mute) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.shared_only("muted regions")?.put_mute(mute).await })
    }

    fn remove_mute<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move { self.shared_only("muted regions")?.remove_mute(id).await })
    }

    fn accept_view<'a>(&'a self, camera: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            (self.shared_only("accepted views")?)
                .accept_view(camera, at_ms)
                .await
        })
    }

    /// Redis' only: while it does not answer, the views last read stay with whoever read
    /// them, and a node that starts learns every view afresh anyway.
    fn accepted_views(&self) -> StoreFuture<'_, BTreeMap<String, u64>> {
        Box::pin(async move {
            match self.connected() {
                Some(redis) => redis.accepted_views().await,
                None => Err(Error::store("Redis has not answered since the start")),
            }
        })
    }

    /// Redis' mutes, copied to the spool each time they change there; while Redis does not
    /// answer, that copy: a node restarted during an outage still mutes what operators
    /// muted.
    fn mutes(&self) -> StoreFuture<'_, Vec<Mute>> {
        Box::pin(async move {
            let shared = match self.connected() {
                Some(redis) => redis.mutes().await,
                None => Err(Error::store("Redis has not answered since the start")),
            };
            match shared {
                Ok(mutes) => {
                    self.local.replace_mutes(&mutes).await?;
                    Ok(mutes)
                }
                Err(e) => {
                    tracing::debug!("mutes from the spool's copy: {e}");
                    self.local.mutes().await
                }
            }
        })
    }

    fn snapshot<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let redis = self.redis();
            self.found_either(|s| s.snapshot(alert_id), redis.as_deref())
                .await
        })
    }
}
