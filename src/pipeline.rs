//! The service: every configured camera through ingest -> analytics -> alerts, and every
//! sensor through the sensor rules and fusion.
//!
//! Per camera, one task takes the newest decoded frame from its slot, runs the motion gate
//! (bypassed in verify mode) and submits the frame to the batcher of each model the camera
//! uses. One thread per model runs inference on batches across cameras; one router thread
//! hands detections back to the camera's analyzer and confirmed hazards to
//! [`Sensing::on_video`], which publishes them (fused with a sensor alarm where one waits).
//! Camera states go out as retained status. Nothing on the frame path waits for anything
//! slower than itself: slots keep the newest frame, batchers refuse when full.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use sharpeyes_alerts::{
    AlertSettings, Alerts, CameraPhase, EmbeddedBroker, FrameSize, MqttSettings, StateStore,
    open_store,
};
use sharpeyes_analytics::{
    AnalysisSettings, AsRgb, Batcher, BatcherConfig, CameraAnalyzer, Detections, Detector, Gate,
    NmsConfig, RgbImage, Runtime,
};
use sharpeyes_config::{Camera, Config, Install};
use sharpeyes_ingest::{CameraHandle, CameraState, Timeouts, start_camera};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, Sources, reason_class, stage};
use crate::sensing::Sensing;

/// A frame waiting for inference is dropped once this old: late detections are worth less
/// than the next frame.
const MAX_FRAME_AGE: Duration = Duration::from_secs(2);
/// Frames queued per model before new ones are refused.
const MODEL_QUEUE: usize = 64;
/// The broker port `run` embeds when no `[mqtt]` is configured.
pub const EMBEDDED_BROKER: &str = "127.0.0.1:1883";

/// Every camera's state and last error, for the API and the operators' page.
#[derive(Clone, Default)]
pub struct CameraBoard(Arc<Mutex<Vec<CameraView>>>);

#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    pub grid: String,
    /// connecting, streaming, reconnecting, failed or stopped.
    pub state: &'static str,
    /// Why it is reconnecting or failed; the last error otherwise.
    pub reason: Option<String>,
    /// When it entered this state (RFC 3339).
    pub since: String,
}

impl CameraBoard {
    pub fn list(&self) -> Vec<CameraView> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remove(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|v| v.id != id);
    }

    fn add(&self, camera: &Camera) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|v| v.id != camera.id);
        list.push(CameraView {
            id: camera.id.clone(),
            name: camera.name.clone(),
            kind: camera.kind.as_str().to_owned(),
            unit: camera.unit.clone(),
            grid: camera.grid().to_owned(),
            state: "connecting",
            reason: None,
            since: now_rfc3339(),
        });
    }

    fn set(&self, id: &str, state: &'static str, reason: Option<&str>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = list.iter_mut().find(|v| v.id == id) {
            v.state = state;
            // The last error stays visible after a recovery.
            if reason.is_some() {
                v.reason = reason.map(sharpeyes_config::redact_userinfo);
            }
            v.since = now_rfc3339();
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A decoded frame on its way through the models.
pub struct AnalysedFrame {
    pub rgb: Arc<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    pub received_at: SystemTime,
    /// When the camera task took it: the clock of the tracker and the dwell rules.
    pub taken: Instant,
}

impl AsRgb for AnalysedFrame {
    fn rgb(&self) -> RgbImage<'_> {
        RgbImage::new(self.width, self.height, &self.rgb).expect("a frame's size matches its bytes")
    }
}

/// Which camera slot and model a batch entry belongs to.
type Tag = (usize, usize);
/// One batcher per loaded model, in the order of `Cameras::model_names`.
type Batchers = Arc<Vec<Batcher<AnalysedFrame, Tag>>>;

/// The models, loaded: what `start` needs besides the configuration.
pub struct Models {
    detectors: Vec<(String, Detector)>,
}

