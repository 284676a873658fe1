//! `sharpeyes demo`: as much of the mission as is built, on embedded defaults.
//!
//! Today: the demo configuration is loaded and checked, an embedded MQTT broker starts on
//! loopback, every demo model is loaded into ONNX Runtime (with its start-up checks), and each
//! demo camera's hazard rules run on a fixture still fed as a stream of frames. Every hazard
//! they confirm becomes a `sharpeyes.alert/1` message with a snapshot, published through the
//! durable outbox; the demo subscribes like a grid centre would and prints what arrives. The
//! live path (simulated RTSP cameras) replaces the stills as it lands.

#![allow(clippy::print_stdout)] // the demo's output is for the person running it

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sharpeyes::sensing::Sensing;
use sharpeyes_alerts::{
    AlertSettings, Alerts, EmbeddedBroker, FrameSize, MqttSettings, Submitted, open_store,
};
use sharpeyes_analytics::{
    AnalysisSettings, CameraAnalyzer, Detector, NmsConfig, RgbImage, Runtime,
};
use sharpeyes_config::{Config, Install};
use tokio::sync::watch;

use crate::commands::{NOT_BUILT, print_loaded, print_problems, report_error};

/// The still each demo camera sees, by position in `config/demo.toml`: the shop camera a
/// fire, the river-bank camera a person standing on the bank, the square a person, and the
/// gate a quiet scene.
const SCENES: [&str; 4] = [
    "synthetic_fire.png",
    "camera.png",
    "astronaut.png",
    "coffee.png",
];

/// Frames per camera, and the time between them: enough for k-of-n and dwell rules.
const FRAMES: u32 = 6;
const FRAME_INTERVAL: Duration = Duration::from_secs(2);
/// Between two readings of a simulated sensor.
const SENSOR_INTERVAL: Duration = Duration::from_millis(500);

pub fn run() -> ExitCode {
    let install = Install::discover();
    println!("sharpeyes demo: embedded defaults (config/demo.toml built into the binary)");
    let origin = install.home.as_ref().map_or_else(
        || Path::new("config/demo.toml").to_owned(),
        |h| h.join("config/demo.toml"),
    );
    let config = match Config::parse(sharpeyes_config::DEMO_TOML, &origin, &install.model_dirs()) {
        Ok(loaded) => {
            print_loaded(&loaded);
            loaded.config
        }
        Err(problems) => {
            print_problems(&problems);
            report_error("the demo configuration does not load here; run `make setup` first");
            return ExitCode::from(2);
        }
    };
    let config = Arc::new(config);
    let mut mqtt = match MqttLink::start(&config) {
        Ok(m) => m,
        Err(e) => {
            report_error(&e);
            return ExitCode::from(2);
        }
    };
    let result = analyse_stills(&config, &install, &mut mqtt);
    let (received, sensors) = mqtt.finish(result.as_ref().map_or(0, |r| r.1));
    match result {
        Ok((events, queued)) => println!(
            "\n{events} hazard event(s) confirmed on the fixture stills, {} sensor alarm(s); {} alert(s) published ({} fused, {} from a sensor alone), {received} received over MQTT.",
            sensors.alarms,
            queued + sensors.sensor_alerts as usize,
            sensors.fused_alerts,
            sensors.sensor_alerts,
        ),
        Err(e) => {
            report_error(&e);
            return ExitCode::from(2);
        }
    }
    println!("\nNot built yet, so the demo stops here:");
    for (part, what) in NOT_BUILT {
        println!("  - {part}: {what}");
    }
    ExitCode::SUCCESS
}

/// The demo's MQTT side: embedded broker, alert service (memory state, disk spool) and a
/// subscriber in the role of a grid centre that prints what arrives.
struct MqttLink {
    rt: tokio::runtime::Runtime,
    sensing: Sensing,
    port: u16,
    shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    received: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// The broker port of the demo: MQTT's own, unless something already listens there.
const DEMO_BROKER: &str = "127.0.0.1:1883";

impl MqttLink {
    fn start(config: &Arc<Config>) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let broker = EmbeddedBroker::start(DEMO_BROKER.parse().expect("a socket address"))
            .or_else(|_| EmbeddedBroker::start("127.0.0.1:0".parse().expect("a socket address")))?;
        let port = broker.addr.port();
        let prefix = "sharpeyes";
        println!(
            "\nMQTT: embedded broker on {} (no [mqtt] configured). Watch the alerts with:",
            broker.addr
        );
        println!("  mosquitto_sub -h 127.0.0.1 -p {port} -t '{prefix}/#' -v");
        let mqtt = MqttSettings::plain("127.0.0.1", port, prefix, &config.node.id);
        let (stop, shutdown) = watch::channel(false);
        let (received_tx, received) = tokio::sync::mpsc::unbounded_channel();
        let (sensing, task) = rt.block_on(async {
            let store = open_store(config).await?;
            println!("State: {}", store.describe());
            let listener = sharpeyes::http::bind(config.http.listen, true).await?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("HTTP listener: {e}"))?;
            println!(
                "HTTP: snapshots at http://{addr}/api/alerts/{{id}}/snapshot while the demo runs"
            );
            sharpeyes::http::serve(
                listener,
                sharpeyes::http::AppState::store_only(store.clone()),
                shutdown.clone(),
            );
            centre(port, prefix, received_tx).await?;
            let settings = AlertSettings {
                snapshot_base_url: format!("http://{addr}"),
                subscriptions: Sensing::subscriptions(config, prefix),
                ..AlertSettings::from_config(config)
            };
            let (alerts, alerts_task) =
                Alerts::start(config.clone(), store, mqtt, settings, shutdown.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            let (sensing, sensing_task) =
                Sensing::start(config.clone(), alerts.clone(), prefix, shutdown.clone())?;
            let task = tokio::spawn(async move {
                let _ = sensing_task.await;
                let _ = alerts_task.await;
            });
            Ok::<_, String>((sensing, task))
        })?;
        Ok(Self {
            rt,
            sensing,
            port,
            shutdown,
            stop,
            task,
            received,
        })
    }

