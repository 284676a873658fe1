//! The shared store: Redis, reached through a connection manager that reconnects by itself.
//!
//! Keys, all under the configured prefix `{p}`:
//! `{p}:cooldown:{key}` (SET NX PX), `{p}:outbox:{node}` (a stream per node, with the
//! nodes that have one in the set `{p}:outboxes`, so a dead node's can be found and adopted),
//! `{p}:escalations` (sorted set by due time) with `{p}:escalation` (hash of alert JSON),
//! `{p}:feed` (a capped stream of alerts and acknowledgements that every node reads),
//! `{p}:issued:{alert_id}` (its grid) with `{p}:issued-alert:{alert_id}` (its JSON),
//! `{p}:ack:{alert_id}` and `{p}:snapshot:{alert_id}` (strings with a TTL), `{p}:mutes`
//! (hash, mute id -> its JSON), `{p}:frame:{alert_id}` (the clean frame, with a TTL), and
//! judged alerts: `{p}:judged` (sorted set of alert ids by detection time) with
//! `{p}:judged:{alert_id}` (JSON) and `{p}:judged-frame:{alert_id}`, both with a TTL;
//! accepted camera views: `{p}:views` (hash, camera id -> ms since the epoch).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamRangeReply;

use super::{
    ACK_TTL, Ack, AckOutcome, Error, FEED_KEEP, JudgedAlert, Mute, OutboxRecord, StateStore,
    StoreFuture, millis_since_epoch,
};

/// A Redis call that takes longer than this fails, so a hung Redis cannot stall publishing.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    outbox_key: String,
    node: String,
    /// The URL without credentials.
    shown: String,
}

/// A Redis client set up as `[redis]` says, not yet connected: what can be wrong with the
/// configuration (a secret, a TLS file) is known before Redis is reached.
#[derive(Clone)]
pub(crate) struct RedisClient {
    client: redis::Client,
    tls: bool,
    prefix: String,
    node: String,
    shown: String,
}

impl RedisClient {
    /// Expands the URL's secrets and reads the TLS files.
    pub(crate) fn new(redis: &sharpeyes_config::Redis, node: &str) -> Result<Self, Error> {
        let url = &redis.url;
        let shown = url.to_string();
        let expanded = url
            .expand()
            .map_err(|e| Error::store(format!("[redis] url {shown}: {e}")))?;
        let client = if redis.ca_file.is_some() || redis.cert_file.is_some() {
            redis::Client::build_with_tls(expanded.as_str(), tls_files(redis)?)
        } else {
            redis::Client::open(expanded.as_str())
        }
        .map_err(|e| Error::store(format!("[redis] url {shown}: {}", scrub(&e))))?;
        Ok(Self {
            client,
            tls: url.scheme() == "rediss",
            prefix: redis.key_prefix.clone(),
            node: node.to_owned(),
            shown,
        })
    }

    /// For logs: the URL without credentials.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Connects; fails if Redis does not answer.
    pub(crate) async fn connect(&self) -> Result<RedisStore, Error> {
        RedisStore::open(self.clone()).await
    }
}

impl RedisStore {
    /// Connects as `[redis]` says (its password may be a `${VAR}` secret; `rediss://` with
    /// its CA and client certificate files); fails if Redis does not answer.
    pub async fn connect(redis: &sharpeyes_config::Redis, node: &str) -> Result<Self, Error> {
        RedisClient::new(redis, node)?.connect().await
    }

    /// A connection of its own to `[redis]`, for others who keep state there (the cluster's
    /// membership and leases): TLS as configured, the same timeouts, reconnecting by itself.
    pub async fn connection(
        redis: &sharpeyes_config::Redis,
    ) -> Result<redis::aio::ConnectionManager, Error> {
        let client = RedisClient::new(redis, "")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        redis::aio::ConnectionManager::new_with_config(client.client, config)
            .await
            .map_err(|e| {
                Error::store(format!(
                    "cannot reach Redis at {}: {}",
                    client.shown,
                    scrub(&e)
                ))
            })
    }

