//! Sensors in, alerts out, and where sensor alarms meet video hazards.
//!
//! Readings arrive over MQTT (the alert service's link subscribes to the sensors' topics),
//! are checked against the registry (refused ones go to `{prefix}/deadletter/sensors` with
//! the reason), and run through the sensor rules. An alarm puts the covering cameras into
//! verify mode and is held back briefly by [`Fusion`]; every confirmed video hazard passes
//! through [`Sensing::on_video`] so that one confirming a held alarm goes out as one fused
//! alert. An alarm no video confirms goes out as a sensor alert with a snapshot of a covering
//! camera's latest frame.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sharpeyes_alerts::{Alert, Alerts, FrameSize, InboundMessage, Snapshot, Submitted};
use sharpeyes_analytics::{Fusion, HazardEvent, SensorAlarm, SensorEvent, SensorRules};
use sharpeyes_config::{Camera, Config};
use sharpeyes_ingest::SensorRegistry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often silent sensors and held alarms are looked at.
const TICK: Duration = Duration::from_millis(250);

/// A camera's most recent frame, kept for the snapshot of a sensor alert.
struct LatestFrame {
    rgb: Arc<Vec<u8>>,
    width: u32,
    height: u32,
}

struct State {
    rules: SensorRules,
    fusion: Fusion,
    /// The latest frame of each camera that covers a sensor; only these are kept.
    frames: HashMap<String, Option<LatestFrame>>,
}

/// Counters for metrics, tests and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensingStats {
    pub readings: u64,
    pub rejected: u64,
    pub alarms: u64,
    pub sensor_alerts: u64,
    pub fused_alerts: u64,
}

#[derive(Default)]
struct Counters {
    readings: AtomicU64,
    rejected: AtomicU64,
    alarms: AtomicU64,
    sensor_alerts: AtomicU64,
    fused_alerts: AtomicU64,
}

/// The sensor side of the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Sensing {
    config: Arc<Config>,
    alerts: Alerts,
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
}

impl Sensing {
    /// The MQTT filters covering every sensor's topic: give them to the alert service
    /// (`AlertSettings::subscriptions`) before it starts.
    pub fn subscriptions(config: &Config, prefix: &str) -> Vec<String> {
        if config.sensors.is_empty() {
            return Vec::new();
        }
        SensorRegistry::new(config, prefix).subscriptions()
    }

    /// Takes the alert service's inbound messages and handles them until `shutdown`.
    pub fn start(
        config: Arc<Config>,
        alerts: Alerts,
        prefix: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Sensing, JoinHandle<()>), String> {
        let now = SystemTime::now();
        let sensing = Sensing {
            state: Arc::new(Mutex::new(State {
                rules: SensorRules::new(&config, now),
                fusion: Fusion::new(&config),
                frames: config
                    .sensors
                    .iter()
                    .flat_map(|s| s.cameras.iter().map(|c| (c.clone(), None)))
                    .collect(),
            })),
            config,
            alerts,
            counters: Arc::default(),
        };
        let inbound = if sensing.config.sensors.is_empty() {
            None
        } else {
            Some(sensing.alerts.take_inbound().ok_or(
                "sensors are configured but the alert service has no sensor subscriptions; start it with Sensing::subscriptions",
            )?)
        };
        let registry = SensorRegistry::new(&sensing.config, prefix);
        let task = tokio::spawn(sensing.clone().run(registry, inbound, shutdown));
        Ok((sensing, task))
    }

    pub fn stats(&self) -> SensingStats {
        let c = &self.counters;
        SensingStats {
            readings: c.readings.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            alarms: c.alarms.load(Ordering::Relaxed),
            sensor_alerts: c.sensor_alerts.load(Ordering::Relaxed),
            fused_alerts: c.fused_alerts.load(Ordering::Relaxed),
        }
    }

    /// Keeps `camera`'s latest frame for the snapshot of a sensor alert, when it covers a
    /// sensor.
    pub fn note_frame(&self, camera: &str, rgb: Arc<Vec<u8>>, width: u32, height: u32) {
        // Called for every frame of every camera: no allocation, nothing kept for cameras
        // that cover no sensor.
        if let Some(latest) = self.lock().frames.get_mut(camera) {
            *latest = Some(LatestFrame { rgb, width, height });
        }
    }

    /// Whether `camera` should analyse every frame: a sensor it covers is in alarm.
    pub fn verifying(&self, camera: &str) -> bool {
        self.lock().fusion.verifying(camera, SystemTime::now())
    }

