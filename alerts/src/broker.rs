//! The embedded MQTT broker (rumqttd) on loopback: what alerts go to when no `[mqtt]` broker
//! is configured, so the demo and a first `run` need nothing else installed.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::error::{Error, ErrorKind};
use crate::mqtt::MAX_PACKET;

/// A running embedded broker. It lives until the process exits (rumqttd has no stop).
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Listens on `addr` (a loopback address; port 0 picks a free one).
    pub fn start(addr: SocketAddr) -> Result<Self, Error> {
        if !addr.ip().is_loopback() {
            return Err(Error::new(
                ErrorKind::Broker,
                format!(
                    "the embedded broker listens on loopback only, not {addr}; configure [mqtt] for a real broker"
                ),
            ));
        }
        // rumqttd binds in its own thread and reports failure only in its log: find out here.
        let addr = TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map_err(|e| {
                Error::new(ErrorKind::Broker, format!("the embedded MQTT broker cannot listen on {addr}: {e}; is another broker running there?"))
            })?;
        let server = ServerSettings {
            name: "sharpeyes-embedded".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 5000,
                max_payload_size: MAX_PACKET,
                max_inflight_count: 256,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 256,
                max_outgoing_packet_count: 256,
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 4,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([("v4".to_owned(), server)])),
            ..Config::default()
        };
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = Broker::new(config).start() {
                    tracing::error!("embedded MQTT broker stopped: {e}");
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Broker,
                    format!("cannot start the embedded broker thread: {e}"),
                )
            })?;
        // No probe connection here (rumqttd logs an aborted handshake as an error): clients
        // retry until it listens, which takes milliseconds.
        Ok(Self { addr })
    }
}
