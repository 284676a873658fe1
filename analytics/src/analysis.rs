//! The analysis stage: the frames of every camera in, hazard events out.
//!
//! 1. [`Models::load`] loads and checks every detector the enabled cameras use (at start-up
//!    only: a wrong model fails here, naming it).
//! 2. [`Analysis::start`] starts one inference worker per model; the frames of every camera
//!    that uses a model share its batches (up to `max_batch` frames or `max_wait`).
//! 3. [`Analysis::prepare`] builds one camera's state (motion gate, a tracker per model,
//!    hazard rules) and says the frame size its models need, so that ingest decodes straight
//!    to it; [`Analysis::watch`] then starts the camera's task on its [`FrameSlot`].
//! 4. The task owns its camera's state, so nothing is locked: it takes the newest frame,
//!    gates it on motion (a frame decoded in verify mode always passes), submits it to each
//!    of its models with its own reply channel, and turns its own detections into
//!    [`VideoEvent`]s, sent forward to the one sink given to `start`. Nothing goes back.
//! 5. When its `stop` turns true the task takes no more frames, waits (bounded) for the
//!    answers to what it submitted, sends their events and ends. Once every task has ended,
//!    [`Analysis::stop`] lets each model finish its queue.
//!
//! Nothing here waits on anything slower than itself: the slot keeps the newest frame, and a
//! full model queue refuses the frame (counted in [`BatcherStats`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use sharpeyes_config::{Camera, Config};
use sharpeyes_ingest::cpu::{self, Stage};
use sharpeyes_ingest::{Frame, FrameSlot};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::batcher::{AsRgb, Batcher, BatcherConfig, BatcherStats, Detections, Reply};
use crate::camera::{AnalysisSettings, CameraAnalyzer, HazardEvent};
use crate::error::Error;
use crate::health::{Change, Diagnosis, HealthConfig, Measures};
use crate::image::RgbImage;
use crate::model::{Detector, Runtime};
use crate::motion::{Gate, GateReason};
use crate::postprocess::NmsConfig;

/// A frame waiting for inference is dropped once this old: late detections are worth less
/// than the next frame.
const MAX_FRAME_AGE: Duration = Duration::from_secs(2);
/// Frames queued per model before new ones are refused.
const MODEL_QUEUE: usize = 64;
/// How long a stopping camera waits for the answers to the frames it submitted.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The `stage` label of `sharpeyes_stage_seconds` for the stages measured here.
pub mod stage {
    /// Network arrival to the analysis task taking the decoded frame (depacketise, decode,
    /// slot wait).
    pub const RECEIVE_DECODE: &str = "receive_decode";
    /// Submission to the start of the frame's batch.
    pub const QUEUE_WAIT: &str = "queue_wait";
    pub const PREPROCESS: &str = "preprocess";
    /// The model run with box decoding and NMS.
    pub const INFERENCE: &str = "inference";
    /// Tracking and hazard rules.
    pub const POSTPROCESS: &str = "postprocess";
}