    /// A confirmed video hazard on `camera` (which may have been added after start-up):
    /// published as a video alert, or as a fused one when it
    /// confirms a sensor alarm on its camera.
    pub async fn on_video<F>(
        &self,
        camera: &Camera,
        event: &HazardEvent<F>,
        frame: FrameSize,
        snapshot: Option<&Snapshot>,
    ) -> Result<Submitted, String> {
        let mut alert = Alert::from_camera_event(event, camera, frame, &self.config, None)
            .map_err(|e| e.to_string())?;
        let fused = self.lock().fusion.on_video(&event.camera, &event.hazard);
        if !fused.is_empty() {
            alert.fuse(&fused);
            let sensors: Vec<&str> = fused.iter().map(|a| a.sensor_id.as_str()).collect();
            tracing::warn!(camera = %event.camera, hazard = %event.hazard, sensors = ?sensors, "video confirms a sensor alarm: one fused alert");
        }
        let submitted = self
            .alerts
            .submit(alert, snapshot)
            .await
            .map_err(|e| e.to_string())?;
        if !fused.is_empty() && matches!(submitted, Submitted::Queued { .. }) {
            self.counters.fused_alerts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(submitted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere does not taint it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(
        self,
        registry: SensorRegistry,
        inbound: Option<mpsc::Receiver<InboundMessage>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(mut inbound) = inbound else {
            return;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                message = inbound.recv() => match message {
                    Some(m) => self.on_message(&registry, m),
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn on_message(&self, registry: &SensorRegistry, message: InboundMessage) {
        let (readings, rejected) =
            registry.parse(&message.topic, &message.payload, message.received);
        for r in &rejected {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            let reason = match &r.sensor_id {
                Some(id) => format!("sensor `{id}`: {}", r.reason),
                None => r.reason.clone(),
            };
            tracing::warn!(topic = %message.topic, "sensor reading refused: {reason}");
            self.alerts
                .dead_letter("sensors", &message.topic, &reason, &message.payload);
        }
        let mut events = Vec::new();
        {
            let mut state = self.lock();
            for r in readings {
                self.counters.readings.fetch_add(1, Ordering::Relaxed);
                events.extend(state.rules.on_reading(
                    &r.sensor_id,
                    r.value,
                    r.time,
                    message.received,
                ));
            }
        }
        for e in events {
            self.on_sensor_event(e);
        }
    }

    fn on_sensor_event(&self, event: SensorEvent) {
        match event {
            SensorEvent::Alarm(alarm) => {
                self.counters.alarms.fetch_add(1, Ordering::Relaxed);
                self.alerts
                    .sensor_status(&alarm.sensor_id, "alarm", Some(&alarm.rule));
                let cameras = self
                    .lock()
                    .fusion
                    .on_alarm(alarm.clone(), SystemTime::now());
                tracing::warn!(sensor = %alarm.sensor_id, hazard = %alarm.hazard, rule = %alarm.rule, value = alarm.value, verifying = ?cameras, "sensor alarm");
            }
            SensorEvent::Cleared { sensor_id } => {
                self.lock().fusion.on_cleared(&sensor_id);
                tracing::info!(sensor = %sensor_id, "sensor back within its limits");
                self.alerts.sensor_status(&sensor_id, "online", None);
            }
            SensorEvent::Offline {
                sensor_id,
                silent_for,
            } => {
                let reason = format!(
                    "no reading for {}",
                    humantime::format_duration(Duration::from_secs(silent_for.as_secs()))
                );
                tracing::warn!(sensor = %sensor_id, "sensor offline: {reason}");
                self.alerts
                    .sensor_status(&sensor_id, "offline", Some(&reason));
            }
            SensorEvent::Online { sensor_id } => {
                tracing::info!(sensor = %sensor_id, "sensor online again");
                self.alerts.sensor_status(&sensor_id, "online", None);
            }
        }
    }

    async fn on_tick(&self) {
        let now = SystemTime::now();
        let (silent, due) = {
            let mut state = self.lock();
            (state.rules.check_silence(now), state.fusion.due(now))
        };
        for e in silent {
            self.on_sensor_event(e);
        }
        for alarm in due {
            if let Err(e) = self.sensor_alert(&alarm).await {
                tracing::error!(sensor = %alarm.sensor_id, "sensor alert not sent: {e}");
            }
        }
    }

    /// An alarm no video confirmed: a sensor alert, shown by the first covering camera that
    /// has a frame.
    async fn sensor_alert(&self, alarm: &SensorAlarm) -> Result<(), String> {
        let shown = {
            let state = self.lock();
            alarm.cameras.iter().find_map(|c| {
                state
                    .frames
                    .get(c)
                    .and_then(Option::as_ref)
                    .map(|f| (c.clone(), f.rgb.clone(), f.width, f.height))
            })
        };
        let (camera, frame, snapshot) = match shown {
            Some((camera, rgb, width, height)) => {
                let snapshot = sharpeyes_alerts::render(
                    &rgb,
                    width,
                    height,
                    &[],
                    self.config.alerts.snapshot_max_bytes,
                )
                .map_err(|e| format!("snapshot of camera {camera}: {e}"))?;
                (
                    Some(camera),
                    Some(FrameSize { width, height }),
                    Some(snapshot),
                )
            }
            None => (alarm.cameras.first().cloned(), None, None),
        };
        let alert = Alert::from_sensor(alarm, &self.config, camera.as_deref(), frame)
            .map_err(|e| e.to_string())?;
        let submitted = self
            .alerts
            .submit(alert, snapshot.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        if matches!(submitted, Submitted::Queued { .. }) {
            self.counters.sensor_alerts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
