//! Publishes simulated sensor readings to an MQTT broker, as field gateways would: one
//! reading per sensor per interval, QoS 1, on each sensor's topic.

use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use sharpeyes_ingest::SensorSimulator;
use tokio::sync::watch;

/// Publishes until `shutdown`; returns the readings handed to the broker. Connection errors are
/// retried (the broker may start after the simulator).
pub async fn publish(
    mut sim: SensorSimulator,
    host: &str,
    port: u16,
    prefix: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> u64 {
    let mut options = MqttOptions::new(
        format!("sharpeyes-sensor-sim-{}", std::process::id()),
        host,
        port,
    );
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected = false;
    let mut sent = 0;
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            _ = tick.tick(), if connected => {
                for (topic, payload) in sim.readings(started.elapsed(), SystemTime::now(), &prefix) {
                    if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok() {
                        sent += 1;
                    }
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => connected = true,
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(broker = %format!("{host}:{port}"), "sensor simulator lost the broker: {e}");
                    }
                    connected = false;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    sent
}
