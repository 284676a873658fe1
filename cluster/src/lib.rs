//! Which node runs which camera, on Redis, with no consensus of our own.
//!
//! - [`Plan`]: weighted rendezvous hashing bounded by capacity. Every node computes the same
//!   owner for a camera from the same member list, and a member joining or leaving moves
//!   only the cameras that hash to it (minimal movement) while no member is full.
//! - [`Members`]: each node heartbeats `{p}:member:{node}` with a TTL; the live members are
//!   those whose key has not expired.
//! - [`Leases`]: a camera runs only under its lease, `{p}:lease:{camera}` = `{node}:{fence}`,
//!   taken with `SET NX PX`, renewed and released only by its holder (one Lua step each). The
//!   fence grows with every new holder, so a write tagged with an old fence can be told apart.
//! - [`Coordinator`]: one node's side of it, a step at a time: heartbeat, the live members,
//!   the cameras the hash gives this node, their leases taken or renewed; what this node
//!   should run is what it holds.
//! - [`Registry`]: cameras added and removed over the API of any node, which every node
//!   merges with the file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod plan;
mod registry;
pub use plan::{Plan, assign};
pub use registry::{ApiCameras, Registry};

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

/// A live node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Cameras it may hold: its weight in the assignment, and its limit.
    pub capacity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// What a member says of itself at each heartbeat, so any node can show the whole cluster
/// (`/api/cluster`, `/api/cameras`): a step old at most. Kept apart from the membership
/// (`{p}:report:{node}`) and read only when someone asks: a county's reports are hundreds of
/// kilobytes, which every node reading at every step would multiply by the node count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The cameras it runs, each with its state there (`streaming`, `connecting`, ...).
    #[serde(default)]
    pub cameras: BTreeMap<String, String>,
    /// The sensors whose alarms it raises.
    #[serde(default)]
    pub sensors: BTreeSet<String>,
    /// When it sent this: milliseconds since the Unix epoch, by its clock.
    #[serde(default)]
    pub at_ms: u64,
}

/// Membership under a key prefix.
pub struct Members {
    prefix: String,
}

impl Members {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, node: &str) -> String {
        format!("{}:member:{node}", self.prefix)
    }

    fn report_key(&self, node: &str) -> String {
        format!("{}:report:{node}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}:members", self.prefix)
    }

    /// Says `member` is alive for `ttl` more, and what it runs.
    pub async fn heartbeat(
        &self,
        conn: &mut impl ConnectionLike,
        member: &Member,
        report: &Report,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let json = serde_json::to_string(member).expect("a member serialises");
        let report = serde_json::to_string(report).expect("a report serialises");
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key(&member.id))
            .arg(json)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .cmd("SADD")
            .arg(self.index())
            .arg(&member.id)
            .ignore()
            .cmd("SET")
            .arg(self.report_key(&member.id))
            .arg(report)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .query_async(conn)
            .await
    }

    /// What each of `members` said at its last heartbeat, by id (none for one whose report
    /// expired with it).
    pub async fn reports(
        &self,
        conn: &mut impl ConnectionLike,
        members: &[Member],
    ) -> redis::RedisResult<BTreeMap<String, Report>> {
        if members.is_empty() {
            return Ok(BTreeMap::new());
        }
        let keys: Vec<String> = members.iter().map(|m| self.report_key(&m.id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        Ok(members
            .iter()
            .zip(values)
            .filter_map(|(m, v)| Some((m.id.clone(), serde_json::from_str(&v?).ok()?)))
            .collect())
    }

    /// Leaves at once (a clean shutdown), rather than when the heartbeat expires.
    pub async fn leave(
        &self,
        conn: &mut impl ConnectionLike,
        node: &str,
    ) -> redis::RedisResult<()> {
        redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.key(node))
            .arg(self.report_key(node))
            .ignore()
            .cmd("SREM")
            .arg(self.index())
            .arg(node)
            .ignore()
            .query_async(conn)
            .await
    }

    /// The members whose heartbeat has not expired, by id. Expired ones leave the index.
    pub async fn live(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<Vec<Member>> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.index())
            .query_async(conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        let mut live = BTreeMap::new();
        let mut gone = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value.and_then(|v| serde_json::from_str::<Member>(&v).ok()) {
                Some(m) if m.id == id => {
                    live.insert(id, m);
                }
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: () = redis::cmd("SREM")
                .arg(self.index())
                .arg(&gone)
                .query_async(conn)
                .await?;
        }
        Ok(live.into_values().collect())
    }
}