impl Models {
    /// Loads every model a camera uses (with its start-up checks).
    pub fn load(config: &Config, install: &Install) -> Result<Models, String> {
        let lib = install
            .onnxruntime
            .as_ref()
            .ok_or("ONNX Runtime not found: run `make setup` (or set ORT_DYLIB_PATH)")?;
        let runtime = Runtime::load(lib)?;
        let mut used: Vec<&str> = config
            .cameras
            .iter()
            .filter(|c| c.enabled)
            .flat_map(|c| config.camera_hazards(c).map(|h| h.model.as_str()))
            .collect();
        used.sort_unstable();
        used.dedup();
        let mut detectors = Vec::new();
        for name in used {
            let spec = config
                .model(name)
                .ok_or_else(|| format!("model `{name}` is not in the configuration"))?;
            let started = Instant::now();
            let d = Detector::load(runtime, spec, NmsConfig::default())
                .map_err(|e| format!("model `{name}`: {e}"))?;
            tracing::info!(model = name, ms = started.elapsed().as_millis() as u64, classes = ?d.classes(), "model loaded");
            detectors.push((name.to_owned(), d));
        }
        Ok(Models { detectors })
    }
}

/// Where the running service can be reached.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub http: SocketAddr,
    pub broker: String,
    /// The embedded broker's address, when there is one.
    pub embedded_broker: Option<SocketAddr>,
    pub prefix: String,
}

/// The running service.
pub struct Pipeline {
    pub endpoints: Endpoints,
    pub alerts: Alerts,
    pub sensing: Sensing,
    cameras: Arc<Cameras>,
    control: mpsc::Sender<Control>,
    router: Option<std::thread::JoinHandle<()>>,
    service: JoinHandle<()>,
    _broker: Option<EmbeddedBroker>,
}

/// Where the configuration came from, so it can be read again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file; `None` for the demo's built-in configuration (nothing to reload).
    pub file: Option<PathBuf>,
    /// Its text as loaded.
    pub text: String,
    pub model_dirs: Vec<PathBuf>,
}

/// A change to the running cameras, from SIGHUP or the API.
pub enum Control {
    /// Read the configuration file again and apply its cameras.
    Reload(oneshot::Sender<Result<Applied, String>>),
    /// Add a camera: the body of one `[[cameras]]` table, in TOML.
    Add(String, oneshot::Sender<Result<Applied, String>>),
    /// Remove a camera by id.
    Remove(String, oneshot::Sender<Result<Applied, String>>),
}

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
}

