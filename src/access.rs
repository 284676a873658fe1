//! Who may call the HTTP API, and from where.
//!
//! - **Tokens and roles.** Once any token is configured (`[http] token`, which has every role,
//!   or `[[http.tokens]]` with one role each), every `/api/*` route needs
//!   `Authorization: Bearer <token>` of a role that may: `viewer` reads alerts, snapshots,
//!   the live feed and cameras; `operator` also acknowledges and judges alerts, mutes
//!   and unmutes the regions of false alarms, and accepts a re-aimed camera's new view;
//!   `admin` also changes cameras
//!   and reloads. Tokens are compared in constant time and never logged. `/healthz` and
//!   `/readyz` are open, `/metrics` too unless `[http] open_metrics = false`; the page itself
//!   is open (it holds no data) and asks for a token. Without any token, the configuration
//!   only allows a loopback listen address.
//! - **Hosts.** A request must name a host this API answers to: loopback names, the listen
//!   address, `public_url`'s host, `[http] allowed_hosts`. A page on another name that
//!   resolves here (DNS rebinding) is refused. Health and metrics skip this check, for
//!   probes that address the pod by IP.
//! - **Origins.** A request that changes something, sent by a browser page of another origin
//!   (which needs no preflight for a `text/plain` body), is refused.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sharpeyes_config::schema::{Http, Role};
use subtle::ConstantTimeEq;

/// See the module docs.
pub struct Access {
    /// Expanded tokens with their roles; empty: the API is open (loopback only).
    tokens: Vec<(Vec<u8>, Role)>,
    /// Host names (lower case, without port) the API answers to.
    hosts: HashSet<String>,
    open_metrics: bool,
}

impl Access {
    /// From `[http]`, with the address the listener actually bound.
    pub fn from_config(http: &Http, bound: SocketAddr) -> Result<Access, String> {
        let mut tokens = Vec::new();
        for (token, role) in http.all_tokens() {
            let t = token
                .expand()
                .map_err(|e| format!("[http] token ({}): {e}", role.as_str()))?;
            tokens.push((t.into_bytes(), role));
        }
        let mut hosts = loopback_names();
        if !bound.ip().is_unspecified() {
            hosts.insert(bare_host(&bound.ip().to_string()));
        }
        if let Some(host) = http
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(bare_host))
        {
            hosts.insert(host);
        }
        hosts.extend(http.allowed_hosts.iter().map(|h| bare_host(h)));
        Ok(Access {
            tokens,
            hosts,
            open_metrics: http.open_metrics,
        })
    }

    /// No tokens, loopback names only: what a bare snapshot server needs.
    pub fn loopback() -> Access {
        Access {
            tokens: Vec::new(),
            hosts: loopback_names(),
            open_metrics: true,
        }
    }

    /// The role the request's bearer token has; `None` when it has none or a wrong one.
    fn role_of(&self, headers: &HeaderMap) -> Option<Role> {
        let given = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .as_bytes();
        // Every token is compared, so the time taken does not say which one matched.
        let mut found = None;
        for (token, role) in &self.tokens {
            if bool::from(token.as_slice().ct_eq(given)) {
                found = Some(*role);
            }
        }
        found
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.contains(&bare_host(host))
    }
}

fn loopback_names() -> HashSet<String> {
    ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// `Example.org:8080` -> `example.org`, `[::1]:8080` -> `::1`.
fn bare_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name.to_owned()
        }
        _ => host,
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Role(Role),
}

fn need(method: &Method, path: &str, open_metrics: bool) -> Need {
    match path {
        "/healthz" | "/readyz" => Need::Nothing,
        "/metrics" if open_metrics => Need::Nothing,
        "/metrics" => Need::Role(Role::Viewer),
        p if !p.starts_with("/api/") => Need::Nothing,
        p if p.starts_with("/api/alerts/") && (p.ends_with("/ack") || p.ends_with("/mute")) => {
            Need::Role(Role::Operator)
        }
        p if p.starts_with("/api/mutes/") && *method == Method::DELETE => {
            Need::Role(Role::Operator)
        }
        p if p.starts_with("/api/cameras/") && p.ends_with("/view") && *method == Method::POST => {
            Need::Role(Role::Operator)
        }
        _ if *method == Method::GET || *method == Method::HEAD => Need::Role(Role::Viewer),
        _ => Need::Role(Role::Admin),
    }
}

fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    let mut response = (status, format!("{}\n", why.into())).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The middleware in front of every route; see the module docs.
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let headers = request.headers();
    let need = need(&method, &path, access.open_metrics);
    let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    if !probe {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !access.allows_host(host) {
            return refuse(
                StatusCode::FORBIDDEN,
                "this API does not answer to that host name; add it to [http] allowed_hosts",
            );
        }
    }
    if changes_something(&method) {
        let foreign_origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| {
                url::Url::parse(o)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .is_none_or(|h| !access.allows_host(&h))
            });
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|s| s.as_bytes() == b"cross-site");
        if foreign_origin || cross_site {
            return refuse(
                StatusCode::FORBIDDEN,
                "a page of another origin may not change anything here",
            );
        }
    }
    if let (Need::Role(needed), false) = (need, access.tokens.is_empty()) {
        match access.role_of(headers) {
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "this needs Authorization: Bearer <a token with the {} role or more>",
                        needed.as_str()
                    ),
                );
            }
            Some(role) if role < needed => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "this token's role ({}) may not do this: it needs {}",
                        role.as_str(),
                        needed.as_str()
                    ),
                );
            }
            Some(_) => {}
        }
    }
    let api = path.starts_with("/api/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_case() {
        assert_eq!(bare_host("Example.ORG:8080"), "example.org");
        assert_eq!(bare_host("[::1]:8080"), "::1");
        assert_eq!(bare_host("::1"), "::1");
        assert_eq!(bare_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn each_route_needs_its_role() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(need(&get, "/healthz", false), Need::Nothing);
        assert_eq!(need(&get, "/", false), Need::Nothing);
        assert_eq!(need(&get, "/metrics", true), Need::Nothing);
        assert_eq!(need(&get, "/metrics", false), Need::Role(Role::Viewer));
        assert_eq!(need(&get, "/api/alerts", true), Need::Role(Role::Viewer));
        assert_eq!(need(&get, "/api/events", true), Need::Role(Role::Viewer));
        assert_eq!(
            need(&get, "/api/alerts/X/snapshot", true),
            Need::Role(Role::Viewer)
        );
        assert_eq!(
            need(&post, "/api/alerts/X/ack", true),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            need(&post, "/api/alerts/X/mute", true),
            Need::Role(Role::Operator)
        );
        assert_eq!(need(&get, "/api/mutes", true), Need::Role(Role::Viewer));
        assert_eq!(
            need(&Method::DELETE, "/api/mutes/x", true),
            Need::Role(Role::Operator)
        );
        assert_eq!(need(&post, "/api/mutes/x", true), Need::Role(Role::Admin));
        assert_eq!(need(&post, "/api/cameras", true), Need::Role(Role::Admin));
        assert_eq!(
            need(&post, "/api/cameras/x/view", true),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            need(&Method::DELETE, "/api/cameras/x/view", true),
            Need::Role(Role::Admin)
        );
        assert_eq!(
            need(&Method::DELETE, "/api/cameras/x", true),
            Need::Role(Role::Admin)
        );
        assert_eq!(need(&post, "/api/reload", true), Need::Role(Role::Admin));
    }

    #[test]
    fn a_token_has_its_role_and_a_wrong_one_none() {
        let access = Access {
            tokens: vec![
                (b"viewer-token".to_vec(), Role::Viewer),
                (b"admin-token".to_vec(), Role::Admin),
            ],
            hosts: loopback_names(),
            open_metrics: true,
        };
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(
            access.role_of(&with("Bearer viewer-token")),
            Some(Role::Viewer)
        );
        assert_eq!(
            access.role_of(&with("Bearer admin-token")),
            Some(Role::Admin)
        );
        assert_eq!(access.role_of(&with("Bearer admin-toke")), None);
        assert_eq!(access.role_of(&with("Basic admin-token")), None);
        assert_eq!(access.role_of(&HeaderMap::new()), None);
    }
}