    /// A confirmed video hazard, through fusion with the sensors into an alert.
    fn submit<F>(
        &self,
        event: &sharpeyes_analytics::HazardEvent<F>,
        frame: FrameSize,
        snapshot: &sharpeyes_alerts::Snapshot,
    ) -> Result<Submitted, String> {
        self.rt
            .block_on(self.sensing.on_video(event, frame, Some(snapshot)))
    }

    /// Publishes simulated readings of the demo sensors, with a smoke alarm beside the shop
    /// camera and a rising river, and waits (bounded) for the sensor rules to raise both.
    fn sensor_phase(&self, config: &Config) -> Result<(), String> {
        let alarms = ["smoke-dy-0001@1s", "water-shuhe-01@1s"]
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e: sharpeyes_ingest::ScenarioError| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sim = sharpeyes_ingest::SensorSimulator::new(&config.sensors, alarms)
            .map_err(|e| e.to_string())?;
        let (port, shutdown) = (self.port, self.shutdown.clone());
        self.rt.spawn(async move {
            sharpeyes::sensor_sim::publish(
                sim,
                "127.0.0.1",
                port,
                "sharpeyes",
                SENSOR_INTERVAL,
                shutdown,
            )
            .await
        });
        println!(
            "
Sensors: {} simulated, a reading every {} ms each; smoke and water level go past their limits from t=+1s",
            config.sensors.len(),
            SENSOR_INTERVAL.as_millis()
        );
        let started = Instant::now();
        while self.sensing.stats().alarms < 2 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let stats = self.sensing.stats();
        println!(
            "  after {:.1} s: {} reading(s), {} alarm(s); cameras now verifying: {:?}",
            started.elapsed().as_secs_f64(),
            stats.readings,
            stats.alarms,
            config
                .cameras
                .iter()
                .filter(|c| self.sensing.verifying(&c.id))
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
        );
        if stats.alarms < 2 {
            return Err("the demo sensors raised no alarm within 20 s".into());
        }
        Ok(())
    }

    /// Waits (bounded) for `expected` alerts to come back over MQTT, prints them, stops the
    /// service; returns how many arrived.
    fn finish(mut self, video: usize) -> (usize, sharpeyes::sensing::SensingStats) {
        // Sensor alerts leave when fusion stops waiting for video.
        let wait_until = Instant::now() + Duration::from_secs(12);
        while Instant::now() < wait_until && self.sensing.stats().sensor_alerts < 1 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let expected = video + self.sensing.stats().sensor_alerts as usize;
        let mut received = 0;
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while received < expected {
                match tokio::time::timeout_at(deadline, self.received.recv()).await {
                    Ok(Some(line)) => {
                        received += 1;
                        println!("  received {line}");
                    }
                    _ => break,
                }
            }
            let _ = self.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        });
        (received, self.sensing.stats())
    }
}

/// Subscribes to `{prefix}/alerts/#` like a grid centre; sends one line per alert received.
async fn centre(
    port: u16,
    prefix: &str,
    out: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut options = MqttOptions::new("demo-grid-centre", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let filter = format!("{prefix}/alerts/#");
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        // Ends with the runtime, when the demo does.
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = client.subscribe(&filter, QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let a: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    let _ = out.send(format!(
                        "{} {} ({}) level {} on {}\n           snapshot {}",
                        a["id"].as_str().unwrap_or("?"),
                        a["hazard"].as_str().unwrap_or("?"),
                        a["source"].as_str().unwrap_or("?"),
                        a["escalation_level"],
                        p.topic,
                        a["snapshot"]["url"].as_str().unwrap_or("-"),
                    ));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), ready)
        .await
        .map_err(|_| "the demo subscriber could not subscribe to the embedded broker".to_owned())?
        .map_err(|_| "the demo subscriber stopped".to_owned())
}

