//! `sharpeyes demo`: the whole mission on one machine, on embedded defaults.
//!
//! The RTSP simulator serves the four demo cameras on loopback with scheduled hazards, the
//! sensor simulator publishes the demo sensors' readings, and the real service runs on them
//! (`run`'s pipeline: decoding, detection, rules, fusion, alerts) with an embedded MQTT
//! broker and in-memory state. A subscriber in the role of the grid centre prints every alert
//! as it arrives. Within about 30 seconds: a smoke alarm at the shop confirmed by its camera
//! (one fused fire alert), a person on the river bank, a crowd on the square and the river's
//! water level. Ctrl-C (or `--for`) stops it.

#![allow(clippy::print_stdout)] // the demo's output is for the person running it

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sharpeyes::reload::ConfigSource;
use sharpeyes::service::Service;
use sharpeyes_config::{Config, Install};
use sharpeyes_ingest::{
    ScheduledAlarm, ScheduledScene, SensorSimulator, Simulator, SimulatorConfig,
};
use tokio::sync::watch;

use crate::commands::{load_models, print_loaded, print_problems, report_error};

/// What the demo cameras show, and when (seconds from the start).
const SCENES: [&str; 3] = ["fire@12s:cam1", "person@2s:cam2", "crowd@14s:cam3"];
/// The smoke detector beside the shop trips before its camera sees flames; the river rises
/// later.
const SENSOR_ALARMS: [&str; 2] = ["smoke-dy-0001@3s", "water-shuhe-01@22s"];
const SENSOR_INTERVAL: Duration = Duration::from_millis(500);
/// The simulator's port in `config/demo.toml`.
const DEMO_RTSP: &str = "127.0.0.1:8554";

pub fn run(duration: Option<Duration>) -> ExitCode {
    match demo(duration) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&e);
            ExitCode::from(2)
        }
    }
}

