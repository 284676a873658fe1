//! The embedded store: state in memory; the outbox, escalations and snapshots in a disk spool
//! when given a directory, so a restarted node still publishes what it had not delivered and
//! still escalates what nobody acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::{
    ACK_TTL, Ack, AckOutcome, JudgedAlert, Mute, OutboxRecord, StateStore, StoreFuture,
    detected_ms, grid_within,
};
use crate::error::Error;

/// Snapshots (and clean frames) kept in memory when there is no spool directory: the newest
/// this many.
const MEMORY_SNAPSHOTS: usize = 256;
/// Judged alerts kept in memory when there is no spool directory: the newest this many.
const MEMORY_JUDGED: usize = 1000;

pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    spool: Option<Arc<Spool>>,
}

#[derive(Default)]
struct State {
    cooldowns: HashMap<String, Instant>,
    /// Used only without a spool.
    outbox: BTreeMap<u64, OutboxRecord>,
    next_seq: u64,
    escalations: BTreeMap<(SystemTime, String), String>,
    escalation_due: HashMap<String, SystemTime>,
    /// Alerts issued here: until when they may be acknowledged, their grid and their JSON.
    issued: HashMap<String, (Instant, String, String)>,
    /// Acknowledgements, until when they are kept.
    acks: HashMap<String, (Ack, Instant)>,
    snapshots: VecDeque<(String, Vec<u8>)>,
    /// By id; written whole to the spool's `mutes.json` on every change.
    mutes: BTreeMap<String, Mute>,
    /// Used only without a spool.
    frames: VecDeque<(String, Vec<u8>)>,
    /// By alert id (a ULID: in detection order). Used only without a spool.
    judged: BTreeMap<String, (JudgedAlert, Option<Vec<u8>>)>,
    /// Camera id -> when its view was last accepted (ms since the epoch).
    views: BTreeMap<String, u64>,
}

impl State {
    /// Forgets issued alerts and acknowledgements past [`ACK_TTL`], as Redis keys expire.
    fn expire(&mut self, now: Instant) {
        self.issued.retain(|_, (until, _, _)| *until > now);
        self.acks.retain(|_, (_, until)| *until > now);
    }
}