/// The metrics the analysis stage writes to; the service registers them with the rest.
#[derive(Clone)]
pub struct Telemetry {
    /// `sharpeyes_stage_seconds{stage}`: per frame (per batch for the batch stages).
    pub stage_seconds: HistogramVec,
    /// `sharpeyes_inference_batch_size{model}`.
    pub batch_size: HistogramVec,
    /// `sharpeyes_frames_total{camera,outcome}`: `gated` and `analysed` are counted here;
    /// the service mirrors ingest's outcomes into the same series.
    pub frames: IntCounterVec,
    /// `sharpeyes_task_panics_total{task}`: see [`Telemetry::guarded`].
    pub panics: IntCounterVec,
    /// `sharpeyes_task_restarts_total{task}`: a panic escaped a task's guards and its
    /// supervisor started it again.
    pub restarts: IntCounterVec,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// The metrics, not registered anywhere yet.
    pub fn new() -> Self {
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sharpeyes_stage_seconds",
                "Time spent per stage of the per-frame path.",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            &["stage"],
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                "sharpeyes_inference_batch_size",
                "Frames per inference batch.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
            &["model"],
        )
        .expect("valid metric");
        let frames = IntCounterVec::new(
            Opts::new(
                "sharpeyes_frames_total",
                "Frames per camera by outcome: received (access units), skipped (by sampling, never decoded), quiet (keyframes not decoded: their bitstream showed no change since the last one decoded), decode_only (decoded as a reference for later frames, not handed on), corrupt (lost to malformed, missing or reordered packets, or skipped after them until the next keyframe), decoded (handed on as RGB), dropped (replaced before analysis), gated (no motion), analysed.",
            ),
            &["camera", "outcome"],
        )
        .expect("valid metric");
        let panics = IntCounterVec::new(
            Opts::new(
                "sharpeyes_task_panics_total",
                "Panics caught while a task handled one event (a frame, an answer, a reading, an alarm); the task went on with the next.",
            ),
            &["task"],
        )
        .expect("valid metric");
        let restarts = IntCounterVec::new(
            Opts::new(
                "sharpeyes_task_restarts_total",
                "Restarts of a long-lived task after a panic escaped its per-event guard.",
            ),
            &["task"],
        )
        .expect("valid metric");
        Self {
            stage_seconds,
            batch_size,
            frames,
            panics,
            restarts,
        }
    }

    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.stage_seconds.clone()))?;
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.frames.clone()))?;
        registry.register(Box::new(self.panics.clone()))?;
        registry.register(Box::new(self.restarts.clone()))
    }

    /// Runs `task`'s handling of one event. A panic in it is logged with the task and what
    /// it said, counted in `sharpeyes_task_panics_total{task}`, and answered with `None`: the
    /// task goes on with its next event (its state as the panic left it), and no other task
    /// is touched. One bad frame, reading or alarm must not stop a camera, or all alerting.
    pub fn guarded<T>(&self, task: &str, handle: impl FnOnce() -> T) -> Option<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(handle)) {
            Ok(value) => Some(value),
            Err(panic) => {
                let what = sharpeyes_ingest::panic_message(panic.as_ref());
                tracing::error!(task, panic = %what, "a panic while handling one event: counted; the task goes on");
                self.panics.with_label_values(&[task]).inc();
                None
            }
        }
    }

    fn stage(&self, stage: &str) -> Histogram {
        self.stage_seconds.with_label_values(&[stage])
    }
}

/// Every detector the enabled cameras use, loaded and checked.
pub struct Models {
    detectors: Vec<Detector>,
}

impl Models {
    /// Loads each model a camera uses (with its start-up checks), logging how long it took.
    pub fn load(config: &Config, runtime: &Runtime) -> Result<Models, Error> {
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
            // Validation resolved every hazard's model, so it is there.
            let Some(spec) = config.model(name) else {
                continue;
            };
            let started = Instant::now();
            let detector = Detector::load(runtime, spec, NmsConfig::default())?;
            tracing::info!(model = name, ms = started.elapsed().as_millis() as u64, classes = ?detector.classes(), "model loaded");
            detectors.push(detector);
        }
        Ok(Models { detectors })
    }

    /// Models already loaded (tests and benches that load their own).
    pub fn from_detectors(detectors: Vec<Detector>) -> Models {
        Models { detectors }
    }
}

/// A confirmed hazard on a camera, on its way to fusion and the alerts.
#[derive(Debug)]
pub struct VideoEvent {
    /// The camera's configuration as it was started (it may have been added over the API).
    pub camera: Arc<Camera>,
    /// With the confirming frame, for the snapshot (rendered by the consumer).
    pub event: HazardEvent<Frame>,
    /// What the confirming frame cost on its way here.
    pub timings: Timings,
}

