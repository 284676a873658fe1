//! The HTTP side, so far: alert snapshots by id (the URL every alert carries) and liveness.
//! The API and the operators' page (issue: Service) grow here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sharpeyes_alerts::StateStore;
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
    store: Arc<dyn StateStore>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(store);
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

fn router(store: Arc<dyn StateStore>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/alerts/:id/snapshot", get(snapshot))
        .with_state(store)
}

async fn snapshot(State(store): State<Arc<dyn StateStore>>, Path(id): Path<String>) -> Response {
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
            serve(listener, store.clone(), shutdown);
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
        let _ = stop.send(true);
    }
}
