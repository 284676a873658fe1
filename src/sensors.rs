//! The sensor stage: readings in over MQTT, checked against `[[sensors]]`, through the
//! threshold, rate and hold rules; alarms and their end go on to fusion.
//!
//! Readings arrive on the alert service's link (it subscribes to [`subscriptions`]). A
//! refused reading goes to `{prefix}/deadletter/sensors` with the reason. Each sensor's
//! state (`online`, `alarm`, `offline`) is published retained from here; what an alarm
//! becomes (a sensor alert, or part of a fused one) is fusion's to decide.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sharpeyes_alerts::{Alerts, InboundMessage};
use sharpeyes_analytics::{SensorEvent, SensorRules, Telemetry};
use sharpeyes_config::Config;
use sharpeyes_ingest::SensorRegistry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cluster::SensorsHere;
use crate::supervise::Supervisor;

fn sensor_of(event: &SensorEvent) -> &str {
    match event {
        SensorEvent::Alarm(alarm) => &alarm.sensor_id,
        SensorEvent::Cleared { sensor_id }
        | SensorEvent::Offline { sensor_id, .. }
        | SensorEvent::Online { sensor_id } => sensor_id,
    }
}

/// How often silent sensors are looked for.
const TICK: Duration = Duration::from_millis(250);

/// What the sensor stage counted, for metrics, tests and the demo.
#[derive(Debug, Default)]
pub struct SensorCounters {
    /// Readings accepted.
    pub readings: AtomicU64,
    /// Readings sent to the dead-letter topic.
    pub rejected: AtomicU64,
    pub alarms: AtomicU64,
    /// Sensors silent past their interval now (every node hears every sensor).
    pub offline: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl SensorCounters {
    pub fn readings(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn alarms(&self) -> u64 {
        self.alarms.load(Ordering::Relaxed)
    }

    /// Whether `sensor` has reported within its interval (the GB/T 28181 Catalog's Status).
    pub fn online(&self, sensor: &str) -> bool {
        !self
            .offline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sensor)
    }

    fn set_online(&self, sensor: &str, online: bool) {
        let mut offline = self.offline.lock().unwrap_or_else(|e| e.into_inner());
        if online {
            offline.remove(sensor);
        } else {
            offline.insert(sensor.to_owned());
        }
    }
}

/// The MQTT filters covering every sensor's topic: give them to the alert service
/// (`AlertSettings::subscriptions`) before it starts.
pub fn subscriptions(config: &Config, prefix: &str) -> Vec<String> {
    if config.sensors.is_empty() {
        return Vec::new();
    }
    SensorRegistry::new(config, prefix).subscriptions()
}

/// Starts the stage on the alert service's inbound messages; alarms and clearings go to
/// `fusion`. It ends when `stop` turns true (with no sensors configured, at once).
pub fn start(
    config: &Config,
    alerts: Alerts,
    prefix: &str,
    fusion: mpsc::Sender<SensorEvent>,
    supervisor: &Supervisor,
    here: SensorsHere,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<SensorCounters>, JoinHandle<()>), String> {
    let telemetry = &supervisor.telemetry;
    let counters = Arc::new(SensorCounters::default());
    let inbound = if config.sensors.is_empty() {
        None
    } else {
        Some(alerts.take_inbound().ok_or(
            "sensors are configured but the alert service has no sensor subscriptions; start it with sensors::subscriptions",
        )?)
    };
    let stage = SensorStage {
        registry: SensorRegistry::new(config, prefix),
        rules: SensorRules::new(config, SystemTime::now()),
        alerts,
        fusion,
        counters: counters.clone(),
        telemetry: telemetry.clone(),
        here,
    };
    let task = supervisor.spawn(
        "sensors",
        (stage, inbound, stop),
        |(stage, inbound, stop)| Box::pin(stage.run(inbound.as_mut(), stop)),
    );
    Ok((counters, task))
}

struct SensorStage {
    registry: SensorRegistry,
    rules: SensorRules,
    alerts: Alerts,
    fusion: mpsc::Sender<SensorEvent>,
    counters: Arc<SensorCounters>,
    telemetry: Telemetry,
    /// In a cluster, the sensors whose events this node acts on.
    here: SensorsHere,
}

impl SensorStage {
    async fn run(
        &mut self,
        inbound: Option<&mut mpsc::Receiver<InboundMessage>>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let Some(inbound) = inbound else {
            return;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let telemetry = self.telemetry.clone();
            let events = tokio::select! {
                _ = crate::stopped(stop) => return,
                message = inbound.recv() => match message {
                    Some(m) => telemetry.guarded("sensors", || self.on_message(m)),
                    None => return,
                },
                _ = tick.tick() => {
                    telemetry.guarded("sensors", || self.rules.check_silence(SystemTime::now()))
                }
            }
            .unwrap_or_default();
            for e in events {
                match &e {
                    SensorEvent::Offline { sensor_id, .. } => {
                        self.counters.set_online(sensor_id, false)
                    }
                    SensorEvent::Online { sensor_id } => self.counters.set_online(sensor_id, true),
                    _ => {}
                }
                if self.here.handles(sensor_of(&e)) {
                    self.on_sensor_event(e).await;
                }
            }
        }
    }

    fn on_message(&mut self, message: InboundMessage) -> Vec<SensorEvent> {
        let (readings, rejected) =
            self.registry
                .parse(&message.topic, &message.payload, message.received);
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
        for r in readings {
            self.counters.readings.fetch_add(1, Ordering::Relaxed);
            events.extend(
                self.rules
                    .on_reading(&r.sensor_id, r.value, r.time, message.received),
            );
        }
        events
    }

    async fn on_sensor_event(&self, event: SensorEvent) {
        match &event {
            SensorEvent::Alarm(alarm) => {
                self.counters.alarms.fetch_add(1, Ordering::Relaxed);
                self.alerts
                    .sensor_status(&alarm.sensor_id, "alarm", Some(&alarm.rule));
                tracing::warn!(sensor = %alarm.sensor_id, hazard = %alarm.hazard, rule = %alarm.rule, value = alarm.value, "sensor alarm");
            }
            SensorEvent::Cleared { sensor_id } => {
                tracing::info!(sensor = %sensor_id, "sensor back within its limits");
                self.alerts.sensor_status(sensor_id, "online", None);
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
                    .sensor_status(sensor_id, "offline", Some(&reason));
                return;
            }
            SensorEvent::Online { sensor_id } => {
                tracing::info!(sensor = %sensor_id, "sensor online again");
                self.alerts.sensor_status(sensor_id, "online", None);
                return;
            }
        }
        // Alarms and their end are fusion's: an alarm is never dropped on the way.
        if self.fusion.send(event).await.is_err() {
            tracing::error!("fusion is gone: a sensor alarm is not published");
        }
    }
}
