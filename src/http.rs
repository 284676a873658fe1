//! The HTTP side: the operators' page, the API (cameras, recent alerts, acknowledge, a live
//! feed), alert snapshots by id (the URL every alert carries), liveness, readiness and
//! Prometheus metrics.
//!
//! Who may call what, and from where, is [`crate::access`]'s to say: it stands in front of
//! every route. Bodies are limited to [`MAX_BODY`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sharpeyes_alerts::{AckRequest, AlertFilter, Alerts, StateStore};

use crate::access::Access;
use crate::cameras::Applied;
use crate::metrics::{Metrics, Sources};
use crate::reload::Control;
use crate::status::CameraBoard;

/// The largest request body: a camera's TOML or an acknowledgement is far smaller.
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn StateStore>,
    /// The running service's parts the API serves; `None` where only snapshots are served.
    pub api: Option<Api>,
    pub access: Arc<Access>,
}

#[derive(Clone)]
pub struct Api {
    pub alerts: Alerts,
    pub metrics: Arc<Metrics>,
    pub sources: Arc<Sources>,
    pub cameras: CameraBoard,
    /// Where camera changes go; `None` where cameras cannot change.
    pub control: Option<tokio::sync::mpsc::Sender<Control>>,
    /// Supervised tasks that are down, for `/readyz`.
    pub health: crate::supervise::Health,
    /// This node's place in a cluster, for `/api/cluster`.
    pub cluster: crate::cluster::ClusterView,
    /// The GB/T 28181 platform, when `[gb28181]` is set: a line in `/readyz` while it does not
    /// take alarms.
    pub platform: Option<crate::gb28181::Platform>,
    /// The history behind `/api/health/report`, and the configuration its cameras and grids
    /// come from; `None` without `[health]`.
    pub health_reports: Option<HealthReports>,
}

/// What `/api/health/report` reads.
#[derive(Clone)]
pub struct HealthReports {
    pub config: Arc<sharpeyes_config::Config>,
    pub history: Arc<tokio::sync::Mutex<crate::health_history::HealthHistory>>,
}

/// The operators' page: markup, script and style, no build step. Separate files so that the
/// page's Content-Security-Policy can forbid inline script.
const PAGE: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/app.css");
/// The page loads only its own script, style, API data and snapshot blobs, and may not be
/// framed.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl AppState {
    pub fn store_only(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            api: None,
            access: Arc::new(Access::loopback()),
        }
    }
}
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Binds `listen`; port 0 takes a free one (the listener says which).
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen for HTTP on {listen}: {e}; set [http] listen to a free address")
    })
}

/// The TLS setup `[http] cert_file` and `key_file` ask for (`None`: plain HTTP); read now,
/// so that a missing or unusable file stops the start with its name.
pub fn tls(http: &sharpeyes_config::Http) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key)) = (&http.cert_file, &http.key_file) else {
        return Ok(None);
    };
    let (chain, private) = sharpeyes_alerts::read_identity("[http]", cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("[http] TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "[http] cert_file {} and key_file {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A TLS handshake that takes longer than this is dropped: a client that connects and
/// says nothing holds no task for long.
const TLS_HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `shutdown` turns true; over TLS when `tls` is set.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> tokio::task::JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let Some(tls) = tls else {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!("HTTP server stopped: {e}");
            }
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        loop {
            let (tcp, _) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        tracing::warn!("HTTPS accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            while connections.try_join_next().is_some() {}
            let (acceptor, app) = (acceptor.clone(), app.clone());
            connections.spawn(async move {
                let stream =
                    match tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        // What the client sent is not logged: it is the client's.
                        Ok(Err(_)) | Err(_) => return,
                    };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
        // Open connections (a live feed) end with the service.
        connections.shutdown().await;
    })
}

fn router(state: AppState) -> Router {
    let access = state.access.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", PAGE_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { page("text/css; charset=utf-8", PAGE_CSS) }),
        )
        .route("/api/cameras", get(cameras).post(add_camera))
        .route("/api/cameras/:id", axum::routing::delete(remove_camera))
        .route("/api/cameras/:id/view", post(accept_view))
        .route("/api/reload", post(reload))
        .route("/api/cluster", get(cluster))
        .route("/api/health/report", get(health_report))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/:id/ack", post(acknowledge))
        .route("/api/alerts/:id/mute", post(mute))
        .route("/api/mutes", get(mutes))
        .route("/api/mutes/:id", axum::routing::delete(unmute))
        .route("/api/events", get(events))
        .route("/api/alerts/:id/snapshot", get(snapshot))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::access::guard,
        ))
        .with_state(state)
}