impl Pipeline {
    /// Starts everything on the current tokio runtime; it runs until `shutdown` turns true,
    /// then [`Pipeline::stop`] drains it.
    pub async fn start(
        config: Arc<Config>,
        source: ConfigSource,
        models: Models,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Pipeline, String> {
        let (mqtt, embedded) = match &config.mqtt {
            Some(m) => (MqttSettings::from_config(m, &config.node.id)?, None),
            None => {
                let broker = EmbeddedBroker::start(EMBEDDED_BROKER.parse().expect("an address"))
                    .or_else(|_| {
                        EmbeddedBroker::start("127.0.0.1:0".parse().expect("an address"))
                    })?;
                let port = broker.addr.port();
                let prefix = "sharpeyes";
                (
                    MqttSettings::plain("127.0.0.1", port, prefix, &config.node.id),
                    Some(broker),
                )
            }
        };
        let prefix = mqtt.prefix.clone();
        let endpoints_broker = mqtt.broker();
        let store: Arc<dyn StateStore> = open_store(&config).await?;
        tracing::info!(store = %store.describe(), broker = %endpoints_broker, "state store open");
        let listener = crate::http::bind(config.http.listen, false).await?;
        let http = listener
            .local_addr()
            .map_err(|e| format!("HTTP listener: {e}"))?;
        let metrics = Metrics::new();
        let token = config
            .http
            .token
            .as_ref()
            .map(|t| t.expand().map_err(|e| format!("[http] token: {e}")))
            .transpose()?;
        let mut settings = AlertSettings::from_config(&config);
        if config.http.public_url.is_none() {
            settings.snapshot_base_url = format!("http://{http}");
        }
        settings.subscriptions = Sensing::subscriptions(&config, &prefix);
        let (alerts, alerts_task) = Alerts::start(
            config.clone(),
            store.clone(),
            mqtt,
            settings,
            shutdown.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let (sensing, sensing_task) =
            Sensing::start(config.clone(), alerts.clone(), &prefix, shutdown.clone())?;

        // One batcher (one inference thread) per model; detections come back on one channel.
        let (results_tx, results_rx) =
            crossbeam_channel::unbounded::<Detections<AnalysedFrame, Tag>>();
        let mut model_names = Vec::new();
        let mut batchers = Vec::new();
        let mut sources = Sources {
            alerts: Some(alerts.clone()),
            sensing: Some(sensing.clone()),
            ..Sources::default()
        };
        for (name, detector) in models.detectors {
            let spec = config.model(&name).expect("loaded models are configured");
            let batcher_config = BatcherConfig {
                max_batch: spec.max_batch.max(1),
                max_wait: spec.max_wait,
                max_age: MAX_FRAME_AGE,
                queue: MODEL_QUEUE,
            };
            let batcher = Batcher::start(vec![detector], batcher_config, results_tx.clone());
            sources.models.push((name.clone(), batcher.stats().clone()));
            batchers.push(batcher);
            model_names.push(name);
        }
        drop(results_tx);

        let board = CameraBoard::default();
        let sources = Arc::new(sources);
        let classes = model_names
            .iter()
            .map(|n| {
                let spec = config.model(n).expect("configured");
                (n.clone(), spec.classes.clone())
            })
            .collect();
        let cameras = Arc::new(Cameras {
            config: config.clone(),
            model_names,
            classes,
            batchers: Mutex::new(Some(Arc::new(batchers))),
            slots: Mutex::new(HashMap::new()),
            running: tokio::sync::Mutex::new(HashMap::new()),
            next_slot: AtomicUsize::new(0),
            alerts: alerts.clone(),
            sensing: sensing.clone(),
            metrics: metrics.clone(),
            board: board.clone(),
            sources: sources.clone(),
            shutdown: shutdown.clone(),
        });
        let applied = cameras.apply(&config).await;
        if let Some((id, why)) = applied.failed.first() {
            return Err(format!("camera {id}: {why}"));
        }
        let (control, requests) = mpsc::channel(8);
        let http_state = crate::http::AppState {
            store,
            service: Some(crate::http::Service {
                alerts: alerts.clone(),
                metrics: metrics.clone(),
                sources,
                cameras: board,
                control: Some(control.clone()),
                token,
            }),
        };
        let http_task = crate::http::serve(listener, http_state, shutdown.clone());
        let service = tokio::spawn(async move {
            let _ = sensing_task.await;
            let _ = alerts_task.await;
            let _ = http_task.await;
        });
        tokio::spawn(control_loop(
            cameras.clone(),
            source,
            requests,
            shutdown.clone(),
        ));
        let router = Router {
            cameras: cameras.clone(),
            metrics,
            sensing: sensing.clone(),
            runtime: tokio::runtime::Handle::current(),
            snapshot_max_bytes: config.alerts.snapshot_max_bytes,
        };
        let router = std::thread::Builder::new()
            .name("detections".into())
            .spawn(move || router.run(results_rx))
            .map_err(|e| format!("cannot start the detection router: {e}"))?;
        Ok(Pipeline {
            endpoints: Endpoints {
                http,
                broker: endpoints_broker,
                embedded_broker: embedded.as_ref().map(|b| b.addr),
                prefix,
            },
            alerts,
            sensing,
            cameras,
            control,
            router: Some(router),
            service,
            _broker: embedded,
        })
    }

    /// After `shutdown` turned true: waits for the cameras, lets the models finish what is
    /// queued, then for the alert link to drain (bounded by the link).
    pub async fn stop(mut self) {
        let running: Vec<Running> = self
            .cameras
            .running
            .lock()
            .await
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in running {
            let _ = r.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), r.task).await;
        }
        let batchers = self
            .cameras
            .batchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let router = self.router.take();
        let _ = tokio::task::spawn_blocking(move || {
            // The camera tasks held the other references; dropping the last one lets each
            // model finish its queue and stop.
            drop(batchers);
            if let Some(r) = router {
                let _ = r.join();
            }
        })
        .await;
        // Hazards confirmed by the last frames are submitted by now; give them to the link.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.service).await;
    }