impl MemoryStore {
    /// Everything in memory: for tests and one-shot tools; a restart forgets the outbox.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            spool: None,
        }
    }

    /// The outbox, escalations and snapshots under `dir` (`outbox/`, `escalations/`,
    /// `snapshots/`) and the muted regions (`mutes.json`), created if missing; escalations
    /// and mutes spooled by an earlier run are loaded.
    pub fn with_spool(dir: &Path) -> Result<Self, Error> {
        let spool = Spool::open(dir)?;
        let mut state = State::default();
        for (id, due, json) in spool.escalations()? {
            state.escalations.insert((due, id.clone()), json);
            state.escalation_due.insert(id, due);
        }
        state.mutes = (spool.mutes()?.into_iter())
            .map(|m| (m.id.clone(), m))
            .collect();
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            spool: Some(Arc::new(spool)),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl StateStore for MemoryStore {
    fn describe(&self) -> String {
        match &self.spool {
            Some(s) => format!("memory (spool {})", s.dir.display()),
            None => "memory".into(),
        }
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn cooldown_held<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let now = Instant::now();
            Ok(self
                .state()
                .cooldowns
                .get(key)
                .is_some_and(|until| *until > now))
        })
    }

    fn claim_cooldown<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let now = Instant::now();
            let mut state = self.state();
            state.cooldowns.retain(|_, until| *until > now);
            if state.cooldowns.contains_key(key) {
                return Ok(false);
            }
            state.cooldowns.insert(key.to_owned(), now + ttl);
            Ok(true)
        })
    }

    fn outbox_append<'a>(&'a self, record: &'a OutboxRecord) -> StoreFuture<'a, String> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    let record = record.clone();
                    blocking(move || spool.append(&record)).await
                }
                None => {
                    let mut state = self.state();
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    state.outbox.insert(seq, record.clone());
                    Ok(seq.to_string())
                }
            }
        })
    }

    fn outbox_pending(&self) -> StoreFuture<'_, Vec<(String, OutboxRecord)>> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    blocking(move || spool.pending()).await
                }
                None => Ok(self
                    .state()
                    .outbox
                    .iter()
                    .map(|(k, r)| (k.to_string(), r.clone()))
                    .collect()),
            }
        })
    }

    fn outbox_remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    let key = key.to_owned();
                    blocking(move || spool.remove(&key)).await
                }
                None => {
                    if let Ok(seq) = key.parse::<u64>() {
                        self.state().outbox.remove(&seq);
                    }
                    Ok(())
                }
            }
        })
    }

    fn outbox_len(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    blocking(move || Ok(spool.keys()?.len())).await
                }
                None => Ok(self.state().outbox.len()),
            }
        })
    }

    fn outbox_adopt<'a>(
        &'a self,
        _live: &'a [String],
    ) -> StoreFuture<'a, Vec<(String, OutboxRecord)>> {
        // This node's alone.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn feed_push<'a>(&'a self, _event: &'a str) -> StoreFuture<'a, ()> {
        // Nobody else reads it: this node's list has the event already.
        Box::pin(async { Ok(()) })
    }

    fn feed_read<'a>(
        &'a self,
        _after: Option<&'a str>,
        _limit: usize,
    ) -> StoreFuture<'a, Vec<(String, String)>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn schedule_escalation<'a>(
        &'a self,
        alert_id: &'a str,
        due: SystemTime,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            {
                // Kept in memory even if the spool fails: it still escalates while running.
                let mut state = self.state();
                if let Some(old) = state.escalation_due.remove(alert_id) {
                    state.escalations.remove(&(old, alert_id.to_owned()));
                }
                state
                    .escalations
                    .insert((due, alert_id.to_owned()), alert_json.to_owned());
                state.escalation_due.insert(alert_id.to_owned(), due);
            }
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    let (id, json) = (alert_id.to_owned(), alert_json.to_owned());
                    blocking(move || spool.put_escalation(&id, due, &json)).await
                }
                None => Ok(()),
            }
        })
    }

    fn take_due_escalations(&self, now: SystemTime, limit: usize) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut taken = Vec::new();
            {
                let mut state = self.state();
                while taken.len() < limit {
                    let Some(entry) = state.escalations.first_entry() else {
                        break;
                    };
                    if entry.key().0 > now {
                        break;
                    }
                    let ((_, id), json) = entry.remove_entry();
                    state.escalation_due.remove(&id);
                    taken.push((id, json));
                }
            }
            if let (Some(spool), false) = (&self.spool, taken.is_empty()) {
                let spool = spool.clone();
                let ids: Vec<String> = taken.iter().map(|(id, _)| id.clone()).collect();
                // A file left behind escalates again after a restart: a duplicate, never a loss.
                if let Err(e) = blocking(move || spool.remove_escalations(&ids)).await {
                    tracing::warn!("{e}; those escalations may be sent again after a restart");
                }
            }
            Ok(taken.into_iter().map(|(_, json)| json).collect())
        })
    }

    fn record_issued<'a>(
        &'a self,
        alert_id: &'a str,
        grid: &'a str,
        alert_json: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let now = Instant::now();
            let mut state = self.state();
            state.expire(now);
            state.issued.insert(
                alert_id.to_owned(),
                (now + ACK_TTL, grid.to_owned(), alert_json.to_owned()),
            );
            Ok(())
        })
    }

    fn issued_alert<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut state = self.state();
            state.expire(now);
            Ok(state.issued.get(alert_id).map(|(_, _, json)| json.clone()))
        })
    }

    fn acknowledge<'a>(&'a self, ack: &'a Ack) -> StoreFuture<'a, AckOutcome> {
        Box::pin(async move {
            let now = Instant::now();
            let mut state = self.state();
            state.expire(now);
            let Some((_, grid, _)) = state.issued.get(&ack.alert_id) else {
                return Ok(AckOutcome::Unknown);
            };
            if ack.grid.as_deref().is_some_and(|g| !grid_within(grid, g)) {
                return Ok(AckOutcome::OutsideGrid);
            }
            if let Some((known, _)) = state.acks.get_mut(&ack.alert_id) {
                if ack.verdict.is_none() || known.judges_alike(ack) {
                    return Ok(AckOutcome::Again);
                }
                known.verdict = ack.verdict;
                known.note = ack.note.clone();
                return Ok(AckOutcome::Judged);
            }
            state
                .acks
                .insert(ack.alert_id.clone(), (ack.clone(), now + ACK_TTL));
            Ok(AckOutcome::First)
        })
    }

    fn acknowledgement<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Ack>> {
        Box::pin(async move {
            let mut state = self.state();
            state.expire(Instant::now());
            Ok(state.acks.get(alert_id).map(|(ack, _)| ack.clone()))
        })
    }

    fn put_snapshot<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.put_picture(Picture::Snapshot, alert_id, jpeg, ttl))
    }

    fn put_frame<'a>(
        &'a self,
        alert_id: &'a str,
        jpeg: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.put_picture(Picture::Frame, alert_id, jpeg, ttl))
    }

    fn frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.picture(Picture::Frame, alert_id))
    }

    fn keep_judged<'a>(
        &'a self,
        judged: &'a JudgedAlert,
        frame: Option<&'a [u8]>,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    let (judged, frame) = (judged.clone(), frame.map(<[u8]>::to_vec));
                    blocking(move || spool.keep_judged(&judged, frame.as_deref(), ttl)).await
                }
                None => {
                    let mut state = self.state();
                    let entry = (judged.clone(), frame.map(<[u8]>::to_vec));
                    state.judged.insert(judged.alert.id.clone(), entry);
                    while state.judged.len() > MEMORY_JUDGED {
                        state.judged.pop_first();
                    }
                    Ok(())
                }
            }
        })
    }

    fn judged_since(&self, since: SystemTime) -> StoreFuture<'_, Vec<JudgedAlert>> {
        Box::pin(async move {
            let from = super::millis_since_epoch(since);
            let mut judged = match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    blocking(move || spool.judged()).await?
                }
                None => (self.state().judged.values())
                    .map(|(j, _)| j.clone())
                    .collect(),
            };
            judged.retain(|j| detected_ms(&j.alert.id) >= from);
            judged.sort_by(|a, b| a.alert.id.cmp(&b.alert.id));
            Ok(judged)
        })
    }

    fn judged_frame<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => {
                    let spool = spool.clone();
                    let id = alert_id.to_owned();
                    blocking(move || spool.jpeg(&spool.judged, &id)).await
                }
                None => Ok(self
                    .state()
                    .judged
                    .get(alert_id)
                    .and_then(|(_, f)| f.clone())),
            }
        })
    }

    fn put_mute<'a>(&'a self, mute: &'a Mute) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let all = {
                let mut state = self.state();
                state.mutes.insert(mute.id.clone(), mute.clone());
                state.mutes.values().cloned().collect()
            };
            self.spool_mutes(all).await
        })
    }

    fn remove_mute<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let (removed, all) = {
                let mut state = self.state();
                let removed = state.mutes.remove(id).is_some();
                (removed, state.mutes.values().cloned().collect())
            };
            if removed {
                self.spool_mutes(all).await?;
            }
            Ok(removed)
        })
    }

    fn mutes(&self) -> StoreFuture<'_, Vec<Mute>> {
        Box::pin(async move { Ok(self.state().mutes.values().cloned().collect()) })
    }

    fn accept_view<'a>(&'a self, camera: &'a str, at_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.state().views.insert(camera.to_owned(), at_ms);
            Ok(())
        })
    }

    fn accepted_views(&self) -> StoreFuture<'_, BTreeMap<String, u64>> {
        Box::pin(async move { Ok(self.state().views.clone()) })
    }

    fn snapshot<'a>(&'a self, alert_id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.picture(Picture::Snapshot, alert_id))
    }
}