/// A lease held: its value in Redis, `{node}:{fence}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub camera: String,
    pub fence: u64,
    value: String,
    /// Taken over from another holder: how long the camera had been without a live holder
    /// by then (since that holder last renewed or released it), by Redis' clock. `None` for
    /// a first take, a take long after, or an extension.
    pub vacant: Option<Duration>,
}

/// Per-camera leases under a key prefix.
pub struct Leases {
    prefix: String,
}

/// Each script that proves a holder alive (take, renew, release) also stamps the lease's
/// `seen` key with Redis' clock, kept for [`SEEN_KEEP`] leases: a node that takes a lease
/// over learns how long the camera had been without a live holder (the handoff), by one
/// clock, whatever the nodes' own clocks say.
const STAMP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// How many TTLs a `seen` stamp is kept: a lease taken later than that after its last holder
/// was seen is a cold start, not a handoff.
const SEEN_KEEP: u32 = 3;

/// KEYS: the lease, the fence counter, the seen stamp. ARGV: node, TTL in ms, stamp TTL in
/// ms. A free lease is taken with the next fence; one this node holds already is extended
/// with its fence. Returns {fence, ms since the last holder was seen or -1}; fence 0 when
/// another node holds it.
const ACQUIRE: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then
  local node, fence = string.match(held, '^(.*):(%d+)$')
  if node == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(fence), -1}
  end
  return {0, -1}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
local seen = tonumber(redis.call('GET', KEYS[3]) or '')
redis.call('SET', KEYS[3], now, 'PX', ARGV[3])
if seen then
  return {fence, math.max(now - seen, 0)}
end
return {fence, -1}
"#;

/// KEYS: the lease, its seen stamp. ARGV: its value, TTL in ms, stamp TTL in ms. Extends it
/// only for its holder: 1, else 0.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// KEYS: the lease, its seen stamp. ARGV: its value, stamp TTL in ms. Deletes it only for
/// its holder: 1, else 0.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], now, 'PX', ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A script with the clock stamp in front.
fn stamped(script: &str) -> String {
    format!("{STAMP}{script}")
}