    async fn open(client: RedisClient) -> Result<Self, Error> {
        let RedisClient {
            client,
            tls,
            prefix,
            node,
            shown,
        } = client;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| {
                Error::store(format!(
                    "cannot reach Redis at {shown}: {}; check that it runs and [redis] url{}",
                    scrub(&e),
                    if tls {
                        " (for TLS: ca_file when its CA is private, cert_file and key_file when it asks for a client certificate)"
                    } else {
                        ""
                    }
                ))
            })?;
        let store = Self {
            conn,
            outbox_key: format!("{prefix}:outbox:{node}"),
            node,
            prefix,
            shown,
        };
        store.ping().await?;
        Ok(store)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// `{p}:{kind}:{alert_id}` set to `bytes` for `ttl`: snapshots and frames.
    async fn set_bytes(
        &self,
        kind: &str,
        alert_id: &str,
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&[kind, alert_id]))
            .arg(bytes)
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        let _: String = self.query(&format!("SET {kind}"), &cmd).await?;
        Ok(())
    }

    async fn get_bytes(&self, kind: &str, alert_id: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(&[kind, alert_id]));
        self.query(&format!("GET {kind}"), &cmd).await
    }

    fn error(&self, what: &str, e: redis::RedisError) -> Error {
        Error::store(format!("Redis {} {what}: {}", self.shown, scrub(&e)))
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| self.error(what, e))
    }
}

