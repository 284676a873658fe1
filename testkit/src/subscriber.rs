//! An MQTT subscriber in the role of a grid centre.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// A received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("message on {} is not JSON: {e}", self.topic))
    }
}

/// Persistent session, QoS 1, reconnecting: what a grid centre runs.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Message>>>,
    /// Subscriptions confirmed so far: one per (re)connection to a broker without the session.
    pub subacks: Arc<AtomicUsize>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects to the broker on loopback `port` and subscribes to `filter`; returns once the
    /// broker confirmed the subscription.
    pub async fn connect(
        port: u16,
        client_id: &str,
        filter: &str,
        user: Option<(&str, &str)>,
    ) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            // Takes whatever the broker carries (MQTT's own limit), as the service does.
            .set_max_packet_size(268_435_455, 1 << 20);
        if let Some((u, p)) = user {
            options.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let sink = messages.clone();
        let subacks = Arc::new(AtomicUsize::new(0));
        let subacks_seen = subacks.clone();
        let sub_client = client.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = sub_client.subscribe(&filter, QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        subacks_seen.fetch_add(1, Ordering::SeqCst);
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        sink.lock().expect("not poisoned").push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscriber was not subscribed within 10 s")
            .expect("the subscriber task runs");
        Self {
            messages,
            subacks,
            client,
            task,
        }
    }

    pub fn snapshot(&self) -> Vec<Message> {
        self.messages.lock().expect("not poisoned").clone()
    }

    /// Waits up to `timeout` until `done` holds for the messages so far; returns them.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Message]) -> bool,
    ) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.snapshot();
            if done(&got) || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("the client queue takes it");
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Alert ids among `messages` on alert topics, with how often each arrived.
pub fn alert_ids(messages: &[Message]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for m in messages.iter().filter(|m| m.topic.contains("/alerts/")) {
        let id = m.json()["id"]
            .as_str()
            .expect("an alert has an id")
            .to_owned();
        *ids.entry(id).or_default() += 1;
    }
    ids
}
