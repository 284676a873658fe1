//! Prometheus metrics, served on `/metrics`.
//!
//! Stage latencies are observed where they happen: analytics writes its stages into the
//! [`Telemetry`] it is given, fusion the snapshot and publish stages. Counters the crates
//! already keep as atomics (frames received and decoded per camera, batcher refusals, alert
//! counts) are mirrored at scrape time, so the hot path pays nothing extra for them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use sharpeyes_alerts::{Alerts, CameraPhase};
use sharpeyes_analytics::Telemetry;
use sharpeyes_analytics::stages::BatcherStats;
use sharpeyes_ingest::{CameraCounters, FrameSlot};

use crate::sensors::SensorCounters;

/// The stages measured outside analytics, as the `stage` label of `sharpeyes_stage_seconds`
/// (analytics names its own: `sharpeyes_analytics::stage`).
pub mod stage {
    pub const SNAPSHOT: &str = "snapshot";
    /// Cooldown, outbox write and hand-off to the MQTT link.
    pub const PUBLISH: &str = "publish";
}

pub struct Metrics {
    registry: Registry,
    /// Stage seconds, batch sizes and frames by outcome (`gated` and `analysed` are counted
    /// by analytics; the rest are mirrored here).
    pub telemetry: Telemetry,
    pub camera_state: IntGaugeVec,
    pub reconnects: IntCounterVec,
    model_frames: IntCounterVec,
    outbox: IntGauge,
    alerts: IntCounterVec,
    alerts_refused: IntCounterVec,
    time_to_ack: Histogram,
    verdicts: IntCounterVec,
    dispatched: IntCounterVec,
    sensor_readings: IntCounter,
    sensor_rejected: IntCounter,
    mqtt_connected: IntGauge,
    stage_cpu: CounterVec,
}

/// A camera's counters, by camera id.
type CameraSources = Vec<(String, Arc<CameraCounters>, Arc<FrameSlot>)>;

/// What is mirrored at scrape time.
#[derive(Default)]
pub struct Sources {
    /// Cameras come and go with reloads.
    pub cameras: std::sync::Mutex<CameraSources>,
    pub models: Vec<(String, Arc<BatcherStats>)>,
    pub alerts: Option<Alerts>,
    pub sensors: Option<Arc<SensorCounters>>,
}

impl Sources {
    pub fn add_camera(&self, id: &str, handle: &sharpeyes_ingest::CameraHandle) {
        let mut cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        cameras.retain(|(c, _, _)| c != id);
        cameras.push((
            id.to_owned(),
            handle.counters.clone(),
            handle.frames.clone(),
        ));
    }