    /// Where SIGHUP and the API send camera changes.
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }
}

/// One running camera's analysis state, found by the router through its slot.
struct Slot {
    camera: Camera,
    analyzer: Mutex<CameraAnalyzer>,
}

struct Running {
    slot: usize,
    /// The camera's configuration as text: a changed entry restarts the camera.
    fingerprint: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running cameras, and what starting one needs.
struct Cameras {
    /// The configuration the service started with: hazards, models, grids, sensors.
    config: Arc<Config>,
    model_names: Vec<String>,
    classes: HashMap<String, Vec<String>>,
    /// Taken at shutdown, so the models finish their queues and stop.
    batchers: Mutex<Option<Batchers>>,
    slots: Mutex<HashMap<usize, Arc<Slot>>>,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    next_slot: AtomicUsize,
    alerts: Alerts,
    sensing: Sensing,
    metrics: Arc<Metrics>,
    board: CameraBoard,
    sources: Arc<Sources>,
    shutdown: watch::Receiver<bool>,
}

impl Cameras {
    /// Makes the running cameras those enabled in `new`: starts the new ones, stops the gone
    /// ones, restarts the changed ones, and leaves the others alone.
    async fn apply(&self, new: &Config) -> Applied {
        let mut applied = Applied::default();
        let mut running = self.running.lock().await;
        let wanted: HashMap<&str, &Camera> = new
            .cameras
            .iter()
            .filter(|c| c.enabled)
            .map(|c| (c.id.as_str(), c))
            .collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(r) = running.remove(&id) {
                self.stop_one(&id, r).await;
                applied.removed.push(id);
            }
        }
        for camera in new.cameras.iter().filter(|c| c.enabled) {
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
        let analyzer = CameraAnalyzer::new(
            &self.config,
            camera,
            |m| self.classes.get(m).map(Vec::as_slice),
            analysis_settings(&self.config.motion),
        )
        .map_err(|e| {
            format!("{e}; models load at start-up only: restart the service to add one")
        })?;
        let detect_side = analyzer
            .models()
            .filter_map(|m| self.config.model(m))
            .map(|m| m.input_size)
            .max()
            .unwrap_or(640);
        let models: Vec<usize> = analyzer
            .models()
            .filter_map(|m| self.model_names.iter().position(|n| n == m))
            .collect();
        let batchers = self
            .batchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or("the service is stopping")?;
        let (stop, stop_rx) = watch::channel(false);
        let handle = start_camera(camera, detect_side, Timeouts::default(), stop_rx.clone())
            .map_err(|e| e.to_string())?;
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Slot {
            camera: camera.clone(),
            analyzer: Mutex::new(analyzer),
        });
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot, shared.clone());
        self.board.add(camera);
        self.sources.add_camera(&camera.id, &handle);
        let task = CameraTask {
            slot,
            id: camera.id.clone(),
            handle,
            models,
            shared,
            batchers,
            alerts: self.alerts.clone(),
            sensing: self.sensing.clone(),
            published: None,
            metrics: self.metrics.clone(),
            gated: self
                .metrics
                .frames
                .with_label_values(&[&camera.id, "gated"]),
            analysed: self
                .metrics
                .frames
                .with_label_values(&[&camera.id, "analysed"]),
            board: self.board.clone(),
        };
        let task = tokio::spawn(task.run(self.shutdown.clone(), stop_rx));
        Ok(Running {
            slot,
            fingerprint,
            stop,
            task,
        })
    }

    async fn stop_one(&self, id: &str, running: Running) {
        let _ = running.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), running.task).await;
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&running.slot);
        self.board.remove(id);
        self.sources.remove_camera(id);
    }

    fn slot(&self, slot: usize) -> Option<Arc<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&slot)
            .cloned()
    }
}

