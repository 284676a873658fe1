//! The service, wired: every camera through ingest -> analytics -> fusion -> alerts, every
//! sensor through the sensor stage -> fusion -> alerts, and the HTTP API beside them.
//!
//! [`Service::start`] and [`Service::stop`] go step by step, each step a function named
//! for what it does. Frames and events only move forward: the cameras' analysis tasks send
//! video events to fusion, the sensor stage sends alarms to fusion, fusion submits alerts.
//! Stopping goes the same way: intake first (cameras, sensors, API), then the models finish
//! their queues, then fusion publishes what they produced, then the MQTT link drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sharpeyes_alerts::{
    AlertSettings, Alerts, EmbeddedBroker, MqttSettings, StateStore, open_store,
};
use sharpeyes_analytics::{Analysis, Models};
use sharpeyes_config::Config;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::access::Access;
use crate::cameras::{Cameras, Directory};
use crate::metrics::{Metrics, Sources};
use crate::reload::{ConfigSource, Control, ControlLoop, control_loop};
use crate::status::{CameraBoard, StatusSinks};
use crate::supervise::{Health, Supervisor};

/// The broker port `run` embeds when no `[mqtt]` is configured.
pub const EMBEDDED_BROKER: &str = "127.0.0.1:1883";
/// Video events waiting for fusion. Each camera's analysis waits when it is full: events are
/// hazards, never dropped.
const VIDEO_EVENTS: usize = 256;
/// Sensor alarms and clearings waiting for fusion.
const SENSOR_EVENTS: usize = 256;
/// How long stopping waits for fusion to publish what the last frames confirmed, and then
/// for the alert service (whose link bounds its own drain).
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Where the running service can be reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoints {
    pub http: SocketAddr,
    pub broker: String,
    /// The embedded broker's address, when there is one.
    pub embedded_broker: Option<SocketAddr>,
    pub prefix: String,
}

/// The running service.
pub struct Service {
    pub endpoints: Endpoints,
    alerts: Alerts,
    cameras: Arc<Cameras>,
    control: mpsc::Sender<Control>,
    /// Stops the sensor stage, the API and the control loop.
    intake: watch::Sender<bool>,
    /// Stops the alert service; sent last.
    delivery: watch::Sender<bool>,
    /// Tells the cluster coordinator every camera has stopped: release and leave.
    leave: watch::Sender<bool>,
    cluster_task: Option<JoinHandle<()>>,
    fusion_task: JoinHandle<()>,
    alerts_task: JoinHandle<()>,
    other_tasks: Vec<JoinHandle<()>>,
    _broker: Option<EmbeddedBroker>,
}

