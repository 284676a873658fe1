//! The running cameras. Each is three tasks: ingest (RTSP in, frames into its slot), its
//! analysis (the slot in, events out to fusion) and a status follower (its state out to the
//! API, the metrics and the status topic). [`Cameras::apply`] makes the running set what a
//! configuration asks for; [`Directory`] is what fusion may ask of a running camera.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sharpeyes_analytics::Analysis;
use sharpeyes_config::{Camera, Config};
use sharpeyes_ingest::{Frame, FrameSlot, Timeouts, start_camera};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Sources;
use crate::status::{Handoff, StatusSinks, follow};

/// How long a stopping camera's tasks get: its analysis waits for the models' answers to
/// what it submitted (bounded by analytics) before its events are sent.
const STOP_LIMIT: Duration = Duration::from_secs(12);

/// What a change did to the running cameras.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Applied {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    /// Cameras that could not start, with why.
    pub failed: Vec<(String, String)>,
    /// Changes outside `[[cameras]]`, which take a restart.
    pub ignored: Option<String>,
    /// In a cluster: the change was shared with every node, and the node the assignment
    /// gives each camera starts or stops it at its next step (`added` and `removed` say
    /// what changed on this node now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// What fusion may ask of the running cameras: verify mode on and off, and their latest
/// frame. Verify mode asked for a camera is remembered, so a camera restarted by a reload
/// comes back in it. Cheap to clone.
#[derive(Clone, Default)]
pub struct Directory(Arc<Mutex<DirectoryInner>>);

#[derive(Default)]
struct DirectoryInner {
    slots: HashMap<String, Arc<FrameSlot>>,
    verifying: HashSet<String>,
}

impl Directory {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirectoryInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Verify mode on or off for `camera`: every frame decoded and analysed while on.
    pub fn set_verify(&self, camera: &str, on: bool) {
        let mut d = self.lock();
        if on {
            d.verifying.insert(camera.to_owned());
        } else {
            d.verifying.remove(camera);
        }
        if let Some(slot) = d.slots.get(camera) {
            slot.set_verify(on);
        }
    }

    pub fn verifying(&self, camera: &str) -> bool {
        self.lock().verifying.contains(camera)
    }

    /// The camera's last decoded frame, if it runs and has one.
    pub fn latest_frame(&self, camera: &str) -> Option<Arc<Frame>> {
        self.lock().slots.get(camera)?.latest()
    }

    /// A running camera's slot; it takes the verify mode asked for it.
    pub fn insert(&self, camera: &str, slot: Arc<FrameSlot>) {
        let mut d = self.lock();
        slot.set_verify(d.verifying.contains(camera));
        d.slots.insert(camera.to_owned(), slot);
    }

    fn remove(&self, camera: &str) {
        self.lock().slots.remove(camera);
    }
}

struct Running {
    /// The camera's configuration as text: a changed entry restarts the camera.
    fingerprint: String,
    stop: watch::Sender<bool>,
    tasks: [JoinHandle<()>; 3],
}

/// The running cameras, and what starting one needs.
pub struct Cameras {
    /// The configuration the service started with: hazards, models, grids, sensors.
    config: Arc<Config>,
    /// Taken when the service stops, so the models finish their queues.
    analysis: Mutex<Option<Arc<Analysis>>>,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// What the last [`Cameras::apply`] asked for.
    desired: Mutex<Option<Arc<Config>>>,
    /// In a cluster, the cameras whose lease this node holds: only those run. `None`: all.
    owned: Mutex<Option<BTreeSet<String>>>,
    /// Cameras about to be taken over from another node, timed until they stream here.
    handoffs: Mutex<HashMap<String, Handoff>>,
    directory: Directory,
    sources: Arc<Sources>,
    status: StatusSinks,
}

impl Cameras {
    pub(crate) fn new(
        config: Arc<Config>,
        analysis: Analysis,
        directory: Directory,
        sources: Arc<Sources>,
        status: StatusSinks,
    ) -> Self {
        Self {
            config,
            analysis: Mutex::new(Some(Arc::new(analysis))),
            running: tokio::sync::Mutex::new(HashMap::new()),
            desired: Mutex::new(None),
            owned: Mutex::new(None),
            handoffs: Mutex::new(HashMap::new()),
            directory,
            sources,
            status,
        }
    }