/// Applies SIGHUP reloads and the API's camera changes, one at a time. Cameras added over the
/// API are kept as TOML beside the file's text, and removed ones as ids, so a reload keeps
/// them; neither is written to the file.
async fn control_loop(
    cameras: Arc<Cameras>,
    mut source: ConfigSource,
    mut requests: mpsc::Receiver<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut added: Vec<(String, String)> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        let request = tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        match request {
            Control::Reload(reply) => {
                let result = match &source.file {
                    None => {
                        Err("this configuration is built in: there is no file to reload".into())
                    }
                    Some(path) => match std::fs::read_to_string(path) {
                        Err(e) => Err(format!("{}: cannot read it: {e}", path.display())),
                        Ok(text) => {
                            let candidate = ConfigSource {
                                text,
                                ..source.clone()
                            };
                            let result = apply(&cameras, &candidate, &added, &removed).await;
                            if result.is_ok() {
                                source = candidate;
                            }
                            result
                        }
                    },
                };
                let _ = reply.send(result);
            }
            Control::Add(body, reply) => {
                let result = match camera_id(&body) {
                    Err(e) => Err(e),
                    Ok(id)
                        if effective(&source, &added, &removed)
                            .is_ok_and(|c| c.camera(&id).is_some()) =>
                    {
                        Err(format!(
                            "camera `{id}` already exists: remove it first, or change it in the configuration file and reload"
                        ))
                    }
                    Ok(id) if removed.contains(&id) => Err(format!(
                        "camera `{id}` is in the configuration file and was removed over the API; edit the file and reload to bring it back"
                    )),
                    Ok(id) => {
                        let mut candidate = added.clone();
                        candidate.push((id, body));
                        let result = apply(&cameras, &source, &candidate, &removed).await;
                        if result.is_ok() {
                            added = candidate;
                        }
                        result
                    }
                };
                let _ = reply.send(result);
            }
            Control::Remove(id, reply) => {
                let exists =
                    effective(&source, &added, &removed).is_ok_and(|c| c.camera(&id).is_some());
                let result = if !exists {
                    Err(format!("no camera `{id}`"))
                } else {
                    let (mut a, mut r) = (added.clone(), removed.clone());
                    if a.iter().any(|(i, _)| *i == id) {
                        a.retain(|(i, _)| *i != id);
                    } else {
                        r.push(id.clone());
                    }
                    let result = apply(&cameras, &source, &a, &r).await;
                    if result.is_ok() {
                        (added, removed) = (a, r);
                    }
                    result
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// The configuration with the API's additions and removals; every problem, with its line.
fn effective(
    source: &ConfigSource,
    added: &[(String, String)],
    removed: &[String],
) -> Result<Config, String> {
    let mut text = source.text.clone();
    for (_, body) in added {
        text.push_str("\n[[cameras]]\n");
        text.push_str(body);
        text.push('\n');
    }
    let origin = source
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("config/demo.toml"));
    let mut config = Config::parse(&text, &origin, &source.model_dirs)
        .map_err(|p| p.to_string())?
        .config;
    config.cameras.retain(|c| !removed.contains(&c.id));
    Ok(config)
}

async fn apply(
    cameras: &Cameras,
    source: &ConfigSource,
    added: &[(String, String)],
    removed: &[String],
) -> Result<Applied, String> {
    let config = effective(source, added, removed)?;
    let mut applied = cameras.apply(&config).await;
    let (mut before, mut after) = ((*cameras.config).clone(), config);
    before.cameras.clear();
    after.cameras.clear();
    if format!("{before:?}") != format!("{after:?}") {
        let note = "sections other than [[cameras]] changed: they take effect after a restart";
        tracing::warn!("{note}");
        applied.ignored = Some(note.into());
    }
    tracing::info!(added = ?applied.added, removed = ?applied.removed, restarted = ?applied.restarted, failed = applied.failed.len(), "cameras applied");
    Ok(applied)
}

/// The `id` of a posted camera table.
fn camera_id(body: &str) -> Result<String, String> {
    let table: toml::Table = body
        .parse()
        .map_err(|e| format!("the camera is not TOML: {e}"))?;
    match table.get("id") {
        Some(toml::Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err("the camera has no `id`: give id, name, kind, url, grid, hazards as in a [[cameras]] entry".into()),
    }
}

struct CameraTask {
    slot: usize,
    id: String,
    handle: CameraHandle,
    models: Vec<usize>,
    shared: Arc<Slot>,
    batchers: Batchers,
    alerts: Alerts,
    sensing: Sensing,
    /// The state last published, so a repeated one is not sent again.
    published: Option<CameraState>,
    metrics: Arc<Metrics>,
    /// This camera's frame counters, looked up once rather than per frame.
    gated: prometheus::IntCounter,
    analysed: prometheus::IntCounter,
    board: CameraBoard,
}

impl CameraTask {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        self.publish_state();
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => break,
                _ = crate::stopped(&mut stop) => break,
                changed = self.handle.state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.publish_state();
                }
                frame = self.handle.frames.next() => self.on_frame(frame),
            }
        }
        self.alerts
            .camera_status(&self.id, CameraPhase::Stopped, None);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.handle.task).await;
    }

    fn publish_state(&mut self) {
        let state = self.handle.state.borrow_and_update().clone();
        if self.published.as_ref() == Some(&state) {
            return;
        }
        self.published = Some(state.clone());
        let (phase, reason) = match state {
            CameraState::Connecting => (CameraPhase::Connecting, None),
            CameraState::Streaming => (CameraPhase::Streaming, None),
            CameraState::Backoff { reason, .. } => (CameraPhase::Reconnecting, Some(reason)),
            CameraState::Failed { reason } => (CameraPhase::Failed, Some(reason)),
            CameraState::Stopped => (CameraPhase::Stopped, None),
        };
        self.metrics.set_camera_state(&self.id, phase);
        self.board.set(&self.id, phase.as_str(), reason.as_deref());
        if let (CameraPhase::Reconnecting, Some(r)) = (phase, &reason) {
            self.metrics
                .reconnects
                .with_label_values(&[&self.id, reason_class(r)])
                .inc();
        }
        match &reason {
            Some(r) => tracing::warn!(camera = %self.id, state = ?phase, "camera: {r}"),
            None => tracing::info!(camera = %self.id, state = ?phase, "camera state"),
        }
        self.alerts
            .camera_status(&self.id, phase, reason.as_deref());
    }

    fn on_frame(&self, frame: sharpeyes_ingest::Frame) {
        let verifying = self.sensing.verifying(&self.id);
        self.handle.full_rate.store(verifying, Ordering::Relaxed);
        if let Ok(took) = SystemTime::now().duration_since(frame.received_at) {
            self.metrics.stage(stage::RECEIVE_DECODE, took);
        }
        let frame = Arc::new(AnalysedFrame {
            rgb: Arc::new(frame.rgb),
            width: frame.width,
            height: frame.height,
            received_at: frame.received_at,
            taken: Instant::now(),
        });
        self.sensing
            .note_frame(&self.id, frame.rgb.clone(), frame.width, frame.height);
        let gate = {
            let Ok(image) = RgbImage::new(frame.width, frame.height, &frame.rgb) else {
                tracing::warn!(camera = %self.id, "a decoded frame does not match its size; skipped");
                return;
            };
            let mut analyzer = self
                .shared
                .analyzer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            analyzer.gate(image, frame.taken)
        };
        if gate == Gate::Skip && !verifying {
            self.gated.inc();
            return;
        }
        self.analysed.inc();
        for &model in &self.models {
            // Refusals are counted by the batcher: a full queue means this frame is skipped.
            self.batchers[model].submit(frame.clone(), (self.slot, model));
        }
    }
}