    pub fn remove_camera(&self, id: &str) {
        self.cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, _, _)| c != id);
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let telemetry = Telemetry::new();
        telemetry
            .register(&registry)
            .expect("metric names are unique");
        let camera_state = IntGaugeVec::new(
            Opts::new(
                "sharpeyes_camera_state",
                "1 for the state each camera is in.",
            ),
            &["camera", "state"],
        )
        .expect("valid metric");
        let reconnects = IntCounterVec::new(
            Opts::new(
                "sharpeyes_camera_reconnects_total",
                "Camera reconnects by reason class.",
            ),
            &["camera", "reason"],
        )
        .expect("valid metric");
        let model_frames = IntCounterVec::new(
            Opts::new(
                "sharpeyes_model_frames_total",
                "Frames per model by outcome: inferred, refused (queue full), stale (waited too long), error.",
            ),
            &["model", "outcome"],
        )
        .expect("valid metric");
        let outbox = IntGauge::new(
            "sharpeyes_outbox_depth",
            "Alert messages not yet acknowledged by the broker (queued and in flight).",
        )
        .expect("valid metric");
        let alerts = IntCounterVec::new(
            Opts::new("sharpeyes_alerts_total", "Alerts queued for publishing."),
            &["hazard", "severity", "source"],
        )
        .expect("valid metric");
        let alerts_refused = IntCounterVec::new(
            Opts::new(
                "sharpeyes_alerts_refused_total",
                "Alerts refused because [alerts] outbox_limit alerts waited for the broker; the least severe are refused first.",
            ),
            &["severity"],
        )
        .expect("valid metric");
        let time_to_ack = Histogram::with_opts(
            HistogramOpts::new(
                "sharpeyes_alert_time_to_ack_seconds",
                "From detection to acknowledgement.",
            )
            .buckets(vec![10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
        )
        .expect("valid metric");
        let verdicts = IntCounterVec::new(
            Opts::new(
                "sharpeyes_alert_verdicts_total",
                "Operators' verdicts on alerts (confirmed, false-alarm, handled), by the alert's hazard and camera: a camera's false alarms over its verdicts is its false-alarm rate.",
            ),
            &["hazard", "camera", "verdict"],
        )
        .expect("valid metric");
        let dispatched = IntCounterVec::new(
            Opts::new(
                "sharpeyes_alerts_dispatched_total",
                "Alerts sent on to a [[dispatch]] department, by department and hazard (each once in a cluster).",
            ),
            &["department", "hazard"],
        )
        .expect("valid metric");
        let sensor_readings = IntCounter::new(
            "sharpeyes_sensor_readings_total",
            "Sensor readings accepted.",
        )
        .expect("valid metric");
        let sensor_rejected = IntCounter::new(
            "sharpeyes_sensor_readings_rejected_total",
            "Sensor readings sent to the dead-letter topic.",
        )
        .expect("valid metric");
        let mqtt_connected = IntGauge::new(
            "sharpeyes_mqtt_connected",
            "1 while the MQTT connection is up.",
        )
        .expect("valid metric");
        let stage_cpu = CounterVec::new(
            Opts::new(
                "sharpeyes_stage_cpu_seconds_total",
                "Thread CPU time (not wall time) by stage of the per-frame path: receive, decode, scale, motion, health, preprocess, inference, postprocess, snapshot, publish.",
            ),
            &["stage"],
        )
        .expect("valid metric");
        for c in [
            Box::new(stage_cpu.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(camera_state.clone()),
            Box::new(reconnects.clone()),
            Box::new(model_frames.clone()),
            Box::new(outbox.clone()),
            Box::new(alerts.clone()),
            Box::new(alerts_refused.clone()),
            Box::new(time_to_ack.clone()),
            Box::new(verdicts.clone()),
            Box::new(dispatched.clone()),
            Box::new(sensor_readings.clone()),
            Box::new(sensor_rejected.clone()),
            Box::new(mqtt_connected.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            telemetry,
            camera_state,
            reconnects,
            model_frames,
            outbox,
            alerts,
            alerts_refused,
            time_to_ack,
            verdicts,
            dispatched,
            sensor_readings,
            sensor_rejected,
            mqtt_connected,
            stage_cpu,
        })
    }

    /// Where metrics of other parts (the cluster's) register.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets `camera`'s state gauges: 1 for `state`, 0 for the others.
    pub fn set_camera_state(&self, camera: &str, state: CameraPhase) {
        for s in CameraPhase::ALL {
            self.camera_state
                .with_label_values(&[camera, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// Drops every series labelled with `camera`: a removed camera must not stay in
    /// /metrics (as `streaming`, forever). Call once its tasks have ended.
    pub fn forget_camera(&self, camera: &str) {
        forget(&self.camera_state, camera);
        forget(&self.reconnects, camera);
        forget(&self.telemetry.frames, camera);
    }

    /// The text exposition of every metric, after mirroring `sources`.
    pub fn render(&self, sources: &Sources) -> String {
        let cameras = sources
            .cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (stage, used) in sharpeyes_ingest::cpu::totals() {
            let c = self.stage_cpu.with_label_values(&[stage.as_str()]);
            c.inc_by((used.as_secs_f64() - c.get()).max(0.0));
        }
        let frames = &self.telemetry.frames;
        for (camera, counters, slot) in &cameras {
            mirror(
                frames,
                &[camera, "received"],
                counters.received.load(Ordering::Relaxed),
            );
            mirror(
                frames,
                &[camera, "skipped"],
                counters.skipped.load(Ordering::Relaxed),
            );
            mirror(
                frames,
                &[camera, "quiet"],
                counters.quiet.load(Ordering::Relaxed),
            );
            mirror(
                frames,
                &[camera, "corrupt"],
                counters.corrupt.load(Ordering::Relaxed),
            );
            mirror(
                frames,
                &[camera, "decoded"],
                counters.decode.decoded.load(Ordering::Relaxed),
            );
            mirror(
                frames,
                &[camera, "decode_only"],
                counters.decode.decode_only.load(Ordering::Relaxed),
            );
            mirror(frames, &[camera, "dropped"], slot.dropped());
        }
        for (model, stats) in &sources.models {
            for (outcome, value) in [
                ("inferred", &stats.inferred),
                ("refused", &stats.refused),
                ("stale", &stats.stale),
                ("error", &stats.errors),
            ] {
                mirror(
                    &self.model_frames,
                    &[model, outcome],
                    value.load(Ordering::Relaxed),
                );
            }
        }
        if let Some(alerts) = &sources.alerts {
            let s = alerts.stats();
            self.outbox.set((s.queued + s.in_flight) as i64);
            self.mqtt_connected.set(i64::from(s.connected));
            mirror(&self.telemetry.panics, &["alerts"], s.panics);
            mirror(&self.telemetry.restarts, &["mqtt-link"], s.link_restarts);
            for (severity, n) in &s.refused {
                mirror(&self.alerts_refused, &[severity], *n);
            }
            for ((hazard, severity, source), n) in alerts.queued_by_kind() {
                mirror(&self.alerts, &[&hazard, &severity, &source], n);
            }
            for t in alerts.take_ack_times() {
                self.time_to_ack.observe(t.as_secs_f64());
            }
            for ((hazard, camera, verdict), n) in alerts.verdict_counts() {
                mirror(&self.verdicts, &[&hazard, &camera, &verdict], n);
            }
            for ((department, hazard), n) in alerts.dispatch_counts() {
                mirror(&self.dispatched, &[&department, &hazard], n);
            }
        }
        if let Some(sensors) = &sources.sensors {
            let bump = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
            bump(&self.sensor_readings, sensors.readings());
            bump(&self.sensor_rejected, sensors.rejected());
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Removes the series of `vec` whose `camera` label is `camera`, whatever its other labels.
pub(crate) fn forget<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    camera: &str,
) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("camera") == Some(&camera) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// Brings a counter up to `total`, a count kept elsewhere.
fn mirror(counter: &IntCounterVec, labels: &[&str], total: u64) {
    let c = counter.with_label_values(labels);
    c.inc_by(total.saturating_sub(c.get()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the Grafana dashboard queries exists under that name.
    #[test]
    fn the_dashboard_queries_metrics_that_exist() {
        let m = Metrics::new();
        let t = &m.telemetry;
        t.stage_seconds
            .with_label_values(&[sharpeyes_analytics::stage::INFERENCE])
            .observe(0.005);
        t.frames.with_label_values(&["cam", "analysed"]).inc();
        m.set_camera_state("cam", CameraPhase::Streaming);
        m.reconnects.with_label_values(&["cam", "stall"]).inc();
        t.batch_size.with_label_values(&["m"]).observe(2.0);
        m.model_frames.with_label_values(&["m", "refused"]).inc();
        m.alerts
            .with_label_values(&["fire", "critical", "video"])
            .inc();
        m.time_to_ack.observe(30.0);
        let text = m.render(&Sources::default());
        let dashboard = include_str!("../ops/grafana-dashboard.json");
        let mut checked = 0;
        for (i, _) in dashboard.match_indices("sharpeyes_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "sharpeyes_" {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the dashboard queries {name}, which is not exported:\n{text}"
            );
            checked += 1;
        }
        assert!(checked >= 14, "{checked}");
    }
}