/// Loads the models and runs every camera's rules on its still, submitting an alert for each
/// confirmed hazard; returns the events seen and the alerts published.
fn analyse_stills(
    config: &Config,
    install: &Install,
    mqtt: &mut MqttLink,
) -> Result<(usize, usize), String> {
    let lib = install
        .onnxruntime
        .as_ref()
        .ok_or("ONNX Runtime not found: run `make setup`")?;
    let runtime = Runtime::load(lib)?;
    println!("\nONNX Runtime: {}", lib.display());
    let mut detectors = HashMap::new();
    for spec in &config.models {
        let started = Instant::now();
        let d = Detector::load(runtime, spec, NmsConfig::default()).map_err(|e| e.to_string())?;
        println!(
            "model {:<12} loaded in {:>4} ms, classes {:?}",
            spec.name,
            started.elapsed().as_millis(),
            d.classes()
        );
        let batch = d.new_batch();
        detectors.insert(spec.name.clone(), (d, batch));
    }
    let images = install
        .home
        .as_ref()
        .map(|h| h.join("fixtures/images"))
        .ok_or("fixtures/images not found")?;
    let mut stills = Vec::new();
    for (camera, scene) in config.cameras.iter().zip(SCENES.iter().cycle()) {
        let img = image::open(images.join(scene))
            .map_err(|e| format!("{scene}: {e}"))?
            .to_rgb8();
        let (w, h) = img.dimensions();
        let frame = Arc::new(img.into_raw());
        // What a sensor alert shows when no video confirms it.
        mqtt.sensing.note_frame(&camera.id, frame.clone(), w, h);
        stills.push((camera, *scene, frame, w, h));
    }
    mqtt.sensor_phase(config)?;

    println!(
        "\nAnalytics on fixture stills, {FRAMES} frames {}s apart per camera (stills do not move, so the motion gate is bypassed):",
        FRAME_INTERVAL.as_secs()
    );
    let start = Instant::now();
    let mut events = 0;
    let mut queued = 0;
    // One frame at a time: a single detection list, reused.
    let mut out = vec![Vec::new()];
    for (camera, scene, frame, w, h) in stills {
        let mut analyzer = CameraAnalyzer::new(
            config,
            camera,
            |m| detectors.get(m).map(|(d, _)| d.classes()),
            AnalysisSettings::default(),
        )
        .map_err(|e| format!("camera {}: {e}", camera.id))?;
        let models: Vec<String> = analyzer.models().map(str::to_owned).collect();
        println!(
            "  camera {} {} sees {scene}; models {models:?}",
            camera.id, camera.name
        );
        for step in 0..FRAMES {
            let now = start + FRAME_INTERVAL * step;
            for model in &models {
                let (det, batch) = detectors
                    .get_mut(model)
                    .ok_or_else(|| format!("model {model} not loaded"))?;
                batch.clear();
                batch
                    .push(RgbImage::new(w, h, &frame).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                det.detect(batch, &mut out).map_err(|e| e.to_string())?;
                for e in
                    analyzer.on_detections(model, &out[0], &frame, (w, h), now, SystemTime::now())
                {
                    events += 1;
                    let grid: Vec<&str> = config
                        .grid_path(&e.grid)
                        .iter()
                        .map(|g| g.name.as_str())
                        .collect();
                    let boxes: Vec<String> = e
                        .objects
                        .iter()
                        .map(|o| {
                            format!(
                                "#{} {} {:.2} [{:.0},{:.0},{:.0},{:.0}]",
                                o.track_id,
                                o.class,
                                o.score,
                                o.bbox.x1,
                                o.bbox.y1,
                                o.bbox.x2,
                                o.bbox.y2
                            )
                        })
                        .collect();
                    println!(
                        "    t=+{:>2}s HAZARD {} ({}) confidence {:.2}{} in {}: {}",
                        (FRAME_INTERVAL * step).as_secs(),
                        e.hazard,
                        e.severity.as_str(),
                        e.confidence,
                        e.zone
                            .as_ref()
                            .map_or(String::new(), |z| format!(" in zone {z}")),
                        grid.join(" / "),
                        boxes.join(", ")
                    );
                    let drawn: Vec<[f32; 4]> = e
                        .objects
                        .iter()
                        .map(|o| [o.bbox.x1, o.bbox.y1, o.bbox.x2, o.bbox.y2])
                        .collect();
                    let snapshot = sharpeyes_alerts::render(
                        &e.frame,
                        w,
                        h,
                        &drawn,
                        config.alerts.snapshot_max_bytes,
                    )
                    .map_err(|err| format!("snapshot of {}: {err}", e.camera))?;
                    let size = FrameSize {
                        width: w,
                        height: h,
                    };
                    match mqtt.submit(&e, size, &snapshot)? {
                        Submitted::Queued { id, topic, .. } => {
                            queued += 1;
                            println!("           alert {id} -> {topic}");
                        }
                        Submitted::Suppressed => {
                            println!("           (within its cooldown: no new alert)")
                        }
                    }
                }
            }
        }
    }
    Ok((events, queued))
}