/// What a camera's picture diagnosis found, on its way to the health stage: sent for every
/// frame that started or ended a problem (with that frame, for its snapshot), and otherwise
/// at most every [`HEALTH_REPORT_EVERY`] with the latest measures.
#[derive(Debug)]
pub struct HealthReport {
    pub camera: Arc<Camera>,
    pub at: SystemTime,
    pub measures: Measures,
    pub changes: Vec<Change>,
    pub frame: Arc<Frame>,
}

/// How often a camera's measures are reported when nothing changes.
pub const HEALTH_REPORT_EVERY: Duration = Duration::from_secs(10);

/// One camera's diagnosis and where it reports.
struct HealthWatch {
    diagnosis: Diagnosis,
    night: Option<sharpeyes_config::NightHours>,
    reports: mpsc::UnboundedSender<HealthReport>,
    last_report: Option<Instant>,
    views: watch::Receiver<Arc<BTreeMap<String, u64>>>,
    /// The camera's accepted-view time as this task last saw it.
    accepted: Option<u64>,
}

/// Stage costs of one analysed frame, from its submission to inference to its event (its
/// arrival is the event's `detected_at`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    pub queue_wait: Duration,
    /// Of its whole batch.
    pub preprocess: Duration,
    /// Of its whole batch.
    pub inference: Duration,
    pub postprocess: Duration,
    pub batch_size: usize,
}

/// One camera, prepared: its state and the models its frames go to.
pub struct CameraAnalysis {
    camera: Arc<Camera>,
    analyzer: CameraAnalyzer,
    /// Indices into the workers.
    models: Vec<usize>,
    input_side: u32,
    skip_quiet: Option<std::time::Duration>,
}

impl CameraAnalysis {
    /// Whether the camera may leave keyframes whose bitstream shows no change undecoded, and
    /// how often it must decode one anyway (`[motion]`). Its task asks for every keyframe
    /// while it needs them ([`FrameSlot::set_attention`]).
    pub fn skip_quiet(&self) -> Option<std::time::Duration> {
        self.skip_quiet
    }

    /// The longer side the camera's frames should be decoded to: its largest model input.
    pub fn input_side(&self) -> u32 {
        self.input_side
    }
}

/// One model's inference worker and what cameras need to know of it.
struct ModelWorker {
    name: String,
    classes: Vec<String>,
    /// The longer side of its input: frames are decoded at least this wide.
    input_side: u32,
    batcher: Batcher<Frame, ToCamera>,
}

/// The reply handle a camera submits with: its detections come back on its own channel,
/// tagged with the model that made them.
struct ToCamera {
    model: usize,
    tx: mpsc::UnboundedSender<(usize, Detections<Frame>)>,
}

impl Reply<Frame> for ToCamera {
    fn send(&self, detections: Detections<Frame>) -> bool {
        self.tx.send((self.model, detections)).is_ok()
    }
}

impl AsRgb for Frame {
    fn rgb(&self) -> RgbImage<'_> {
        // Ingest hands on packed RGB of its stated size; the camera task checked it before
        // submitting.
        RgbImage::new(self.width, self.height, &self.rgb).expect("a frame's size matches its bytes")
    }
}

/// See the module docs.
pub struct Analysis {
    config: Arc<Config>,
    settings: AnalysisSettings,
    workers: Arc<Vec<ModelWorker>>,
    telemetry: Telemetry,
    events: mpsc::Sender<VideoEvent>,
    health: Option<mpsc::UnboundedSender<HealthReport>>,
    mutes: crate::Mutes,
    views: crate::health::AcceptedViews,
}

impl Analysis {
    /// Diagnoses every decoded frame of the cameras `[health]` covers (gated or not: a
    /// covered lens does not move) and reports to `reports`. Call before any camera is
    /// watched. Unbounded: a camera reports at most once per frame, and the reader only
    /// updates a table.
    pub fn report_health(&mut self, reports: mpsc::UnboundedSender<HealthReport>) {
        self.health = Some(reports);
    }