    /// The configuration the service started with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Makes the running cameras those enabled in `new` (in a cluster, of those this node
    /// owns): starts the new ones, stops the gone ones, restarts the changed ones, and leaves
    /// the others alone.
    pub async fn apply(&self, new: &Config) -> Applied {
        sharpeyes_ingest::coalesce_reads(new.ingest.receive_coalesce);
        sharpeyes_ingest::keyframe_decoders(new.ingest.keyframe_decoders);
        *self.desired.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(new.clone()));
        self.reconcile().await
    }

    /// In a cluster: runs only `owned` of the cameras [`Cameras::apply`] asked for.
    pub async fn set_owned(&self, owned: BTreeSet<String>) -> Applied {
        *self.owned.lock().unwrap_or_else(PoisonError::into_inner) = Some(owned);
        let applied = self.reconcile().await;
        // Those not started now (failed) are not timed later.
        self.handoffs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        applied
    }

    /// Times `camera`'s handoff when it next starts here (a cluster taking it over).
    pub(crate) fn expect_handoff(&self, camera: &str, handoff: Handoff) {
        self.handoffs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(camera.to_owned(), handoff);
    }

    /// The enabled cameras of the configuration, running here or not: what a cluster
    /// assigns.
    pub fn configured(&self) -> Vec<Camera> {
        let desired = self.desired.lock().unwrap_or_else(PoisonError::into_inner);
        desired.as_ref().map_or_else(Vec::new, |c| {
            c.cameras.iter().filter(|c| c.enabled).cloned().collect()
        })
    }

    /// The ids of the cameras running here.
    pub async fn running(&self) -> BTreeSet<String> {
        self.running.lock().await.keys().cloned().collect()
    }

    async fn reconcile(&self) -> Applied {
        let mut applied = Applied::default();
        let mut running = self.running.lock().await;
        let Some(new) = self
            .desired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return applied;
        };
        let owned = self
            .owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let runs_here = |c: &&Camera| c.enabled && owned.as_ref().is_none_or(|o| o.contains(&c.id));
        let wanted: HashMap<&str, &Camera> = new
            .cameras
            .iter()
            .filter(runs_here)
            .map(|c| (c.id.as_str(), c))
            .collect();
        let gone_ids: Vec<String> = running
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        let gone: Vec<(String, Running)> = gone_ids
            .into_iter()
            .filter_map(|id| running.remove(&id).map(|r| (id, r)))
            .collect();
        // All at once: a node handing cameras over must let go of them within the lease.
        let stops = gone.into_iter().map(|(id, r)| async move {
            self.stop_one(&id, r).await;
            id
        });
        applied.removed = futures_util::future::join_all(stops).await;
        // Gone from the configuration, not only from this node: its retained topics go too,
        // after its last `stopped` (each stop waited for its status task).
        for id in &applied.removed {
            if !new.cameras.iter().any(|c| c.id == *id) {
                self.status.alerts.forget_camera(id);
            }
        }
        for camera in new.cameras.iter().filter(runs_here) {
            let fingerprint = format!("{camera:?}");
            let restart = match running.get(&camera.id) {
                Some(r) if r.fingerprint == fingerprint => continue,
                Some(_) => true,
                None => false,
            };
            if let Some(r) = running.remove(&camera.id) {
                self.stop_one(&camera.id, r).await;
            }
            match self.start_one(camera, fingerprint) {
                Ok(r) => {
                    running.insert(camera.id.clone(), r);
                    if restart {
                        applied.restarted.push(camera.id.clone());
                    } else {
                        applied.added.push(camera.id.clone());
                    }
                }
                Err(e) => {
                    tracing::error!(camera = %camera.id, "camera not started: {e}");
                    applied.failed.push((camera.id.clone(), e));
                }
            }
        }
        applied
    }

    fn start_one(&self, camera: &Camera, fingerprint: String) -> Result<Running, String> {
        let analysis = self
            .analysis
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or("the service is stopping")?;
        let prepared = analysis.prepare(camera).map_err(|e| e.to_string())?;
        let (stop, stop_rx) = watch::channel(false);
        let handle = start_camera(
            camera,
            prepared.input_side(),
            prepared.skip_quiet(),
            Timeouts::default(),
            stop_rx.clone(),
        )
        .map_err(|e| e.to_string())?;
        let analysing = analysis.watch(prepared, handle.frames.clone(), stop_rx);
        self.status.board.add(camera);
        self.sources.add_camera(&camera.id, &handle);
        self.directory.insert(&camera.id, handle.frames.clone());
        let handoff = self
            .handoffs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&camera.id);
        let following = tokio::spawn(follow(
            camera.id.clone(),
            handle.state.clone(),
            self.status.clone(),
            handoff,
        ));
        Ok(Running {
            fingerprint,
            stop,
            tasks: [handle.task, analysing, following],
        })
    }

    async fn stop_one(&self, id: &str, running: Running) {
        let _ = running.stop.send(true);
        for task in running.tasks {
            let _ = tokio::time::timeout(STOP_LIMIT, task).await;
        }
        self.status.board.remove(id);
        self.sources.remove_camera(id);
        self.status.metrics.forget_camera(id);
        self.directory.remove(id);
    }

    /// Stops every camera at once (their last frames' events still go out), then lets each
    /// model finish its queue. No camera starts after this.
    pub(crate) async fn stop_all(&self) {
        let analysis = self
            .analysis
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let running: Vec<Running> = self.running.lock().await.drain().map(|(_, r)| r).collect();
        for r in &running {
            let _ = r.stop.send(true);
        }
        let tasks = running.into_iter().flat_map(|r| r.tasks);
        let _ = tokio::time::timeout(STOP_LIMIT, futures_util::future::join_all(tasks)).await;
        if let Some(analysis) = analysis.and_then(Arc::into_inner) {
            analysis.stop().await;
        }
    }
}