/// A file of the page, under its security policy.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// Ready: the models are loaded (the service does not start otherwise), the broker is
/// connected (embedded or not) and the state store answers. The answer is open to anyone,
/// so it names the part, never a host or an error's text (those go to the log).
async fn ready(State(state): State<AppState>) -> Response {
    let mut missing = Vec::new();
    if let Some(service) = &state.api {
        let stats = service.alerts.stats();
        if !stats.connected {
            missing.push("the MQTT broker is not connected".to_owned());
        } else if !stats.subscribed {
            missing.push("the MQTT broker has not yet taken this node's subscriptions (operators' acknowledgements, sensor readings)".to_owned());
        }
        missing.extend(service.health.problems());
        missing.extend(service.platform.as_ref().and_then(|p| p.problem()));
        if service.cluster.get().is_some_and(|c| !c.coordinated) {
            missing.push("the cluster's Redis does not answer: this node runs no camera once its leases could have expired".to_owned());
        }
        if service.alerts.outbox_full() {
            missing.push(format!(
                "the outbox is full ({} alerts wait for the broker): new alerts are refused, the least severe first",
                stats.alerts_waiting
            ));
        }
    }
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("readiness: the state store does not answer: {e}");
            missing.push("the state store does not answer".to_owned());
        }
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
    match &state.api {
        Some(s) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            s.metrics.render(&s.sources),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics in this mode\n").into_response(),
    }
}

fn no_service() -> Response {
    (StatusCode::NOT_FOUND, "not served in this mode\n").into_response()
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(value).unwrap_or_default(),
    )
        .into_response()
}

async fn cameras(State(state): State<AppState>) -> Response {
    match &state.api {
        Some(s) => {
            let mut list = s.cameras.list();
            // In a cluster: every camera, with the node that runs it.
            if let Some(cluster) = s.cluster.ask() {
                for camera in &mut list {
                    camera.node = Some(cluster.node.id.clone());
                }
                list.extend(cluster.elsewhere);
            }
            json(&list)
        }
        None => no_service(),
    }
}

/// This node's place in the cluster: 404 when it is not in one.
async fn cluster(State(state): State<AppState>) -> Response {
    match state.api.as_ref().map(|s| s.cluster.ask()) {
        Some(Some(view)) => json(&view),
        Some(None) => (
            StatusCode::NOT_FOUND,
            "this node is not in a cluster: see [cluster] in the configuration\n",
        )
            .into_response(),
        None => no_service(),
    }
}

/// Sends a camera change to the registry and answers with what it did.
async fn change_cameras(
    service: &Api,
    request: impl FnOnce(tokio::sync::oneshot::Sender<Result<Applied, String>>) -> Control,
) -> Response {
    let Some(control) = &service.control else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "cameras cannot change in this mode\n",
        )
            .into_response();
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if control.send(request(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the service is stopping\n").into_response();
    }
    match rx.await {
        Ok(Ok(applied)) => json(&applied),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the service is stopping\n").into_response(),
    }
}

/// Adds a camera: the body is one `[[cameras]]` entry in TOML (without the header).
async fn add_camera(State(state): State<AppState>, body: String) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    let body = body.trim_start();
    let body = body.strip_prefix("[[cameras]]").unwrap_or(body).to_owned();
    change_cameras(service, |tx| Control::Add(body, tx)).await
}

async fn remove_camera(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    change_cameras(service, |tx| Control::Remove(id, tx)).await
}

/// Takes a camera's view as it is now for its health reference (a camera re-aimed on
/// purpose): `moved` ends on whichever node runs it within a few seconds.
async fn accept_view(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    let known = service.cameras.list().iter().any(|c| c.id == id)
        || (service.cluster.ask()).is_some_and(|c| c.elsewhere.iter().any(|c| c.id == id));
    if !known {
        return (
            StatusCode::NOT_FOUND,
            "no camera of that id: GET /api/cameras lists them\n",
        )
            .into_response();
    }
    match service.alerts.accept_view(&id).await {
        Ok(at_ms) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
            json(&serde_json::json!({
                "camera": id,
                "accepted_at": humantime::format_rfc3339_millis(at).to_string(),
            }))
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Reads the configuration file again and applies its cameras (as SIGHUP does).
async fn reload(State(state): State<AppState>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    change_cameras(service, Control::Reload).await
}

#[derive(Debug, Deserialize)]
struct AlertQuery {
    grid: Option<String>,
    hazard: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    limit: Option<usize>,
}

async fn alerts(State(state): State<AppState>, Query(q): Query<AlertQuery>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    let since = match q.since.as_deref().map(humantime::parse_rfc3339_weak) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("since: {e}; write e.g. 2026-11-24T08:00:00Z\n"),
            )
                .into_response();
        }
    };
    let filter = AlertFilter {
        grid: q.grid,
        hazard: q.hazard,
        since,
        limit: q.limit,
    };
    json(&service.alerts.recent(&filter))
}

