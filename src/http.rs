//! The HTTP side: alert snapshots by id (the URL every alert carries), liveness and
//! readiness, and Prometheus metrics. The rest of the API and the operators' page grow here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sharpeyes_alerts::{Alerts, StateStore};

use crate::metrics::{Metrics, Sources};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn StateStore>,
    /// The running service, for readiness and metrics; `None` in the stills demo.
    pub service: Option<Service>,
}

#[derive(Clone)]
pub struct Service {
    pub alerts: Alerts,
    pub metrics: Arc<Metrics>,
    pub sources: Arc<Sources>,
}

impl AppState {
    pub fn store_only(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            service: None,
        }
    }
}
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds `listen`; with `fallback`, a free loopback port when `listen` is taken (the demo).
pub async fn bind(listen: SocketAddr, fallback: bool) -> Result<TcpListener, String> {
    match TcpListener::bind(listen).await {
        Ok(l) => Ok(l),
        Err(_) if fallback => TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen for HTTP on 127.0.0.1: {e}")),
        Err(e) => Err(format!(
            "cannot listen for HTTP on {listen}: {e}; set [http] listen to a free address"
        )),
    }
}

/// Serves until `shutdown` turns true.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("HTTP server stopped: {e}");
        }
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/alerts/:id/snapshot", get(snapshot))
        .with_state(state)
}

/// Ready: the models are loaded (the service does not start otherwise), the broker is
/// connected (embedded or not) and the state store answers.
async fn ready(State(state): State<AppState>) -> Response {
    let mut missing = Vec::new();
    if let Some(service) = &state.service {
        if !service.alerts.stats().connected {
            missing.push("the MQTT broker is not connected".to_owned());
        }
    }
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => {}
        Ok(Err(e)) => missing.push(format!("the state store does not answer: {e}")),
        Err(_) => missing.push("the state store did not answer within 2 s".to_owned()),
    }
    if missing.is_empty() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", missing.join("\n")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.service {
        Some(s) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            s.metrics.render(&s.sources),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics in this mode\n").into_response(),
    }
}

async fn snapshot(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let store = &state.store;
    if !sharpeyes_alerts::is_alert_id(&id) {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not an alert id (a 26-character ULID)\n"),
        )
            .into_response();
    }
    match store.snapshot(&id).await {
        Ok(Some(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
            ],
            jpeg,
        )
            .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no snapshot for alert {id}: none was taken, or it expired\n"),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(alert = %id, "snapshot lookup failed: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the state store is unavailable\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use sharpeyes_alerts::MemoryStore;

    use super::*;

    /// A bare HTTP/1.1 GET over a real socket: status code and body.
    fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, raw[split + 4..].to_vec())
    }

    #[test]
    fn snapshots_are_served_by_alert_id() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let id = "01M84ZY7VXEBGJ9RYRFB7D2AQG";
        let jpeg = b"\xff\xd8\xff\xe0 not really a jpeg".to_vec();
        let (stop, shutdown) = watch::channel(false);
        let addr = rt.block_on(async {
            store
                .put_snapshot(id, &jpeg, Duration::from_secs(60))
                .await
                .unwrap();
            let listener = bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
            let addr = listener.local_addr().unwrap();
            serve(listener, AppState::store_only(store.clone()), shutdown);
            addr
        });
        assert_eq!(
            get(addr, &format!("/api/alerts/{id}/snapshot")),
            (200, jpeg)
        );
        let (status, _) = get(addr, "/api/alerts/01M84ZY7VXEBGJ9RYRFB7D2AQH/snapshot");
        assert_eq!(status, 404);
        let (status, body) = get(addr, "/api/alerts/..%2Fetc%2Fpasswd/snapshot");
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert_eq!(get(addr, "/healthz"), (200, b"ok\n".to_vec()));
        assert_eq!(get(addr, "/readyz"), (200, b"ready\n".to_vec()));
        let _ = stop.send(true);
    }
}
