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
use std::sync::atomic::Ordering;
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
use sharpeyes_config::{Config, Install};
use sharpeyes_ingest::{CameraHandle, CameraState, Timeouts, start_camera};
use tokio::sync::watch;
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

    fn add(&self, camera: &sharpeyes_config::Camera) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(CameraView {
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

/// Which camera and model a batch entry belongs to.
type Tag = (usize, usize);

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
    cameras: Vec<JoinHandle<()>>,
    batchers: Option<Arc<Vec<Batcher<AnalysedFrame, Tag>>>>,
    router: Option<std::thread::JoinHandle<()>>,
    service: JoinHandle<()>,
    _broker: Option<EmbeddedBroker>,
}

impl Pipeline {
    /// Starts everything on the current tokio runtime; it runs until `shutdown` turns true,
    /// then [`Pipeline::stop`] drains it.
    pub async fn start(
        config: Arc<Config>,
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

        let mut analyzers = Vec::new();
        let mut handles = Vec::new();
        let board = CameraBoard::default();
        let classes: HashMap<&str, Vec<String>> = model_names
            .iter()
            .map(|n| {
                let spec = config.model(n).expect("configured");
                (n.as_str(), spec.classes.clone())
            })
            .collect();
        for camera in config.cameras.iter().filter(|c| c.enabled) {
            let analyzer = CameraAnalyzer::new(
                &config,
                camera,
                |m| classes.get(m).map(Vec::as_slice),
                AnalysisSettings::default(),
            )
            .map_err(|e| format!("camera {}: {e}", camera.id))?;
            let detect_side = analyzer
                .models()
                .filter_map(|m| config.model(m))
                .map(|m| m.input_size)
                .max()
                .unwrap_or(640);
            let handle = start_camera(camera, detect_side, Timeouts::default(), shutdown.clone())
                .map_err(|e| format!("camera {}: {e}", camera.id))?;
            board.add(camera);
            sources.cameras.push((
                camera.id.clone(),
                handle.counters.clone(),
                handle.frames.clone(),
            ));
            let models: Vec<usize> = analyzer
                .models()
                .filter_map(|m| model_names.iter().position(|n| n == m))
                .collect();
            analyzers.push(Arc::new(Mutex::new(analyzer)));
            handles.push((camera.id.clone(), handle, models));
        }
        let batchers = Arc::new(batchers);
        let mut cameras = Vec::new();
        for (index, (id, handle, models)) in handles.into_iter().enumerate() {
            let task = CameraTask {
                index,
                id,
                handle,
                models,
                analyzer: analyzers[index].clone(),
                batchers: batchers.clone(),
                alerts: alerts.clone(),
                sensing: sensing.clone(),
                published: None,
                metrics: metrics.clone(),
                board: board.clone(),
            };
            cameras.push(tokio::spawn(task.run(shutdown.clone())));
        }
        let http_state = crate::http::AppState {
            store,
            service: Some(crate::http::Service {
                alerts: alerts.clone(),
                metrics: metrics.clone(),
                sources: Arc::new(sources),
                cameras: board,
                token,
            }),
        };
        let http_task = crate::http::serve(listener, http_state, shutdown.clone());
        let service = tokio::spawn(async move {
            let _ = sensing_task.await;
            let _ = alerts_task.await;
            let _ = http_task.await;
        });
        let router = Router {
            analyzers,
            model_names,
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
            batchers: Some(batchers),
            router: Some(router),
            service,
            _broker: embedded,
        })
    }

    /// After `shutdown` turned true: waits for the cameras, lets the models finish what is
    /// queued, then for the alert link to drain (bounded by the link).
    pub async fn stop(mut self) {
        for c in self.cameras.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        let batchers = self.batchers.take();
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
}

struct CameraTask {
    index: usize,
    id: String,
    handle: CameraHandle,
    models: Vec<usize>,
    analyzer: Arc<Mutex<CameraAnalyzer>>,
    batchers: Arc<Vec<Batcher<AnalysedFrame, Tag>>>,
    alerts: Alerts,
    sensing: Sensing,
    /// The state last published, so a repeated one is not sent again.
    published: Option<CameraState>,
    metrics: Arc<Metrics>,
    board: CameraBoard,
}

impl CameraTask {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.publish_state();
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => break,
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
        let label = match phase {
            CameraPhase::Connecting => "connecting",
            CameraPhase::Streaming => "streaming",
            CameraPhase::Reconnecting => "reconnecting",
            CameraPhase::Failed => "failed",
            CameraPhase::Stopped => "stopped",
        };
        self.metrics.set_camera_state(&self.id, label);
        self.board.set(&self.id, label, reason.as_deref());
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
            let mut analyzer = self.analyzer.lock().unwrap_or_else(PoisonError::into_inner);
            analyzer.gate(image, frame.taken)
        };
        if gate == Gate::Skip && !verifying {
            self.metrics
                .frames
                .with_label_values(&[&self.id, "gated"])
                .inc();
            return;
        }
        self.metrics
            .frames
            .with_label_values(&[&self.id, "analysed"])
            .inc();
        for &model in &self.models {
            // Refusals are counted by the batcher: a full queue means this frame is skipped.
            self.batchers[model].submit(frame.clone(), (self.index, model));
        }
    }
}

/// Detections back to their camera's analyzer; confirmed hazards out as alerts.
struct Router {
    analyzers: Vec<Arc<Mutex<CameraAnalyzer>>>,
    model_names: Vec<String>,
    metrics: Arc<Metrics>,
    sensing: Sensing,
    runtime: tokio::runtime::Handle,
    snapshot_max_bytes: usize,
}

impl Router {
    fn run(self, results: crossbeam_channel::Receiver<Detections<AnalysedFrame, Tag>>) {
        // Ends when every batcher is gone.
        for d in results {
            let (camera, model) = d.tag;
            let frame = &d.frame;
            let m = &self.metrics;
            // Measured per batch: the cost each of its frames saw.
            m.stage(stage::QUEUE_WAIT, d.queue_wait);
            m.stage(stage::PREPROCESS, d.preprocess);
            m.stage(stage::INFERENCE, d.inference);
            m.batch_size
                .with_label_values(&[&self.model_names[model]])
                .observe(d.batch_size as f64);
            let rules_start = Instant::now();
            let events = {
                let mut analyzer = self.analyzers[camera]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                analyzer.on_detections(
                    &self.model_names[model],
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
                self.runtime.spawn(async move {
                    let publish_start = Instant::now();
                    let submitted = sensing.on_video(&event, size, snapshot.as_ref()).await;
                    metrics.stage(stage::PUBLISH, publish_start.elapsed());
                    if let Err(e) = submitted {
                        tracing::error!(camera = %event.camera, hazard = %event.hazard, "alert not sent: {e}");
                    }
                });
            }
        }
    }
}
