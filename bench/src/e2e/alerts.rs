//! The grid centre's side: a subscriber on the real broker that notes when each alert
//! arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// An alert as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub at: SystemTime,
    pub camera: String,
    pub hazard: String,
}

pub struct Subscriber {
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Received>>>,
    thread: JoinHandle<()>,
}

impl Subscriber {
    /// Connects, subscribes to `filter` and returns once the broker granted it (10 s at most).
    pub fn start(port: u16, filter: &str) -> Result<Subscriber, String> {
        Self::connect(port, filter, "sharpeyes-e2e", true)
    }

    /// [`Subscriber::start`] on a persistent session, as a grid centre keeps one: what the
    /// broker holds for it while it reconnects after a broker restart is not lost.
    pub fn start_persistent(port: u16, filter: &str) -> Result<Subscriber, String> {
        Self::connect(port, filter, "sharpeyes-soak", false)
    }

    fn connect(
        port: u16,
        filter: &str,
        client_id: &str,
        clean: bool,
    ) -> Result<Subscriber, String> {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(clean);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut connection) = Client::new(opts, 64);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .map_err(|e| format!("subscribing to {filter}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                Ok(Err(e)) if Instant::now() > deadline => {
                    return Err(format!("the broker on 127.0.0.1:{port}: {e}"));
                }
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "no SUBACK from the broker on 127.0.0.1:{port} in 10 s"
                    ));
                }
                _ => {}
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (stop.clone(), got.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(event) = connection.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let at = SystemTime::now();
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        let text =
                            |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                        g.lock().unwrap_or_else(|e| e.into_inner()).push(Received {
                            id: text(&v["id"]),
                            at,
                            camera: text(&v["camera"]["id"]),
                            hazard: text(&v["hazard"]),
                        });
                    }
                    Ok(_) => {}
                    // The broker went away: the step is over or broken; either way, stop.
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
            let _ = client.disconnect();
        });
        Ok(Subscriber { stop, got, thread })
    }

    /// Fire alerts so far.
    pub fn fire_alerts(&self) -> usize {
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|a| a.hazard == "fire")
            .count()
    }

    /// Distinct alert ids so far.
    pub fn distinct_ids(&self) -> usize {
        let got = self.got.lock().unwrap_or_else(|e| e.into_inner());
        got.iter()
            .map(|a| a.id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// Stops listening; how many times each alert id arrived.
    pub fn stop_ids(self) -> std::collections::BTreeMap<String, usize> {
        let mut ids = std::collections::BTreeMap::new();
        for a in self.stop() {
            *ids.entry(a.id).or_insert(0) += 1;
        }
        ids
    }

    /// Stops listening; every alert received, in order of arrival.
    pub fn stop(self) -> Vec<Received> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.got.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