#[derive(Debug, Default, Deserialize)]
struct ReportQuery {
    level: Option<String>,
    since: Option<String>,
}

/// Online and usable rates per camera, grid, village, town or county over a window:
/// `?level=town&since=24h` (the defaults: `grid`, `24h`; to the hour).
async fn health_report(State(state): State<AppState>, Query(q): Query<ReportQuery>) -> Response {
    let Some(reports) = state.api.as_ref().and_then(|s| s.health_reports.clone()) else {
        return no_service();
    };
    let level = q.level.as_deref().unwrap_or("grid");
    let window = match q.since.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(24 * 3600),
        Some(Ok(d)) if d <= Duration::from_secs(crate::health_history::KEEP_HOURS * 3600) => d,
        Some(Ok(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                "since: the history keeps 32 days; ask for at most 768h\n",
            )
                .into_response();
        }
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("since: {e}; write e.g. 24h, 7d or 30d\n"),
            )
                .into_response();
        }
    };
    let since = SystemTime::now() - window;
    let tallies = match reports.history.lock().await.read(since).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("health report: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the health history cannot be read now; see the log\n",
            )
                .into_response();
        }
    };
    match crate::health_history::report(&reports.config, &tallies, level) {
        Some(rows) => json(&serde_json::json!({
            "level": level,
            "since": humantime::format_rfc3339_seconds(since).to_string(),
            "until": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "rows": rows,
        })),
        None => (
            StatusCode::BAD_REQUEST,
            "level: one of camera, grid, village, town, county\n",
        )
            .into_response(),
    }
}

/// The body of a request on alert `id`: JSON of `shape`, or the default for an empty body.
/// An id that is not an alert id is refused first. The error is the 400's text.
fn alert_request<T: serde::de::DeserializeOwned + Default>(
    id: &str,
    body: &[u8],
    shape: &str,
) -> Result<T, String> {
    if !sharpeyes_alerts::is_alert_id(id) {
        return Err(format!("`{id}` is not an alert id (a 26-character ULID)\n"));
    }
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not {shape}: {e}\n"))
}

async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    const SHAPE: &str = r#"{"by": "name", "verdict": "confirmed" | "false-alarm" | "handled", "note": "..."} (each optional)"#;
    let body: AckRequest = match alert_request(&id, &body, SHAPE) {
        Ok(b) => b,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    match service.alerts.acknowledge(&id, body, None).await {
        Ok(Some(ack)) => json(&ack),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no alert {id}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    by: Option<String>,
}

/// Mutes the region of a false alarm's boxes on its camera for its hazard: 201 with the
/// mute, 200 with the one it has when muted before.
async fn mute(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    use sharpeyes_alerts::MuteRefused;
    let Some(service) = &state.api else {
        return no_service();
    };
    let request: MuteRequest = match alert_request(&id, &body, r#"{"by": "name"} (optional)"#) {
        Ok(b) => b,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    match service.alerts.mute(&id, request.by).await {
        Ok(muted) if muted.created => (StatusCode::CREATED, json(&muted.mute)).into_response(),
        Ok(muted) => json(&muted.mute),
        Err(e @ MuteRefused::UnknownAlert(_)) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Err(e @ MuteRefused::Conflict(_)) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e @ MuteRefused::Store(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
    }
}

/// Every muted region.
async fn mutes(State(state): State<AppState>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    match service.alerts.mutes().await {
        Ok(list) => json(&list),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn unmute(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    match service.alerts.unmute(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "no muted region of that id\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Server-sent events: `alert` and `ack`, each a JSON object.
async fn events(State(state): State<AppState>) -> Response {
    let Some(service) = &state.api else {
        return no_service();
    };
    let feed = service.alerts.feed();
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let sse = match feed.recv().await {
            Ok(event) => {
                let name = match &event {
                    sharpeyes_alerts::FeedEvent::Alert(_) => "alert",
                    sharpeyes_alerts::FeedEvent::Ack(_) => "ack",
                    sharpeyes_alerts::FeedEvent::Dispatched { .. } => "dispatched",
                };
                let data = serde_json::to_string(&event).unwrap_or_default();
                Event::default().event(name).data(data)
            }
            // A slow page missed some: it reloads the list on `lagged`.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("lagged").data("{}")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(sse), feed))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
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
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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
            let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            serve(
                listener,
                AppState::store_only(store.clone()),
                shutdown,
                None,
            );
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