/// The two pictures kept per alert: each in a spool directory of its own, or without a
/// spool in a memory list of the newest [`MEMORY_SNAPSHOTS`].
#[derive(Debug, Clone, Copy)]
enum Picture {
    /// With its boxes drawn, for operators.
    Snapshot,
    /// Without them, for learning material.
    Frame,
}

impl Picture {
    fn dir(self, spool: &Spool) -> &Path {
        match self {
            Picture::Snapshot => &spool.snapshots,
            Picture::Frame => &spool.frames,
        }
    }

    fn list(self, state: &mut State) -> &mut VecDeque<(String, Vec<u8>)> {
        match self {
            Picture::Snapshot => &mut state.snapshots,
            Picture::Frame => &mut state.frames,
        }
    }
}

impl MemoryStore {
    /// Makes the mutes exactly `mutes` (a copy of the shared store's), writing the spool
    /// only when they changed.
    pub(crate) async fn replace_mutes(&self, mutes: &[Mute]) -> Result<(), Error> {
        let changed = {
            let mut state = self.state();
            let same = state.mutes.len() == mutes.len()
                && mutes.iter().all(|m| state.mutes.get(&m.id) == Some(m));
            if !same {
                state.mutes = mutes.iter().map(|m| (m.id.clone(), m.clone())).collect();
            }
            !same
        };
        if changed {
            self.spool_mutes(mutes.to_vec()).await?;
        }
        Ok(())
    }