    /// Starts one inference worker per model; every camera's events go to `events`.
    pub fn start(
        config: Arc<Config>,
        models: Models,
        telemetry: Telemetry,
        events: mpsc::Sender<VideoEvent>,
    ) -> Analysis {
        let workers = models
            .detectors
            .into_iter()
            .map(|detector| {
                let spec = config.model(detector.name());
                let batcher_config = BatcherConfig {
                    max_batch: spec.map_or(1, |s| s.max_batch.max(1)),
                    max_wait: spec.map_or(Duration::ZERO, |s| s.max_wait),
                    max_age: MAX_FRAME_AGE,
                    queue: MODEL_QUEUE,
                };
                ModelWorker {
                    name: detector.name().to_owned(),
                    classes: detector.classes().to_vec(),
                    input_side: {
                        let shape = detector.input_shape();
                        shape.width.max(shape.height)
                    },
                    batcher: Batcher::start(vec![detector], batcher_config),
                }
            })
            .collect();
        Analysis {
            settings: AnalysisSettings::from_config(&config),
            config,
            workers: Arc::new(workers),
            telemetry,
            events,
            health: None,
            mutes: crate::Mutes::default(),
            views: crate::health::AcceptedViews::default(),
        }
    }

    /// Where to set the regions operators muted: every camera follows them.
    pub fn mutes(&self) -> crate::Mutes {
        self.mutes.clone()
    }

    /// Where to set the views operators accepted: every diagnosed camera follows them.
    pub fn accepted_views(&self) -> crate::health::AcceptedViews {
        self.views.clone()
    }

    /// Each model's counters (inferred, refused, stale, errors), by model name.
    pub fn model_stats(&self) -> Vec<(String, Arc<BatcherStats>)> {
        self.workers
            .iter()
            .map(|w| (w.name.clone(), w.batcher.stats().clone()))
            .collect()
    }

    /// Builds `camera`'s analysis state. Fails when a hazard it watches cannot be watched:
    /// its model is not loaded (models load at start-up only), or the camera lacks a zone.
    pub fn prepare(&self, camera: &Camera) -> Result<CameraAnalysis, Error> {
        let mut analyzer = CameraAnalyzer::new(
            &self.config,
            camera,
            |model| {
                self.workers
                    .iter()
                    .find(|w| w.name == model)
                    .map(|w| w.classes.as_slice())
            },
            self.settings,
        )?;
        analyzer.follow_mutes(self.mutes.follow());
        let models: Vec<usize> = analyzer
            .models()
            .filter_map(|m| self.workers.iter().position(|w| w.name == m))
            .collect();
        let input_side = models
            .iter()
            .map(|&i| self.workers[i].input_side)
            .max()
            .unwrap_or(640);
        Ok(CameraAnalysis {
            camera: Arc::new(camera.clone()),
            analyzer,
            models,
            input_side,
            skip_quiet: self.config.motion.skip_quiet(),
        })
    }

    /// Starts the camera's task on `frames`; it ends once `stop` turns true and the answers
    /// to what it submitted are in (bounded).
    pub fn watch(
        &self,
        camera: CameraAnalysis,
        frames: Arc<FrameSlot>,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let (tx, answers) = mpsc::unbounded_channel();
        let id = camera.camera.id.clone();
        let counter = |outcome: &str| {
            self.telemetry
                .frames
                .with_label_values(&[id.as_str(), outcome])
        };
        let settings = &self.config.health;
        let health = self
            .health
            .clone()
            .filter(|_| settings.enabled_for(&camera.camera))
            .map(|reports| {
                // A view accepted before this task began is the one it learns anyway.
                let mut views = self.views.follow();
                let accepted = views.borrow_and_update().get(&camera.camera.id).copied();
                HealthWatch {
                    diagnosis: Diagnosis::new(HealthConfig::for_camera(settings, &camera.camera)),
                    night: settings.night_for(&camera.camera),
                    reports,
                    last_report: None,
                    views,
                    accepted,
                }
            });
        let task = CameraTask {
            telemetry: self.telemetry.clone(),
            gated: counter("gated"),
            analysed: counter("analysed"),
            receive_decode: self.telemetry.stage(stage::RECEIVE_DECODE),
            queue_wait: self.telemetry.stage(stage::QUEUE_WAIT),
            preprocess: self.telemetry.stage(stage::PREPROCESS),
            inference: self.telemetry.stage(stage::INFERENCE),
            postprocess: self.telemetry.stage(stage::POSTPROCESS),
            batch_sizes: self.telemetry.batch_size.clone(),
            camera: camera.camera,
            analyzer: camera.analyzer,
            models: camera.models,
            workers: self.workers.clone(),
            health,
            moving: false,
            frames,
            reply: Some(tx),
            answers,
            events: self.events.clone(),
        };
        tokio::spawn(tracing::Instrument::instrument(
            task.run(stop),
            tracing::info_span!("analysis", camera = %id),
        ))
    }

