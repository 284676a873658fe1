//! The fusion stage: where video events and sensor alarms meet, and the final alerts leave.
//!
//! One task owns the fusion state ([`Fusion`]): no lock, and nothing on the frame path asks
//! it anything. From analytics come confirmed video hazards; from the sensor stage, alarms
//! and their end. An alarm sends its covering cameras into verify mode (through the
//! [`Directory`]) and is held back for `[fusion] wait`: a video hazard that confirms it makes
//! one fused alert; otherwise it goes out as a sensor alert, with a snapshot of a covering
//! camera's latest frame asked of the directory then. Verify mode is sent off when its
//! `verify_for` has run. Snapshots are rendered here, off the inference path.
//!
//! The task ends once both of its inputs have closed (the cameras and the sensor stage have
//! stopped); alarms still held then are published, not dropped. Each event is handled under
//! [`Telemetry::guarded`]: a panic in one is counted, and fusion goes on with the next, so one
//! bad alarm cannot stop every alert.

use sharpeyes_ingest::cpu::{self, Stage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use prometheus::Histogram;
use sharpeyes_alerts::{Alert, Alerts, FrameSize, Snapshot, Submitted};
use sharpeyes_analytics::{Fusion, SensorAlarm, SensorEvent, Telemetry, VideoEvent};
use sharpeyes_config::Config;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cameras::Directory;
use crate::metrics::stage;
use crate::supervise::Supervisor;

/// How often held alarms and verify mode are looked at.
const TICK: Duration = Duration::from_millis(250);

/// Alerts the fusion stage queued, by how they were made.
#[derive(Debug, Default)]
pub struct FusionCounters {
    pub sensor_alerts: AtomicU64,
    pub fused_alerts: AtomicU64,
}

impl FusionCounters {
    pub fn sensor_alerts(&self) -> u64 {
        self.sensor_alerts.load(Ordering::Relaxed)
    }

    pub fn fused_alerts(&self) -> u64 {
        self.fused_alerts.load(Ordering::Relaxed)
    }
}

/// Starts the stage on its two inputs; see the module docs.
pub fn start(
    config: Arc<Config>,
    alerts: Alerts,
    directory: Directory,
    supervisor: &Supervisor,
    video: mpsc::Receiver<VideoEvent>,
    sensors: mpsc::Receiver<SensorEvent>,
) -> (Arc<FusionCounters>, JoinHandle<()>) {
    let telemetry = &supervisor.telemetry;
    let counters = Arc::new(FusionCounters::default());
    let stage = FusionStage {
        telemetry: telemetry.clone(),
        fusion: Fusion::new(&config),
        config,
        alerts,
        directory,
        counters: counters.clone(),
        snapshot: telemetry
            .stage_seconds
            .with_label_values(&[stage::SNAPSHOT]),
        publish: telemetry.stage_seconds.with_label_values(&[stage::PUBLISH]),
    };
    let task = supervisor.spawn(
        "fusion",
        (stage, video, sensors),
        |(stage, video, sensors)| Box::pin(stage.run(video, sensors)),
    );
    (counters, task)
}

/// An alert made, ready to submit.
struct Made {
    alert: Alert,
    snapshot: Option<Snapshot>,
    fused: bool,
    /// A video alert's confirming frame without boxes: the picture its learning material is
    /// made of if an operator judges it, kept before the alert is published.
    clean: Option<Snapshot>,
}

struct FusionStage {
    telemetry: Telemetry,
    config: Arc<Config>,
    fusion: Fusion,
    alerts: Alerts,
    directory: Directory,
    counters: Arc<FusionCounters>,
    snapshot: Histogram,
    publish: Histogram,
}

impl FusionStage {
    async fn run(
        &mut self,
        video: &mut mpsc::Receiver<VideoEvent>,
        sensors: &mut mpsc::Receiver<SensorEvent>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut video_open, mut sensors_open) = (true, true);
        while video_open || sensors_open {
            tokio::select! {
                event = video.recv(), if video_open => match event {
                    Some(e) => self.on_video(e).await,
                    None => video_open = false,
                },
                event = sensors.recv(), if sensors_open => match event {
                    Some(e) => {
                        let telemetry = self.telemetry.clone();
                        telemetry.guarded("fusion", || self.on_sensor(e));
                    }
                    None => sensors_open = false,
                },
                _ = tick.tick() => self.on_tick(SystemTime::now()).await,
            }
        }
        // Nothing more can confirm what is held: publish it rather than lose it.
        self.on_tick(SystemTime::now() + Duration::from_secs(365 * 24 * 3600))
            .await;
    }

    /// A confirmed video hazard: a video alert, or a fused one when it confirms an alarm
    /// on its camera.
    async fn on_video(&mut self, video: VideoEvent) {
        let telemetry = self.telemetry.clone();
        let Some(Some(made)) = telemetry.guarded("fusion", || self.video_alert(video)) else {
            return;
        };
        let counter = made.fused.then_some(&self.counters.fused_alerts);
        self.submit(made, counter).await;
    }

    /// The alert of a video hazard: snapshot rendered, fused with the alarms it confirms.
    fn video_alert(&mut self, video: VideoEvent) -> Option<Made> {
        let VideoEvent {
            camera,
            event,
            timings,
        } = video;
        let frame = event.frame.clone();
        let started = Instant::now();
        let boxes: Vec<[f32; 4]> = event
            .objects
            .iter()
            .map(|o| [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2])
            .collect();
        let snapshot = self.render(&camera.id, &frame.rgb, frame.width, frame.height, &boxes);
        self.snapshot.observe(started.elapsed().as_secs_f64());
        let clean = self.render(&camera.id, &frame.rgb, frame.width, frame.height, &[]);
        let size = FrameSize {
            width: frame.width,
            height: frame.height,
        };
        let mut alert = match Alert::from_camera_event(&event, &camera, size, &self.config, None) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(camera = %camera.id, hazard = %event.hazard, "alert not made: {e}");
                return None;
            }
        };
        let fused = self.fusion.on_video(&event.camera, &event.hazard);
        if !fused.is_empty() {
            alert.fuse(&fused);
            let sensors: Vec<&str> = fused.iter().map(|a| a.sensor_id.as_str()).collect();
            tracing::warn!(camera = %event.camera, hazard = %event.hazard, sensors = ?sensors, "video confirms a sensor alarm: one fused alert");
        }
        tracing::debug!(camera = %event.camera, hazard = %event.hazard, ?timings, "video hazard confirmed");
        Some(Made {
            alert,
            snapshot,
            fused: !fused.is_empty(),
            clean,
        })
    }

    /// Hands an alert to the alert service; `counter` counts it once it is queued.
    async fn submit(&self, made: Made, counter: Option<&AtomicU64>) {
        let (id, hazard) = (made.alert.id.clone(), made.alert.hazard.clone());
        let started = Instant::now();
        let clean = made.clean.as_ref().map(|c| c.jpeg.as_slice());
        let submitted = (self.alerts)
            .submit_with_frame(made.alert, made.snapshot.as_ref(), clean)
            .await;
        self.publish.observe(started.elapsed().as_secs_f64());
        match submitted {
            Ok(Submitted::Queued { .. }) => {
                if let Some(c) = counter {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Logged and counted by the alert service.
            Ok(Submitted::Suppressed | Submitted::Refused { .. }) => {}
            Err(e) => tracing::error!(alert = %id, hazard = %hazard, "alert not sent: {e}"),
        }
    }

    fn on_sensor(&mut self, event: SensorEvent) {
        match event {
            SensorEvent::Alarm(alarm) => {
                let sensor = alarm.sensor_id.clone();
                let cameras = self.fusion.on_alarm(alarm, SystemTime::now());
                for camera in &cameras {
                    self.directory.set_verify(camera, true);
                }
                if !cameras.is_empty() {
                    tracing::info!(sensor = %sensor, verifying = ?cameras, "covering cameras in verify mode");
                }
            }
            SensorEvent::Cleared { sensor_id } => self.fusion.on_cleared(&sensor_id),
            // Statuses, not fusion's: the sensor stage publishes them.
            SensorEvent::Offline { .. } | SensorEvent::Online { .. } => {}
        }
    }

    async fn on_tick(&mut self, now: SystemTime) {
        let telemetry = self.telemetry.clone();
        let due = telemetry
            .guarded("fusion", || {
                for camera in self.fusion.verify_ended(now) {
                    self.directory.set_verify(&camera, false);
                }
                self.fusion.due(now)
            })
            .unwrap_or_default();
        for alarm in due {
            let made = telemetry.guarded("fusion", || self.sensor_alert(&alarm));
            match made {
                Some(Ok(made)) => self.submit(made, Some(&self.counters.sensor_alerts)).await,
                Some(Err(e)) => {
                    tracing::error!(sensor = %alarm.sensor_id, "sensor alert not made: {e}")
                }
                None => {}
            }
        }
    }

    /// An alarm no video confirmed: a sensor alert, shown by the first covering camera that
    /// has a frame.
    fn sensor_alert(&self, alarm: &SensorAlarm) -> Result<Made, String> {
        let shown = alarm
            .cameras
            .iter()
            .find_map(|c| Some((c, self.directory.latest_frame(c)?)));
        let (camera, frame, snapshot) = match shown {
            Some((camera, frame)) => {
                let snapshot = self.render(camera, &frame.rgb, frame.width, frame.height, &[]);
                let size = FrameSize {
                    width: frame.width,
                    height: frame.height,
                };
                (Some(camera.as_str()), Some(size), snapshot)
            }
            None => (alarm.cameras.first().map(String::as_str), None, None),
        };
        let alert =
            Alert::from_sensor(alarm, &self.config, camera, frame).map_err(|e| e.to_string())?;
        Ok(Made {
            alert,
            snapshot,
            fused: false,
            clean: None,
        })
    }

    /// The snapshot JPEG; an alert without one is better than none.
    fn render(
        &self,
        camera: &str,
        rgb: &[u8],
        width: u32,
        height: u32,
        boxes: &[[f32; 4]],
    ) -> Option<Snapshot> {
        let max = self.config.alerts.snapshot_max_bytes;
        cpu::measure(Stage::Snapshot, || {
            sharpeyes_alerts::render(rgb, width, height, boxes, max)
        })
        .map_err(|e| tracing::error!(camera = %camera, "snapshot not made: {e}"))
        .ok()
    }
}