/// Detections back to their camera's analyzer; confirmed hazards out as alerts.
struct Router {
    cameras: Arc<Cameras>,
    metrics: Arc<Metrics>,
    sensing: Sensing,
    runtime: tokio::runtime::Handle,
    snapshot_max_bytes: usize,
}

impl Router {
    fn run(self, results: crossbeam_channel::Receiver<Detections<AnalysedFrame, Tag>>) {
        // Ends when every batcher is gone.
        for d in results {
            let (slot, model) = d.tag;
            let model_name = &self.cameras.model_names[model];
            // A camera removed since: its last detections go nowhere.
            let Some(slot) = self.cameras.slot(slot) else {
                continue;
            };
            let frame = &d.frame;
            let m = &self.metrics;
            // Measured per batch: the cost each of its frames saw.
            m.stage(stage::QUEUE_WAIT, d.queue_wait);
            m.stage(stage::PREPROCESS, d.preprocess);
            m.stage(stage::INFERENCE, d.inference);
            m.batch_size
                .with_label_values(&[model_name])
                .observe(d.batch_size as f64);
            let rules_start = Instant::now();
            let events = {
                let mut analyzer = slot.analyzer.lock().unwrap_or_else(PoisonError::into_inner);
                analyzer.on_detections(
                    model_name,
                    &d.detections,
                    frame,
                    (frame.width, frame.height),
                    frame.taken,
                    frame.received_at,
                )
            };
            m.stage(stage::POSTPROCESS, rules_start.elapsed());
            for event in events {
                let snapshot_start = Instant::now();
                let boxes: Vec<[f32; 4]> = event
                    .objects
                    .iter()
                    .map(|o| [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2])
                    .collect();
                let snapshot = match sharpeyes_alerts::render(
                    &frame.rgb,
                    frame.width,
                    frame.height,
                    &boxes,
                    self.snapshot_max_bytes,
                ) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(camera = %event.camera, "snapshot not made: {e}");
                        None
                    }
                };
                m.stage(stage::SNAPSHOT, snapshot_start.elapsed());
                let size = FrameSize {
                    width: frame.width,
                    height: frame.height,
                };
                let sensing = self.sensing.clone();
                let metrics = self.metrics.clone();
                let slot = slot.clone();
                self.runtime.spawn(async move {
                    let publish_start = Instant::now();
                    let submitted = sensing
                        .on_video(&slot.camera, &event, size, snapshot.as_ref())
                        .await;
                    metrics.stage(stage::PUBLISH, publish_start.elapsed());
                    if let Err(e) = submitted {
                        tracing::error!(camera = %event.camera, hazard = %event.hazard, "alert not sent: {e}");
                    }
                });
            }
        }
    }
}

/// The per-camera analysis settings `[motion]` asks for. A disabled gate still runs (its
/// cost is a 64-cell-wide grey copy) but lets every frame through.
fn analysis_settings(motion: &sharpeyes_config::Motion) -> AnalysisSettings {
    let mut settings = AnalysisSettings::default();
    settings.motion.forced_interval = if motion.enabled {
        motion.forced_interval
    } else {
        Duration::ZERO
    };
    settings
}