fn demo(duration: Option<Duration>) -> Result<(), String> {
    let install = Install::discover();
    println!("sharpeyes demo: embedded defaults (config/demo.toml built into the binary)");

    let started = Instant::now();
    let scenario = SCENES
        .iter()
        .map(|s| s.parse::<ScheduledScene>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let sim_config = |port| SimulatorConfig {
        cameras: 4,
        width: 960,
        height: 540,
        fps: 25,
        gop: 25,
        port,
        scenario: scenario.clone(),
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(sim_config(8554))
        .or_else(|_| Simulator::start(sim_config(0)))
        .map_err(|e| format!("the camera simulator does not start: {e}"))?;
    // Scene times count from here.
    let sim_started = Instant::now();
    println!(
        "\nCameras: 4 simulated on rtsp://127.0.0.1:{}/cam1..cam4 (960x540, 25 fps; ready in {:.1} s)",
        sim.port(),
        started.elapsed().as_secs_f64()
    );
    for s in SCENES {
        println!("  scheduled: {s}");
    }

    let origin = install.home.as_ref().map_or_else(
        || Path::new("config/demo.toml").to_owned(),
        |h| h.join("config/demo.toml"),
    );
    let text = sharpeyes_config::DEMO_TOML.replace(DEMO_RTSP, &format!("127.0.0.1:{}", sim.port()));
    let mut config = match Config::parse(&text, &origin, &install.model_dirs()) {
        Ok(loaded) => {
            print_loaded(&loaded);
            loaded.config
        }
        Err(problems) => {
            print_problems(&problems);
            return Err("the demo configuration does not load here; run `make setup` first".into());
        }
    };
    // Each demo starts from an empty spool: what an earlier demo left undelivered or
    // unacknowledged (its outbox, its pending escalations) is not replayed into this one.
    // The directory is the embedded configuration's own, under the working directory.
    match std::fs::remove_dir_all(&config.node.data_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot clear the demo's data directory {}: {e}",
                config.node.data_dir.display()
            ));
        }
    }
    // Another program on the dashboard's port: take a free one.
    if std::net::TcpListener::bind(config.http.listen).is_err() {
        config.http.listen = "127.0.0.1:0".parse().expect("an address");
    }
    let config = Arc::new(config);
    let models = load_models(&config, &install)?;
    let source = ConfigSource {
        file: None,
        text,
        model_dirs: install.model_dirs(),
        overrides: Default::default(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = rt.block_on(async {
        let (stop, shutdown) = watch::channel(false);
        let service = Service::start(config.clone(), source, models).await?;
        let e = &service.endpoints;
        let broker = e.embedded_broker.ok_or("the demo expects its embedded broker")?;
        println!("\nDashboard: http://{}/  (metrics on /metrics)", e.http);
        println!(
            "MQTT: embedded broker on {broker}. Watch everything with:\n  mosquitto_sub -h 127.0.0.1 -p {} -t '{}/#' -v",
            broker.port(),
            e.prefix
        );
        let received = Arc::new(Received::default());
        centre(broker.port(), &e.prefix, received.clone(), sim_started).await?;

        let alarms = SENSOR_ALARMS
            .iter()
            .map(|a| a.parse::<ScheduledAlarm>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let sensors =
            SensorSimulator::new(&config.sensors, alarms).map_err(|e| e.to_string())?;
        let prefix = e.prefix.clone();
        let publisher = tokio::spawn(sharpeyes::sensor_sim::publish(
            sensors,
            "127.0.0.1",
            broker.port(),
            prefix,
            SENSOR_INTERVAL,
            shutdown.clone(),
        ));
        println!(
            "Sensors: {} simulated, a reading every {} ms each; scheduled alarms: {}",
            config.sensors.len(),
            SENSOR_INTERVAL.as_millis(),
            SENSOR_ALARMS.join(", ")
        );
        match duration {
            Some(d) => println!("\nAlerts as the grid centre receives them (running for {}):", humantime::format_duration(d)),
            None => println!("\nAlerts as the grid centre receives them (Ctrl-C stops):"),
        }
        let ctrl_c = tokio::signal::ctrl_c();
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = tokio::time::sleep(d) => {}
                }
            }
            None => {
                let _ = ctrl_c.await;
            }
        }
        println!("\nstopping...");
        let _ = stop.send(true);
        let _ = publisher.await;
        service.stop().await;
        Ok::<_, String>(received)
    });
    sim.stop();
    let received = result?;
    println!(
        "\n{} alert(s) received over MQTT: {} fused, {} from a sensor alone, {} from video alone.",
        received.all.load(Ordering::Relaxed),
        received.fused.load(Ordering::Relaxed),
        received.sensor.load(Ordering::Relaxed),
        received.video.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Alerts the demo's grid centre received, by source.
#[derive(Default)]
struct Received {
    all: AtomicUsize,
    video: AtomicUsize,
    sensor: AtomicUsize,
    fused: AtomicUsize,
}

/// Subscribes to `{prefix}/alerts/#` like a grid centre and prints each alert as it arrives.
async fn centre(
    port: u16,
    prefix: &str,
    received: Arc<Received>,
    start: Instant,
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
                    let source = a["source"].as_str().unwrap_or("?");
                    received.all.fetch_add(1, Ordering::Relaxed);
                    match source {
                        "video" => &received.video,
                        "sensor" => &received.sensor,
                        _ => &received.fused,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    let evidence: Vec<String> = a["evidence"]
                        .as_array()
                        .map(|e| {
                            e.iter()
                                .map(|e| {
                                    format!(
                                        "{} {} {} ({})",
                                        e["sensor_id"].as_str().unwrap_or("?"),
                                        e["value"],
                                        e["unit"].as_str().unwrap_or(""),
                                        e["rule"].as_str().unwrap_or("")
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    println!(
                        "  t=+{:>4.1}s {} ({}) {} confidence {:.2} level {} camera {} on {}\n           snapshot {}{}",
                        start.elapsed().as_secs_f64(),
                        a["hazard"].as_str().unwrap_or("?"),
                        source,
                        a["severity"].as_str().unwrap_or("?"),
                        a["confidence"].as_f64().unwrap_or(0.0),
                        a["escalation_level"],
                        a["camera"]["name"].as_str().unwrap_or("-"),
                        p.topic,
                        a["snapshot"]["url"].as_str().unwrap_or("-"),
                        if evidence.is_empty() {
                            String::new()
                        } else {
                            format!("\n           evidence {}", evidence.join("; "))
                        }
                    );
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