    async fn put_picture(
        &self,
        kind: Picture,
        alert_id: &str,
        jpeg: &[u8],
        ttl: Duration,
    ) -> Result<(), Error> {
        match &self.spool {
            Some(spool) => {
                let spool = spool.clone();
                let (id, jpeg) = (alert_id.to_owned(), jpeg.to_vec());
                blocking(move || spool.put_jpeg(kind.dir(&spool), &id, &jpeg, ttl)).await
            }
            None => {
                let mut state = self.state();
                let list = kind.list(&mut state);
                if list.len() >= MEMORY_SNAPSHOTS {
                    list.pop_front();
                }
                list.push_back((alert_id.to_owned(), jpeg.to_vec()));
                Ok(())
            }
        }
    }

    async fn picture(&self, kind: Picture, alert_id: &str) -> Result<Option<Vec<u8>>, Error> {
        match &self.spool {
            Some(spool) => {
                let spool = spool.clone();
                let id = alert_id.to_owned();
                blocking(move || spool.jpeg(kind.dir(&spool), &id)).await
            }
            None => Ok((kind.list(&mut self.state()).iter())
                .find(|(id, _)| id == alert_id)
                .map(|(_, jpeg)| jpeg.clone())),
        }
    }

    /// Writes every mute to the spool, when there is one.
    async fn spool_mutes(&self, all: Vec<Mute>) -> Result<(), Error> {
        match &self.spool {
            Some(spool) => {
                let spool = spool.clone();
                blocking(move || spool.put_mutes(&all)).await
            }
            None => Ok(()),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::store(format!("spool task failed: {e}")))?
}

/// One file per outbox record, named by a sequence number so a listing is in order, and one
/// per scheduled escalation, named by its alert id. Each is written to a temporary name,
/// synced and renamed: a crash leaves whole records or none.
struct Spool {
    dir: PathBuf,
    outbox: PathBuf,
    escalations: PathBuf,
    snapshots: PathBuf,
    /// Clean frames of alerts, as `{id}.jpg`.
    frames: PathBuf,
    /// Judged alerts: `{id}.json` and its frame `{id}.jpg`.
    judged: PathBuf,
    next_seq: Mutex<u64>,
}

/// An escalation as spooled.
#[derive(serde::Serialize, serde::Deserialize)]
struct SpooledEscalation {
    due_ms: u64,
    alert: String,
}

impl Spool {
    fn open(dir: &Path) -> Result<Self, Error> {
        let outbox = dir.join("outbox");
        let escalations = dir.join("escalations");
        let snapshots = dir.join("snapshots");
        let frames = dir.join("frames");
        let judged = dir.join("judged");
        for d in [&outbox, &escalations, &snapshots, &frames, &judged] {
            fs::create_dir_all(d).map_err(|e| {
                Error::store(format!(
                    "cannot create the spool directory {}: {e}; set [node] data_dir to a writable place",
                    d.display()
                ))
            })?;
        }
        let spool = Self {
            dir: dir.to_owned(),
            outbox,
            escalations,
            snapshots,
            frames,
            judged,
            next_seq: Mutex::new(0),
        };
        let last = spool
            .keys()?
            .last()
            .and_then(|k| k.strip_suffix(".json")?.parse::<u64>().ok());
        *spool.next_seq.lock().unwrap_or_else(|e| e.into_inner()) = last.map_or(0, |s| s + 1);
        Ok(spool)
    }