impl Leases {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, camera: &str) -> String {
        format!("{}:lease:{camera}", self.prefix)
    }

    fn seen(&self, camera: &str) -> String {
        format!("{}:seen:{camera}", self.prefix)
    }

    /// Takes `camera`'s lease for `node` for `ttl`, or extends it if `node` holds it;
    /// `None` while another node holds it.
    pub async fn acquire(
        &self,
        conn: &mut impl ConnectionLike,
        camera: &str,
        node: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<Lease>> {
        let mut taken = self.acquire_all(conn, &[camera], node, ttl).await?;
        Ok(taken.pop().flatten())
    }

    /// [`Leases::acquire`] for each of `cameras`, in one round trip; in their order.
    pub async fn acquire_all(
        &self,
        conn: &mut impl ConnectionLike,
        cameras: &[&str],
        node: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Vec<Option<Lease>>> {
        if cameras.is_empty() {
            return Ok(Vec::new());
        }
        let script = stamped(ACQUIRE);
        let mut pipe = redis::pipe();
        for camera in cameras {
            pipe.cmd("EVAL")
                .arg(&script)
                .arg(3)
                .arg(self.key(camera))
                .arg(format!("{}:fence", self.prefix))
                .arg(self.seen(camera))
                .arg(node)
                .arg(millis(ttl))
                .arg(millis(ttl * SEEN_KEEP));
        }
        let answers: Vec<(u64, i64)> = pipe.query_async(conn).await?;
        Ok(cameras
            .iter()
            .zip(answers)
            .map(|(camera, (fence, vacant))| {
                (fence > 0).then(|| Lease {
                    camera: (*camera).to_owned(),
                    fence,
                    value: format!("{node}:{fence}"),
                    vacant: u64::try_from(vacant).ok().map(Duration::from_millis),
                })
            })
            .collect())
    }

    /// Extends `lease` for `ttl`; `false` when it is no longer this holder's (expired and
    /// taken, or released): the camera must stop now.
    pub async fn renew(
        &self,
        conn: &mut impl ConnectionLike,
        lease: &Lease,
        ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let renewed = self
            .renew_all(conn, std::slice::from_ref(lease), ttl)
            .await?;
        Ok(renewed.first() == Some(&true))
    }

    /// [`Leases::renew`] for each of `leases`, in one round trip; in their order.
    pub async fn renew_all(
        &self,
        conn: &mut impl ConnectionLike,
        leases: &[Lease],
        ttl: Duration,
    ) -> redis::RedisResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let script = stamped(RENEW);
        let mut pipe = redis::pipe();
        for lease in leases {
            pipe.cmd("EVAL")
                .arg(&script)
                .arg(2)
                .arg(self.key(&lease.camera))
                .arg(self.seen(&lease.camera))
                .arg(&lease.value)
                .arg(millis(ttl))
                .arg(millis(ttl * SEEN_KEEP));
        }
        let renewed: Vec<i64> = pipe.query_async(conn).await?;
        Ok(renewed.into_iter().map(|r| r == 1).collect())
    }

    /// Gives `lease` up (after its camera stopped); `false` when it was no longer held.
    /// `ttl`: the lease's, for how long the release is remembered as its holder last seen.
    pub async fn release(
        &self,
        conn: &mut impl ConnectionLike,
        lease: &Lease,
        ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let released: i64 = redis::cmd("EVAL")
            .arg(stamped(RELEASE))
            .arg(2)
            .arg(self.key(&lease.camera))
            .arg(self.seen(&lease.camera))
            .arg(&lease.value)
            .arg(millis(ttl * SEEN_KEEP))
            .query_async(conn)
            .await?;
        Ok(released == 1)
    }
}

/// What one [`Coordinator::step`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// The live members, by id.
    pub members: Vec<Member>,
    /// Cameras this node holds the lease of and should run.
    pub run: BTreeSet<String>,
    /// Cameras this node holds but the hash now gives to another: stop them, then
    /// [`Coordinator::release`] them.
    pub hand_over: BTreeSet<String>,
    /// Leases found taken by another node (this node was cut off past the TTL): stopped.
    pub lost: BTreeSet<String>,
    /// Of `run`, the cameras taken over from another holder this step, with how long they
    /// had been without one ([`Lease::vacant`]).
    pub taken_over: BTreeMap<String, Duration>,
    /// Cameras no live member has room for: the cluster needs more capacity.
    pub unassigned: u32,
}

/// One node in the cluster: its membership and the leases it holds.
pub struct Coordinator {
    me: Member,
    ttl: Duration,
    members: Members,
    leases: Leases,
    held: BTreeMap<String, Lease>,
    report: Report,
    plan: Plan,
}