    /// Once every camera's task has ended: lets each model finish what is queued, and waits
    /// for its worker. Events are all sent by then.
    pub async fn stop(self) {
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    }
}

/// Resolves once `stop` turns true, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

struct CameraTask {
    camera: Arc<Camera>,
    analyzer: CameraAnalyzer,
    models: Vec<usize>,
    workers: Arc<Vec<ModelWorker>>,
    frames: Arc<FrameSlot>,
    /// `None` once stopping: then `answers` ends when the last submitted frame is answered.
    reply: Option<mpsc::UnboundedSender<(usize, Detections<Frame>)>>,
    answers: mpsc::UnboundedReceiver<(usize, Detections<Frame>)>,
    events: mpsc::Sender<VideoEvent>,
    health: Option<HealthWatch>,
    /// The last frame moved (or was the first): the next keyframe is wanted whatever its
    /// bitstream says, since a steady stream of change can look like a still one in bytes.
    moving: bool,
    telemetry: Telemetry,
    // This camera's series, looked up once rather than per frame.
    gated: IntCounter,
    analysed: IntCounter,
    receive_decode: Histogram,
    queue_wait: Histogram,
    preprocess: Histogram,
    inference: Histogram,
    postprocess: Histogram,
    batch_sizes: HistogramVec,
}