    fn io_error(&self, what: &str, path: &Path, e: std::io::Error) -> Error {
        Error::store(format!("spool: cannot {what} {}: {e}", path.display()))
    }

    /// Outbox file names, oldest first.
    fn keys(&self) -> Result<Vec<String>, Error> {
        let entries =
            fs::read_dir(&self.outbox).map_err(|e| self.io_error("list", &self.outbox, e))?;
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Writes `{id}.jpg` in `dir`, and removes what is older than `ttl` there.
    fn put_jpeg(
        &self,
        dir: &Path,
        alert_id: &str,
        jpeg: &[u8],
        ttl: Duration,
    ) -> Result<(), Error> {
        check_alert_id(alert_id)?;
        let path = dir.join(format!("{alert_id}.jpg"));
        fs::write(&path, jpeg).map_err(|e| self.io_error("write", &path, e))?;
        expire(dir, ttl);
        Ok(())
    }

    fn jpeg(&self, dir: &Path, alert_id: &str) -> Result<Option<Vec<u8>>, Error> {
        check_alert_id(alert_id)?;
        let path = dir.join(format!("{alert_id}.jpg"));
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    fn keep_judged(
        &self,
        judged: &JudgedAlert,
        frame: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let id = &judged.alert.id;
        check_alert_id(id)?;
        if let Some(jpeg) = frame {
            let path = self.judged.join(format!("{id}.jpg"));
            self.write_atomic(&path, jpeg)?;
        }
        let json = serde_json::to_vec(judged)
            .map_err(|e| Error::store(format!("spool: cannot encode judged alert {id}: {e}")))?;
        self.write_atomic(&self.judged.join(format!("{id}.json")), &json)?;
        expire(&self.judged, ttl);
        Ok(())
    }

    /// Every judged alert kept; a file that does not parse is skipped with a warning.
    fn judged(&self) -> Result<Vec<JudgedAlert>, Error> {
        let entries =
            fs::read_dir(&self.judged).map_err(|e| self.io_error("list", &self.judged, e))?;
        let mut found = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let read = fs::read(&path).map_err(|e| e.to_string());
            match read.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                Ok(judged) => found.push(judged),
                Err(e) => tracing::warn!(file = %path.display(), "judged alert skipped: {e}"),
            }
        }
        Ok(found)
    }

    fn mutes_path(&self) -> PathBuf {
        self.dir.join("mutes.json")
    }

    fn put_mutes(&self, mutes: &[Mute]) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(mutes)
            .map_err(|e| Error::store(format!("spool: cannot encode the mutes: {e}")))?;
        self.write_atomic(&self.mutes_path(), &json)
    }