impl Service {
    /// Starts everything on the current tokio runtime; [`Service::stop`] stops it.
    pub async fn start(
        config: Arc<Config>,
        source: ConfigSource,
        models: Models,
    ) -> Result<Service, String> {
        let (intake, intake_rx) = watch::channel(false);
        let (delivery, delivery_rx) = watch::channel(false);
        let (mqtt, embedded) = broker_settings(&config)?;
        let store = open_store(&config).await.map_err(|e| e.to_string())?;
        tracing::info!(store = %store.describe(), broker = %mqtt.broker(), "state store open");
        let tls = crate::http::tls(&config.http)?;
        let listener = crate::http::bind(config.http.listen).await?;
        let http = listener
            .local_addr()
            .map_err(|e| format!("HTTP listener: {e}"))?;
        let endpoints = Endpoints {
            http,
            broker: mqtt.broker(),
            embedded_broker: embedded.as_ref().map(|b| b.addr),
            prefix: mqtt.prefix.clone(),
        };
        let (alerts, alerts_task) =
            start_alerts(&config, store.clone(), mqtt, http, delivery_rx).await?;

        let metrics = Metrics::new();
        let health = Health::default();
        let supervisor = Supervisor {
            telemetry: metrics.telemetry.clone(),
            health: health.clone(),
        };
        let (video_tx, video_rx) = mpsc::channel(VIDEO_EVENTS);
        let mut analysis =
            Analysis::start(config.clone(), models, metrics.telemetry.clone(), video_tx);
        let mutes_task = crate::mutes::start(
            alerts.clone(),
            analysis.mutes(),
            analysis.accepted_views(),
            intake_rx.clone(),
        );
        let (health_tx, health_rx) = mpsc::unbounded_channel();
        if config.health.enabled {
            analysis.report_health(health_tx);
        }
        let (sensor_tx, sensor_rx) = mpsc::channel(SENSOR_EVENTS);
        let sensors_here = if config.cluster().is_some() {
            crate::cluster::SensorsHere::none()
        } else {
            crate::cluster::SensorsHere::default()
        };
        let (sensors, sensors_task) = crate::sensors::start(
            &config,
            alerts.clone(),
            &endpoints.prefix,
            sensor_tx,
            &supervisor,
            sensors_here.clone(),
            intake_rx.clone(),
        )?;
        let directory = Directory::default();
        let (_, fusion_task) = crate::fusion::start(
            config.clone(),
            alerts.clone(),
            directory.clone(),
            &supervisor,
            video_rx,
            sensor_rx,
        );

        let sources = Arc::new(Sources {
            models: analysis.model_stats(),
            alerts: Some(alerts.clone()),
            sensors: Some(sensors.clone()),
            ..Sources::default()
        });
        let board = CameraBoard::default();
        let health_task = config.health.enabled.then(|| {
            crate::camera_health::HealthMetrics::new(metrics.registry())
                .map(|m| {
                    crate::camera_health::start(
                        config.clone(),
                        alerts.clone(),
                        board.clone(),
                        m,
                        health_rx,
                        intake_rx.clone(),
                    )
                })
                .map_err(|e| format!("health metrics: {e}"))
        });
        let health_task = health_task.transpose()?;
        let health_reports = if config.health.enabled {
            Some(crate::http::HealthReports {
                config: config.clone(),
                history: Arc::new(tokio::sync::Mutex::new(
                    crate::health_history::HealthHistory::open(&config).await,
                )),
            })
        } else {
            None
        };
        let status = StatusSinks {
            board: board.clone(),
            metrics: metrics.clone(),
            alerts: alerts.clone(),
        };
        let cameras = Arc::new(Cameras::new(
            config.clone(),
            analysis,
            directory.clone(),
            sources.clone(),
            status,
        ));
        if config.cluster().is_some() {
            // Nothing runs until the coordinator holds its leases.
            cameras.set_owned(Default::default()).await;
        }
        let applied = cameras.apply(&config).await;
        if let Some((id, why)) = applied.failed.first() {
            return Err(format!("camera {id}: {why}"));
        }

        // Alone, this node is the GB/T 28181 device; in a cluster, the node that leases it.
        let platform_role = crate::gb28181::Role::new(config.cluster().is_none());
        let (leave, leave_rx) = watch::channel(false);
        let (control, requests) = mpsc::channel(8);
        let view = crate::cluster::ClusterView::default();
        let cluster_task = crate::cluster::start(
            &config,
            crate::cluster::Coordination {
                cameras: cameras.clone(),
                board: board.clone(),
                alerts: alerts.clone(),
                control: control.clone(),
                sensors: sensors_here,
                view: view.clone(),
                metrics: crate::cluster::ClusterMetrics::new(metrics.registry())
                    .map_err(|e| format!("cluster metrics: {e}"))?,
                stop: intake_rx.clone(),
                leave: leave_rx,
                platform: config.gb28181.is_some().then(|| platform_role.clone()),
            },
        );

        let platform = crate::gb28181::start(
            &config,
            alerts.clone(),
            board.clone(),
            sensors.clone(),
            metrics.registry(),
            platform_role,
            intake_rx.clone(),
        )
        .await?;
        let (platform, platform_task) = match platform {
            Some((p, t)) => (Some(p), Some(t)),
            None => (None, None),
        };
        let api = crate::http::Api {
            alerts: alerts.clone(),
            metrics,
            sources,
            cameras: board,
            control: Some(control.clone()),
            health,
            cluster: view,
            platform,
            health_reports,
        };
        let access = Access::from_config(&config.http, http)?;
        let http_task = crate::http::serve(
            listener,
            crate::http::AppState {
                store,
                api: Some(api),
                access: Arc::new(access),
            },
            intake_rx.clone(),
            tls,
        );
        let control_task = supervisor.spawn(
            "control",
            ControlLoop {
                cameras: cameras.clone(),
                alerts: alerts.clone(),
                source,
                requests,
                stop: intake_rx,
                added: Vec::new(),
                removed: Vec::new(),
                shared: crate::reload::SharedCameras::new(&config),
            },
            |state| Box::pin(control_loop(state)),
        );
        Ok(Service {
            endpoints,
            alerts,
            cameras,
            control,
            intake,
            delivery,
            leave,
            cluster_task,
            fusion_task,
            alerts_task,
            other_tasks: [sensors_task, http_task, control_task, mutes_task]
                .into_iter()
                .chain(platform_task)
                .chain(health_task)
                .collect(),
            _broker: embedded,
        })
    }