impl CameraTask {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let frames = self.frames.clone();
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                Some((model, answer)) = self.answers.recv() => self.on_answer(model, answer).await,
                frame = frames.next() => {
                    let telemetry = self.telemetry.clone();
                    telemetry.guarded("analysis", || self.on_frame(frame));
                }
            }
        }
        // The frames already submitted still count: their events go out.
        self.reply = None;
        let drain = async {
            while let Some((model, answer)) = self.answers.recv().await {
                self.on_answer(model, answer).await;
            }
        };
        if tokio::time::timeout(DRAIN_LIMIT, drain).await.is_err() {
            tracing::warn!(
                limit = ?DRAIN_LIMIT,
                "stopped before the models answered; the last frames' detections are dropped"
            );
        }
    }

    fn on_frame(&mut self, frame: Arc<Frame>) {
        if let Ok(took) = SystemTime::now().duration_since(frame.received_at) {
            self.receive_decode.observe(took.as_secs_f64());
        }
        let Ok(image) = RgbImage::new(frame.width, frame.height, &frame.rgb) else {
            tracing::warn!("a decoded frame does not match its size; skipped");
            return;
        };
        let now = Instant::now();
        if let Some(h) = &mut self.health {
            cpu::measure(Stage::Health, || {
                h.observe(&self.camera, &frame, image, now)
            });
        }
        let gate = cpu::measure(Stage::Motion, || self.analyzer.gate(image, now));
        self.moving = matches!(gate, Gate::Analyse(GateReason::Motion | GateReason::First));
        self.ask_attention(now);
        if gate == Gate::Skip && !frame.verifying {
            self.gated.inc();
            return;
        }
        self.analysed.inc();
        let Some(tx) = &self.reply else {
            return;
        };
        for &model in &self.models {
            let reply = ToCamera {
                model,
                tx: tx.clone(),
            };
            // A full queue refuses, and the batcher counts it: this frame is skipped.
            self.workers[model].batcher.submit(frame.clone(), reply);
        }
    }

    /// Asks the camera for every keyframe while this camera waits on the next one: a hazard
    /// half-confirmed, a moving picture, a health problem not yet confirmed or cleared.
    fn ask_attention(&self, now: Instant) {
        let unsettled = self
            .health
            .as_ref()
            .is_some_and(|h| h.diagnosis.unsettled());
        self.frames
            .set_attention(self.moving || unsettled || self.analyzer.pending(now));
    }

    /// The events one model's answer confirms, sent on to fusion.
    async fn on_answer(&mut self, model: usize, answer: Detections<Frame>) {
        let telemetry = self.telemetry.clone();
        let events = telemetry
            .guarded("analysis", || self.events_of(model, answer))
            .unwrap_or_default();
        self.ask_attention(Instant::now());
        for event in events {
            if self.events.send(event).await.is_err() {
                tracing::error!("the alert side is gone: a confirmed hazard is dropped");
            }
        }
    }

    /// Tracks one model's answer and runs its rules: the hazards it confirms.
    fn events_of(&mut self, model: usize, answer: Detections<Frame>) -> Vec<VideoEvent> {
        let Some(worker) = self.workers.get(model) else {
            return Vec::new();
        };
        self.queue_wait.observe(answer.queue_wait.as_secs_f64());
        self.preprocess.observe(answer.preprocess.as_secs_f64());
        self.inference.observe(answer.inference.as_secs_f64());
        self.batch_sizes
            .with_label_values(&[worker.name.as_str()])
            .observe(answer.batch_size as f64);
        let started = Instant::now();
        let frame = &answer.frame;
        let events = cpu::measure(Stage::Postprocess, || {
            self.analyzer.on_detections(
                &worker.name,
                &answer.detections,
                frame,
                (frame.width, frame.height),
                answer.submitted,
                frame.received_at,
            )
        });
        let postprocess = started.elapsed();
        self.postprocess.observe(postprocess.as_secs_f64());
        let timings = Timings {
            queue_wait: answer.queue_wait,
            preprocess: answer.preprocess,
            inference: answer.inference,
            postprocess,
            batch_size: answer.batch_size,
        };
        events
            .into_iter()
            .map(|event| VideoEvent {
                camera: self.camera.clone(),
                event,
                timings,
            })
            .collect()
    }
}

impl HealthWatch {
    fn observe(
        &mut self,
        camera: &Arc<Camera>,
        frame: &Arc<Frame>,
        image: RgbImage<'_>,
        now: Instant,
    ) {
        let at = SystemTime::now();
        if self.views.has_changed().unwrap_or(false) {
            let accepted = self.views.borrow_and_update().get(&camera.id).copied();
            if accepted != self.accepted {
                self.accepted = accepted;
                if accepted.is_some() {
                    tracing::info!("the camera's view was accepted: learning it again");
                    self.diagnosis.accept_view();
                }
            }
        }
        self.diagnosis
            .set_night(self.night.is_some_and(|n| n.contains(at)));
        let (measures, changes) = self.diagnosis.observe(image, now);
        let due = self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= HEALTH_REPORT_EVERY);
        if changes.is_empty() && !due {
            return;
        }
        self.last_report = Some(now);
        let _ = self.reports.send(HealthReport {
            camera: camera.clone(),
            at,
            measures,
            changes,
            frame: frame.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_one_event_is_caught_counted_and_the_next_event_runs() {
        let telemetry = Telemetry::new();
        let caught: Option<u32> = telemetry.guarded("fusion", || panic!("a bad alarm"));
        assert_eq!(caught, None);
        assert_eq!(telemetry.guarded("fusion", || 7), Some(7));
        let count = |task: &str| telemetry.panics.with_label_values(&[task]).get();
        assert_eq!((count("fusion"), count("analysis")), (1, 0));
    }
}