    /// The mutes of an earlier run; none when the file is missing. A file that does not
    /// parse is an error naming it: starting without the operators' mutes would bring back
    /// the false alarms they silenced.
    fn mutes(&self) -> Result<Vec<Mute>, Error> {
        let path = self.mutes_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::store(format!(
                    "spool: {} does not parse ({e}); fix or remove it (removing it unmutes every region)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    /// Writes `bytes` to `path` whole or not at all.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = fs::File::create(&tmp).map_err(|e| self.io_error("create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| self.io_error("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| self.io_error("rename", &tmp, e))
    }

    fn append(&self, record: &OutboxRecord) -> Result<String, Error> {
        let seq = {
            let mut next = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
            let seq = *next;
            *next += 1;
            seq
        };
        let key = format!("{seq:020}.json");
        let json = serde_json::to_vec(record)
            .map_err(|e| Error::store(format!("spool: cannot encode a record: {e}")))?;
        self.write_atomic(&self.outbox.join(&key), &json)?;
        Ok(key)
    }

    fn pending(&self) -> Result<Vec<(String, OutboxRecord)>, Error> {
        let mut records = Vec::new();
        for key in self.keys()? {
            let path = self.outbox.join(&key);
            let parsed = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<OutboxRecord>(&b).map_err(|e| e.to_string())
            });
            match parsed {
                Ok(record) => records.push((key, record)),
                Err(e) => {
                    // Kept beside the spool for a person to look at, never silently dropped.
                    let bad = path.with_extension("bad");
                    tracing::error!(
                        file = %path.display(),
                        moved_to = %bad.display(),
                        "outbox record is unreadable ({e}); it is set aside and not published"
                    );
                    let _ = fs::rename(&path, &bad);
                }
            }
        }
        Ok(records)
    }

    fn remove(&self, key: &str) -> Result<(), Error> {
        if key.contains(['/', '\\']) || !key.ends_with(".json") {
            return Err(Error::store(format!("spool: `{key}` is not an outbox key")));
        }
        let path = self.outbox.join(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("remove", &path, e)),
        }
    }

    fn escalation_path(&self, alert_id: &str) -> Result<PathBuf, Error> {
        check_alert_id(alert_id)?;
        Ok(self.escalations.join(format!("{alert_id}.json")))
    }

    fn put_escalation(&self, alert_id: &str, due: SystemTime, alert: &str) -> Result<(), Error> {
        let path = self.escalation_path(alert_id)?;
        let record = SpooledEscalation {
            due_ms: super::millis_since_epoch(due),
            alert: alert.to_owned(),
        };
        let json = serde_json::to_vec(&record)
            .map_err(|e| Error::store(format!("spool: cannot encode an escalation: {e}")))?;
        self.write_atomic(&path, &json)
    }

    fn remove_escalations(&self, alert_ids: &[String]) -> Result<(), Error> {
        for id in alert_ids {
            let path = self.escalation_path(id)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("remove", &path, e)),
            }
        }
        Ok(())
    }

    /// Every spooled escalation: alert id, due time, alert JSON. An unreadable file is set
    /// aside (`.bad`) with an error naming it.
    fn escalations(&self) -> Result<Vec<(String, SystemTime, String)>, Error> {
        let entries = fs::read_dir(&self.escalations)
            .map_err(|e| self.io_error("list", &self.escalations, e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str()?.strip_suffix(".json"))
                .map(str::to_owned)
            else {
                continue;
            };
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<SpooledEscalation>(&b).map_err(|e| e.to_string())
                })
                .and_then(|r| check_alert_id(&id).map(|()| r).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) => {
                    let due = SystemTime::UNIX_EPOCH + Duration::from_millis(r.due_ms);
                    found.push((id, due, r.alert));
                }
                Err(e) => {
                    let bad = path.with_extension("bad");
                    tracing::error!(
                        file = %path.display(),
                        moved_to = %bad.display(),
                        "spooled escalation is unreadable ({e}); it is set aside and not escalated"
                    );
                    let _ = fs::rename(&path, &bad);
                }
            }
        }
        Ok(found)
    }
}

/// Deletes the files in `dir` last written more than `ttl` ago, so the spool does not grow
/// without bound.
fn expire(dir: &Path, ttl: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > ttl);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Alert ids name spool files: only ULID characters, so no id can reach outside the spool.
fn check_alert_id(alert_id: &str) -> Result<(), Error> {
    if alert_id.is_empty()
        || alert_id.len() > 64
        || !alert_id.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(Error::store(format!("`{alert_id}` is not an alert id")));
    }
    Ok(())
}