/// KEYS: issued (holding the alert's grid), ack. ARGV: the acknowledgement's JSON, its TTL,
/// the acknowledging centre's grid or "", its verdict or "", its note or "". Returns 1 when
/// recorded, 2 when acknowledged before and the verdict and note replaced, 0 when
/// acknowledged before with no verdict now or the same one, -1 when the alert was not
/// issued here, -2 when its grid is not within the centre's.
const ACKNOWLEDGE: &str = r#"
local grid = redis.call('GET', KEYS[1])
if not grid then return -1 end
local within = ARGV[3]
if within ~= '' and grid ~= within and string.sub(grid, 1, #within + 1) ~= within .. '-' then
  return -2
end
local known = redis.call('GET', KEYS[2])
if known then
  if ARGV[4] == '' then return 0 end
  local ack = cjson.decode(known)
  -- The same verdict again (every node hears each acknowledgement): nothing changes.
  if ack['verdict'] == ARGV[4] and (ack['note'] or '') == ARGV[5] then return 0 end
  ack['verdict'] = ARGV[4]
  if ARGV[5] == '' then ack['note'] = nil else ack['note'] = ARGV[5] end
  redis.call('SET', KEYS[2], cjson.encode(ack), 'KEEPTTL')
  return 2
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// Records taken from one dead node's outbox per call; the rest at the next.
const ADOPT_BATCH: usize = 1000;

/// KEYS: the set of outbox owners, this node's outbox. ARGV: the outbox key prefix
/// (`{p}:outbox:`), the batch size, this node, then the live nodes. Moves the records of
/// every owner that is neither this node nor live into this node's outbox, in their order,
/// and returns them as (new id, fields). An owner whose outbox is empty leaves the set.
const ADOPT_OUTBOXES: &str = r#"
local live = {}
for i = 3, #ARGV do live[ARGV[i]] = true end
local moved = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not live[node] then
    local stream = ARGV[1] .. node
    for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', ARGV[2])) do
      local id = redis.call('XADD', KEYS[2], '*', unpack(entry[2]))
      redis.call('XDEL', stream, entry[1])
      table.insert(moved, {id, entry[2]})
    end
    if redis.call('XLEN', stream) == 0 then
      redis.call('DEL', stream)
      redis.call('SREM', KEYS[1], node)
    end
  end
end
return moved
"#;

/// KEYS: escalations (sorted set), escalation (hash). ARGV: now in ms, limit. Removes and
/// returns the JSON of up to `limit` escalations due by now.
const TAKE_DUE_ESCALATIONS: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local due = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local json = redis.call('HGET', KEYS[2], id)
  redis.call('HDEL', KEYS[2], id)
  if json then table.insert(due, json) end
end
return due
"#;

/// Redis errors may quote the URL they were given; never let a password through.
/// The PEM files `[redis]` names for TLS, read now so that a missing one is named.
fn tls_files(redis: &sharpeyes_config::Redis) -> Result<redis::TlsCertificates, Error> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            Error::store(format!(
                "[redis] {field} {}: {e}; give a readable PEM file",
                path.display()
            ))
        })
    };
    let root_cert = match &redis.ca_file {
        Some(path) => Some(read("ca_file", path)?),
        None => None,
    };
    let client_tls = match (&redis.cert_file, &redis.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("cert_file", cert)?,
            client_key: read("key_file", key)?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

fn scrub(e: &redis::RedisError) -> String {
    sharpeyes_config::redact_url(&e.to_string())
}

impl StateStore for RedisStore {
    fn describe(&self) -> String {
        format!("redis {}", self.shown)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let pong: String = self.query("PING", &redis::cmd("PING")).await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(Error::store(format!(
                    "Redis {} answered PING with `{pong}`",
                    self.shown
                )))
            }
        })
    }

    fn cooldown_held<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(self.key(&["cooldown", key]));
            let held: u64 = self.query("EXISTS cooldown", &cmd).await?;
            Ok(held > 0)
        })
    }

    fn claim_cooldown<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(&["cooldown", key]))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64);
            let set: Option<String> = self.query("SET cooldown", &cmd).await?;
            Ok(set.is_some())
        })
    }

    fn outbox_append<'a>(&'a self, record: &'a OutboxRecord) -> StoreFuture<'a, String> {
        Box::pin(async move {
            // One round trip; the owner is named with every append, so an outbox whose
            // owner was once adopted and came back is found again.
            let mut pipe = redis::pipe();
            pipe.cmd("XADD")
                .arg(&self.outbox_key)
                .arg("*")
                .arg("alert_id")
                .arg(&record.alert_id)
                .arg("topic")
                .arg(&record.topic)
                .arg("payload")
                .arg(&record.payload)
                .cmd("SADD")
                .arg(self.key(&["outboxes"]))
                .arg(&self.node)
                .ignore();
            let mut conn = self.conn.clone();
            let (key,): (String,) = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("XADD outbox", e))?;
            Ok(key)
        })
    }

    fn outbox_adopt<'a>(
        &'a self,
        live: &'a [String],
    ) -> StoreFuture<'a, Vec<(String, OutboxRecord)>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(ADOPT_OUTBOXES)
                .arg(2)
                .arg(self.key(&["outboxes"]))
                .arg(&self.outbox_key)
                .arg(self.key(&["outbox", ""]))
                .arg(ADOPT_BATCH)
                .arg(&self.node)
                .arg(live);
            let moved: Vec<(String, Vec<String>)> = self.query("EVAL adopt outboxes", &cmd).await?;
            let mut records = Vec::with_capacity(moved.len());
            for (key, fields) in moved {
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|kv| kv[0] == name)
                        .and_then(|kv| kv.get(1).cloned())
                };
                match (field("alert_id"), field("topic"), field("payload")) {
                    (Some(alert_id), Some(topic), Some(payload)) => records.push((
                        key,
                        OutboxRecord {
                            alert_id,
                            topic,
                            payload,
                        },
                    )),
                    _ => {
                        tracing::error!(stream = %self.outbox_key, entry = %key, "an adopted outbox entry lacks alert_id, topic or payload; it is left in the stream and not published")
                    }
                }
            }
            Ok(records)
        })
    }

    fn outbox_pending(&self) -> StoreFuture<'_, Vec<(String, OutboxRecord)>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&self.outbox_key).arg("-").arg("+");
            let reply: StreamRangeReply = self.query("XRANGE outbox", &cmd).await?;
            let mut records = Vec::with_capacity(reply.ids.len());
            for entry in reply.ids {
                let fields = (
                    entry.get::<String>("alert_id"),
                    entry.get::<String>("topic"),
                    entry.get::<String>("payload"),
                );
                match fields {
                    (Some(alert_id), Some(topic), Some(payload)) => records.push((
                        entry.id,
                        OutboxRecord {
                            alert_id,
                            topic,
                            payload,
                        },
                    )),
                    _ => tracing::error!(
                        stream = %self.outbox_key,
                        entry = %entry.id,
                        "outbox entry lacks alert_id, topic or payload; it is left in the stream and not published"
                    ),
                }
            }
            Ok(records)
        })
    }

    fn outbox_remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("XDEL");
            cmd.arg(&self.outbox_key).arg(key);
            let _: u64 = self.query("XDEL outbox", &cmd).await?;
            Ok(())
        })
    }

    fn outbox_len(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let mut cmd = redis::cmd("XLEN");
            cmd.arg(&self.outbox_key);
            self.query("XLEN outbox", &cmd).await
        })
    }

    fn feed_push<'a>(&'a self, event: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(self.key(&["feed"]))
                .arg("MAXLEN")
                .arg("~")
                .arg(FEED_KEEP)
                .arg("*")
                .arg("event")
                .arg(event);
            let _: String = self.query("XADD feed", &cmd).await?;
            Ok(())
        })
    }

    fn feed_read<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(String, String)>> {
        Box::pin(async move {
            let key = self.key(&["feed"]);
            let mut cmd;
            match after {
                Some(after) => {
                    cmd = redis::cmd("XRANGE");
                    cmd.arg(&key).arg(format!("({after}")).arg("+");
                }
                None => {
                    cmd = redis::cmd("XREVRANGE");
                    cmd.arg(&key).arg("+").arg("-");
                }
            }
            cmd.arg("COUNT").arg(limit);
            let reply: StreamRangeReply = self.query("XRANGE feed", &cmd).await?;
            let mut events: Vec<(String, String)> = reply
                .ids
                .into_iter()
                .filter_map(|entry| {
                    let event = entry.get::<String>("event")?;
                    Some((entry.id, event))
                })
                .collect();
            if after.is_none() {
                events.reverse();
            }
            Ok(events)
        })
    }

    fn schedule_escalation<'a>(
        &'a self,
        alert_id: &'a str,
        due: SystemTime,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HSET")
                .arg(self.key(&["escalation"]))
                .arg(alert_id)
                .arg(alert_json)
                .ignore()
                .cmd("ZADD")
                .arg(self.key(&["escalations"]))
                .arg(millis_since_epoch(due))
                .arg(alert_id)
                .ignore();
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.error("schedule escalation", e))
        })
    }

    fn take_due_escalations(&self, now: SystemTime, limit: usize) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            // One script: each due escalation leaves the set and the hash together (no entry
            // is left half-taken when a call fails), and with several nodes each goes to one.
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(TAKE_DUE_ESCALATIONS)
                .arg(2)
                .arg(self.key(&["escalations"]))
                .arg(self.key(&["escalation"]))
                .arg(millis_since_epoch(now))
                .arg(limit);
            self.query("EVAL take due escalations", &cmd).await
        })
    }

    fn record_issued<'a>(
        &'a self,
        alert_id: &'a str,
        grid: &'a str,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.key(&["issued", alert_id]))
                .arg(grid)
                .arg("EX")
                .arg(ACK_TTL.as_secs())
                .ignore()
                .cmd("SET")
                .arg(self.key(&["issued-alert", alert_id]))
                .arg(alert_json)
                .arg("EX")
                .arg(ACK_TTL.as_secs())
                .ignore();
            let mut conn = self.conn.clone();
            let () = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("SET issued", e))?;
            Ok(())
        })
    }

    fn issued_alert<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(&["issued-alert", alert_id]));
            self.query("GET issued-alert", &cmd).await
        })
    }

    fn acknowledge<'a>(&'a self, ack: &'a Ack) -> StoreFuture<'a, AckOutcome> {
        Box::pin(async move {
            let json = serde_json::to_string(ack)
                .map_err(|e| Error::store(format!("cannot encode an acknowledgement: {e}")))?;
            // One step, so that two nodes never both record the first acknowledgement, and
            // nothing is stored for an alert nobody here issued.
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(ACKNOWLEDGE)
                .arg(2)
                .arg(self.key(&["issued", &ack.alert_id]))
                .arg(self.key(&["ack", &ack.alert_id]))
                .arg(json)
                .arg(ACK_TTL.as_secs())
                .arg(ack.grid.as_deref().unwrap_or(""))
                .arg(ack.verdict.map_or("", |v| v.as_str()))
                .arg(ack.note.as_deref().unwrap_or(""));
            let outcome: i64 = self.query("EVAL acknowledge", &cmd).await?;
            Ok(match outcome {
                1 => AckOutcome::First,
                2 => AckOutcome::Judged,
                0 => AckOutcome::Again,
                -2 => AckOutcome::OutsideGrid,
                _ => AckOutcome::Unknown,
            })
        })
    }

    fn acknowledgement<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Ack>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(&["ack", alert_id]));
            let json: Option<String> = self.query("GET ack", &cmd).await?;
            json.map(|j| {
                serde_json::from_str(&j).map_err(|e| {
                    Error::store(format!(
                        "Redis {}: acknowledgement of {alert_id} is unreadable: {e}",
                        self.shown
                    ))
                })
            })
            .transpose()
        })
    }

    fn put_snapshot<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.set_bytes("snapshot", alert_id, jpeg, ttl))
    }

    fn put_frame<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.set_bytes("frame", alert_id, jpeg, ttl))
    }

    fn frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_bytes("frame", alert_id))
    }

    fn keep_judged<'a>(
        &'a self,
        judged: &'a JudgedAlert,
        frame: Option<&'a [u8]>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let id = &judged.alert.id;
            let json = serde_json::to_string(judged)
                .map_err(|e| Error::store(format!("cannot encode judged alert {id}: {e}")))?;
            let detected = super::detected_ms(id);
            let oldest =
                millis_since_epoch(SystemTime::now()).saturating_sub(ttl.as_millis() as u64);
            let secs = ttl.as_secs().max(1);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(self.key(&["judged", id]))
                .arg(json)
                .arg("EX")
                .arg(secs)
                .ignore();
            if let Some(jpeg) = frame {
                pipe.cmd("SET")
                    .arg(self.key(&["judged-frame", id]))
                    .arg(jpeg)
                    .arg("EX")
                    .arg(secs)
                    .ignore();
            }
            pipe.cmd("ZADD")
                .arg(self.key(&["judged"]))
                .arg(detected)
                .arg(id)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(self.key(&["judged"]))
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore();
            let mut conn = self.conn.clone();
            let () = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error("keep judged alert", e))?;
            Ok(())
        })
    }

    fn judged_since(&self, since: SystemTime) -> StoreFuture<'_, Vec<JudgedAlert>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(self.key(&["judged"]))
                .arg(millis_since_epoch(since))
                .arg("+inf");
            let ids: Vec<String> = self.query("ZRANGEBYSCORE judged", &cmd).await?;
            let mut judged = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(500) {
                let mut cmd = redis::cmd("MGET");
                for id in chunk {
                    cmd.arg(self.key(&["judged", id]));
                }
                let values: Vec<Option<String>> = self.query("MGET judged", &cmd).await?;
                // Expired, or not ours to read: skipped.
                judged
                    .extend((values.iter().flatten()).filter_map(|v| serde_json::from_str(v).ok()));
            }
            Ok(judged)
        })
    }

    fn judged_frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_bytes("judged-frame", alert_id))
    }

    fn put_mute<'a>(&'a self, mute: &'a Mute) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(mute)
                .map_err(|e| Error::store(format!("cannot encode mute {}: {e}", mute.id)))?;
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.key(&["mutes"])).arg(&mute.id).arg(json);
            let _: i64 = self.query("HSET mutes", &cmd).await?;
            Ok(())
        })
    }

    fn remove_mute<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(self.key(&["mutes"])).arg(id);
            let removed: i64 = self.query("HDEL mutes", &cmd).await?;
            Ok(removed > 0)
        })
    }

    fn mutes(&self) -> StoreFuture<'_, Vec<Mute>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HVALS");
            cmd.arg(self.key(&["mutes"]));
            let values: Vec<String> = self.query("HVALS mutes", &cmd).await?;
            // Another writer's bad entry is skipped, not fatal: the rest still apply.
            let mut mutes: Vec<Mute> = (values.iter())
                .filter_map(|v| serde_json::from_str(v).ok())
                .collect();
            mutes.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(mutes)
        })
    }

    fn accept_view<'a>(&'a self, camera: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.key(&["views"])).arg(camera).arg(at_ms);
            let _: i64 = self.query("HSET views", &cmd).await?;
            Ok(())
        })
    }

    fn accepted_views(&self) -> StoreFuture<'_, BTreeMap<String, u64>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(self.key(&["views"]));
            let entries: Vec<(String, String)> = self.query("HGETALL views", &cmd).await?;
            // Another writer's entry that is not a time is skipped: the rest still apply.
            Ok(entries
                .into_iter()
                .filter_map(|(camera, at)| Some((camera, at.parse().ok()?)))
                .collect())
        })
    }

    fn snapshot<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_bytes("snapshot", alert_id))
    }
}