impl Coordinator {
    /// `me` under `prefix`, with membership and leases that outlive a renewal by `ttl`.
    pub fn new(prefix: &str, me: Member, ttl: Duration) -> Self {
        Self {
            me,
            ttl,
            members: Members::new(prefix),
            leases: Leases::new(prefix),
            held: BTreeMap::new(),
            report: Report::default(),
            plan: Plan::default(),
        }
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    /// How long membership and leases outlive a renewal.
    pub fn lease(&self) -> Duration {
        self.ttl
    }

    /// What the next heartbeats say this node runs.
    pub fn set_report(&mut self, report: Report) {
        self.report = report;
    }

    /// The leases held, by camera.
    pub fn held(&self) -> impl Iterator<Item = &Lease> {
        self.held.values()
    }

    /// Heartbeats, reads the live members, renews what this node holds and takes the free
    /// leases of the cameras the hash gives it. `cameras` are (camera, assignment key): cameras
    /// with one key go to one node (a sensor's covering cameras, so fusion stays whole). Run
    /// it every third of the TTL. A Redis error leaves the held leases as they were: the caller
    /// stops its cameras once the last successful step is older than the TTL allows.
    pub async fn step(
        &mut self,
        conn: &mut impl ConnectionLike,
        cameras: &[(String, String)],
    ) -> redis::RedisResult<Step> {
        self.members
            .heartbeat(conn, &self.me, &self.report, self.ttl)
            .await?;
        let mut step = Step::default();
        let mut members = self.members.live(conn).await?;
        if !members.iter().any(|m| m.id == self.me.id) {
            // Our own heartbeat expired between the two calls: we are alive, count us.
            members.push(self.me.clone());
        }
        let mut loads: BTreeMap<String, u32> = BTreeMap::new();
        for (_, key) in cameras {
            *loads.entry(key.clone()).or_default() += 1;
        }
        if !self.plan.is_for(&loads, &members) {
            self.plan = Plan::new(loads, &members);
        }
        let mine: BTreeSet<&str> = cameras
            .iter()
            .filter(|(_, key)| self.plan.owner(key) == Some(self.me.id.as_str()))
            .map(|(camera, _)| camera.as_str())
            .collect();
        // One round trip for the renewals and one for the takes, however many cameras.
        let held: Vec<Lease> = self.held.values().cloned().collect();
        let renewed = self.leases.renew_all(conn, &held, self.ttl).await?;
        for (lease, renewed) in held.into_iter().zip(renewed) {
            if !renewed {
                self.held.remove(&lease.camera);
                step.lost.insert(lease.camera);
            } else if mine.contains(lease.camera.as_str()) {
                step.run.insert(lease.camera);
            } else {
                step.hand_over.insert(lease.camera);
            }
        }
        let free: Vec<&str> = mine
            .into_iter()
            .filter(|c| !self.held.contains_key(*c))
            .collect();
        let taken = self
            .leases
            .acquire_all(conn, &free, &self.me.id, self.ttl)
            .await?;
        for lease in taken.into_iter().flatten() {
            if let Some(vacant) = lease.vacant {
                step.taken_over.insert(lease.camera.clone(), vacant);
            }
            step.run.insert(lease.camera.clone());
            self.held.insert(lease.camera.clone(), lease);
        }
        step.members = members;
        step.unassigned = self.plan.unassigned();
        Ok(step)
    }

    /// The id of the member that runs assignment key `key`, by the last step's plan: `None`
    /// when no member has room for it.
    pub fn owner(&self, key: &str) -> Option<&str> {
        self.plan.owner(key)
    }

    /// What each of `members` said at its last heartbeat, by id: for showing the cluster,
    /// when someone asks.
    pub async fn reports(
        &self,
        conn: &mut impl ConnectionLike,
        members: &[Member],
    ) -> redis::RedisResult<BTreeMap<String, Report>> {
        self.members.reports(conn, members).await
    }

    /// Gives up the leases of `cameras` (stopped now), so their new owner takes them at its
    /// next step instead of after the TTL.
    pub async fn release(
        &mut self,
        conn: &mut impl ConnectionLike,
        cameras: &BTreeSet<String>,
    ) -> redis::RedisResult<()> {
        for camera in cameras {
            if let Some(lease) = self.held.get(camera) {
                self.leases.release(conn, lease, self.ttl).await?;
                self.held.remove(camera);
            }
        }
        Ok(())
    }

    /// Leaves the cluster at a clean stop (every camera stopped): releases every lease and
    /// the membership, so the others take over at their next step.
    pub async fn leave(&mut self, conn: &mut impl ConnectionLike) -> redis::RedisResult<()> {
        let all: BTreeSet<String> = self.held.keys().cloned().collect();
        self.release(conn, &all).await?;
        self.members.leave(conn, &self.me.id).await
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