    /// Waits up to `limit` for the broker to take this node's subscriptions (operators'
    /// acknowledgements, sensor readings): a message sent on them before reaches nobody, as
    /// the broker keeps none for a node not yet subscribed. Whether it did.
    pub async fn subscribed(&self, limit: Duration) -> bool {
        self.alerts.wait_subscribed(limit).await
    }

    /// Where SIGHUP and the API send camera changes.
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    /// Stops in order: intake (cameras, sensors, the API), then the models finish their
    /// queues, then fusion publishes what they produced, then the alert link drains.
    pub async fn stop(self) {
        let _ = self.intake.send(true);
        self.cameras.stop_all().await;
        let _ = self.leave.send(true);
        if let Some(task) = self.cluster_task {
            let _ = tokio::time::timeout(STOP_LIMIT, task).await;
        }
        for task in self.other_tasks {
            let _ = tokio::time::timeout(STOP_LIMIT, task).await;
        }
        // Its inputs are closed now: it ends once it has submitted what they held.
        if tokio::time::timeout(STOP_LIMIT, self.fusion_task)
            .await
            .is_err()
        {
            tracing::warn!(limit = ?STOP_LIMIT, "fusion did not finish; its last alerts wait in no outbox");
        }
        let _ = self.delivery.send(true);
        let _ = tokio::time::timeout(STOP_LIMIT, self.alerts_task).await;
    }
}

/// `[mqtt]`, or an embedded broker on [`EMBEDDED_BROKER`] (any free loopback port when that
/// one is taken).
fn broker_settings(config: &Config) -> Result<(MqttSettings, Option<EmbeddedBroker>), String> {
    if let Some(m) = &config.mqtt {
        let settings = MqttSettings::from_config(m, &config.node.id).map_err(|e| e.to_string())?;
        return Ok((settings, None));
    }
    let broker = EmbeddedBroker::start(EMBEDDED_BROKER.parse().expect("an address"))
        .or_else(|_| EmbeddedBroker::start("127.0.0.1:0".parse().expect("an address")))
        .map_err(|e| e.to_string())?;
    let settings = MqttSettings::plain(
        "127.0.0.1",
        broker.addr.port(),
        "sharpeyes",
        &config.node.id,
    );
    Ok((settings, Some(broker)))
}

/// The alert service, with the sensors' subscriptions and snapshot URLs on `http` unless
/// `[http] public_url` says otherwise.
async fn start_alerts(
    config: &Arc<Config>,
    store: Arc<dyn StateStore>,
    mqtt: MqttSettings,
    http: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(Alerts, JoinHandle<()>), String> {
    let mut settings = AlertSettings::from_config(config);
    if config.http.public_url.is_none() {
        let scheme = if config.http.cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        settings.snapshot_base_url = format!("{scheme}://{http}");
    }
    settings.subscriptions = crate::sensors::subscriptions(config, &mqtt.prefix);
    Alerts::start(config.clone(), store, mqtt, settings, stop)
        .await
        .map_err(|e| e.to_string())
}
