//! The service as an attacker on the same network finds it: a real `sharpeyes run` with tokens
//! of each role, a real mosquitto, and requests that try to read, silence or turn it.
//!
//! Each case failed before the service checked it: reads without a token, a viewer
//! acknowledging, a page of another origin posting, a page on another host name reading
//! (DNS rebinding), an API caller expanding the service's own secrets into a camera URL,
//! a camera pointed at another service to echo its banner, an acknowledgement of an alert
//! nobody issued, and oversized input.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sharpeyes_testkit::config::{role_token, service};
use sharpeyes_testkit::http::{get, get_as, post, request};
use sharpeyes_testkit::{Mosquitto, Service, Subscriber, wait_for};

const PREFIX: &str = "se-sec";
const VIEWER: &str = "viewer-t0ken";
const OPERATOR: &str = "operator-t0ken";

/// The admin token lives in a file, as operators keep secrets; the viewer's and the
/// operator's are in the configuration.
struct Setup {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    service: Service,
    admin: String,
    secret_file: std::path::PathBuf,
    broker_port: u16,
}

fn start() -> Setup {
    start_with("")
}

/// As [`start`], with `extra` sections at the end of the configuration.
fn start_with(extra: &str) -> Setup {
    let broker = Mosquitto::start(false, &[]);
    let dir = tempfile::tempdir().unwrap();
    let admin = "admin-SECRET-4711".to_owned();
    let secret_file = dir.path().join("api-token");
    std::fs::write(&secret_file, &admin).unwrap();
    let text = service(
        dir.path(),
        "sec-node",
        broker.port,
        PREFIX,
        Some(&format!("${{file:{}}}", secret_file.display())),
    ) + &role_token(VIEWER, "viewer")
        + &role_token(OPERATOR, "operator")
        + extra;
    let service = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &text, "warn");
    Setup {
        broker_port: broker.port,
        _dir: dir,
        _broker: broker,
        service,
        admin,
        secret_file,
    }
}

/// A camera the API may add: no hazards, so it needs no model.
fn camera(id: &str, url: &str) -> String {
    format!(
        "id = \"{id}\"\nname = \"test\"\nkind = \"sharp-eyes\"\nurl = \"{url}\"\ngrid = \"321322-001-003-07\"\nhazards = []\n"
    )
}

/// A listener standing for an attacker's host, for 4 s: its port, its thread, and how much
/// it heard (connections plus bytes).
fn attackers_host() -> (u16, std::thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let h = heard.clone();
    let ear = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < deadline {
            if let Ok((mut c, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let n = c.read(&mut buf).unwrap_or(0);
                h.fetch_add(1 + n, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (port, ear, heard)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_token_and_each_role_may_do_only_its_part() {
    let s = start();
    let port = s.service.port();
    for path in [
        "/api/alerts",
        "/api/cameras",
        "/api/events",
        "/api/alerts/01M84ZY7VXEBGJ9RYRFB7D2AQG/snapshot",
    ] {
        assert_eq!(get(port, path).0, 401, "{path} without a token");
        assert_eq!(
            get_as(port, path, "not-a-token").0,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(get_as(port, "/api/alerts", VIEWER).0, 200);
    assert_eq!(get_as(port, "/api/cameras", OPERATOR).0, 200);
    assert_eq!(get(port, "/healthz").0, 200, "health stays open");
    assert_eq!(get(port, "/metrics").0, 200, "metrics stay open by default");
    let (status, body) = get(port, "/readyz");
    assert!(
        !text(&body).contains("127.0.0.1:") && !text(&body).contains(&s.broker_port.to_string()),
        "readiness names no host: {status} {}",
        text(&body)
    );

    let ack = "/api/alerts/01M84ZY7VXEBGJ9RYRFB7D2AQG/ack";
    assert_eq!(
        post(port, ack, Some(VIEWER), "").0,
        403,
        "a viewer may not acknowledge"
    );
    assert_eq!(
        post(port, ack, Some(OPERATOR), "").0,
        404,
        "an operator may, but no such alert was issued"
    );
    let body = camera("c1", "rtsp://127.0.0.1:9/x");
    assert_eq!(post(port, "/api/cameras", Some(VIEWER), &body).0, 403);
    assert_eq!(post(port, "/api/cameras", Some(OPERATOR), &body).0, 403);
    assert_eq!(post(port, "/api/reload", Some(OPERATOR), "").0, 403);
    let (status, answer) = post(port, "/api/cameras", Some(&s.admin), &body);
    assert_eq!(status, 200, "{}", text(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_and_other_host_names_are_refused() {
    let s = start();
    let port = s.service.port();
    let admin = format!("Bearer {}", s.admin);
    let body = camera("c2", "rtsp://127.0.0.1:9/x");
    // A page the operator visits posts to the API (a text/plain body needs no preflight).
    let cross = request(
        port,
        "POST",
        "/api/cameras",
        &[
            ("Authorization", admin.clone()),
            ("Origin", "http://evil.example".into()),
            ("Content-Type", "text/plain".into()),
        ],
        &body,
    );
    assert_eq!(cross.0, 403, "{}", text(&cross.1));
    let fetch_site = request(
        port,
        "POST",
        "/api/reload",
        &[
            ("Authorization", admin.clone()),
            ("Sec-Fetch-Site", "cross-site".into()),
        ],
        "",
    );
    assert_eq!(fetch_site.0, 403);
    let same = request(
        port,
        "POST",
        "/api/cameras",
        &[
            ("Authorization", admin.clone()),
            ("Origin", format!("http://127.0.0.1:{port}")),
        ],
        &body,
    );
    assert_eq!(same.0, 200, "the page itself may: {}", text(&same.1));
    // DNS rebinding: a name the attacker controls, resolving to this host.
    for path in ["/", "/api/alerts"] {
        let rebound = request(
            port,
            "GET",
            path,
            &[
                ("Host", "rebind.evil.example".into()),
                ("Authorization", format!("Bearer {VIEWER}")),
            ],
            "",
        );
        assert_eq!(rebound.0, 403, "{path}");
    }
    let probe = request(
        port,
        "GET",
        "/healthz",
        &[("Host", "10.1.2.3:8080".into())],
        "",
    );
    assert_eq!(probe.0, 200, "a probe by IP still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_under_a_strict_policy_and_input_is_bounded() {
    let s = start();
    let port = s.service.port();
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        raw,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    raw.read_to_string(&mut head).unwrap();
    let head = head.to_ascii_lowercase();
    for expected in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "frame-ancestors 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(expected), "missing {expected} in:\n{head}");
    }
    assert!(!head.contains("<script>"), "no inline script");
    let admin = Some(s.admin.as_str());
    let huge = format!(
        "{}\n# {}",
        camera("c3", "rtsp://127.0.0.1:9/x"),
        "x".repeat(100 * 1024)
    );
    assert_eq!(post(port, "/api/cameras", admin, &huge).0, 413);
    // An id that would overflow an MQTT topic's 16-bit length is over the body limit...
    let huge_id = camera(&"a".repeat(65_600), "rtsp://127.0.0.1:9/x");
    assert_eq!(post(port, "/api/cameras", admin, &huge_id).0, 413);
    // ...and one over 64 bytes is refused with its field, without echoing it whole.
    let long_id = camera(&"a".repeat(5_000), "rtsp://127.0.0.1:9/x");
    let (status, why) = post(port, "/api/cameras", admin, &long_id);
    assert_eq!(status, 400, "{}", text(&why));
    assert!(text(&why).contains(".id"), "{}", text(&why));
    assert!(text(&why).len() < 2000, "the answer does not echo the id");
}

/// `POST /api/cameras` with the service's own secret in the URL: refused before anything
/// connects, so the attacker's listener hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_caller_cannot_expand_the_services_secrets_into_a_camera_url() {
    let s = start();
    let port = s.service.port();
    let (attacker, ear, heard) = attackers_host();
    for url in [
        format!(
            "rtsp://127.0.0.1:{attacker}/${{file:{}}}",
            s.secret_file.display()
        ),
        format!("rtsp://127.0.0.1:{attacker}/${{HOME}}"),
        format!("rtsp://${{USER}}:x@127.0.0.1:{attacker}/a"),
    ] {
        let (status, why) = post(port, "/api/cameras", Some(&s.admin), &camera("exfil", &url));
        assert_eq!(status, 400, "{url}");
        let why = text(&why);
        assert!(
            why.contains("cameras.url") && why.contains("configuration file only"),
            "{why}"
        );
    }
    ear.join().unwrap();
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "the attacker's host heard nothing"
    );
    let (_, cameras) = get_as(port, "/api/cameras", VIEWER);
    assert_eq!(text(&cameras), "[]");
}

/// The logins of the file reach only the networks the operator bound them to, and cameras
/// added over the API only the networks the operator allows: an admin token cannot point a
/// camera at its holder's own host to receive a login, or at the control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_caller_cannot_send_a_login_of_the_file_to_their_own_host() {
    let s = start_with(
        "\n[credentials.hik]\nuser = \"admin\"\npassword = \"Hik-Secret-99\"\n\n\
         [credentials.site]\nuser = \"admin\"\npassword = \"Site-Secret-77\"\nnetworks = [\"10.20.0.0/16\"]\n\n\
         [ingest]\nallowed_networks = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n",
    );
    let port = s.service.port();
    let (attacker, ear, heard) = attackers_host();
    let at_attacker = format!("rtsp://127.0.0.1:{attacker}/live");
    for (login, why) in [
        // A login with no networks: never for a camera from the API.
        ("hik", "login `hik` lists no networks"),
        // A login bound to 10.20.0.0/16: not to 127.0.0.1.
        ("site", "outside its networks"),
    ] {
        let body = camera("harvest", &at_attacker) + &format!("credentials = \"{login}\"\n");
        let (status, answer) = post(port, "/api/cameras", Some(&s.admin), &body);
        let answer = text(&answer);
        assert_eq!(status, 400, "{login}: {answer}");
        assert!(answer.contains(why), "{login}: {answer}");
        assert!(!answer.contains("Secret-"), "{answer}");
    }
    // Outside [ingest] allowed_networks, or by name: refused before any connection.
    for url in ["rtsp://192.168.1.5/live", "rtsp://localhost/live"] {
        let (status, answer) = post(port, "/api/cameras", Some(&s.admin), &camera("ctl", url));
        assert_eq!(status, 400, "{url}");
        assert!(
            text(&answer).contains("allowed_networks"),
            "{}",
            text(&answer)
        );
    }
    ear.join().unwrap();
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "the caller's host heard nothing"
    );
    let (_, cameras) = get_as(port, "/api/cameras", VIEWER);
    assert_eq!(text(&cameras), "[]");
}

/// A posted camera is one camera: its body cannot open other sections of the configuration
/// (a second camera past the cap, a token, another broker) by writing table headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_camera_cannot_carry_other_sections_of_the_configuration() {
    let s = start();
    let port = s.service.port();
    let one = camera("cam-a", "rtsp://127.0.0.1:9/a");
    for (extra, what) in [
        (
            format!("[[cameras]]\n{}", camera("cam-b", "rtsp://127.0.0.1:9/b")),
            "a second camera",
        ),
        (
            "[[http.tokens]]\ntoken = \"planted-token-0001\"\nrole = \"admin\"\n".to_owned(),
            "a token",
        ),
        (
            "[mqtt]\nurl = \"mqtt://127.0.0.1:9\"\n".to_owned(),
            "a broker",
        ),
    ] {
        let body = format!("{one}{extra}");
        let (status, why) = post(port, "/api/cameras", Some(&s.admin), &body);
        assert_eq!(
            status,
            400,
            "{what} came in with the camera: {}",
            text(&why)
        );
        let why = text(&why);
        assert!(why.contains("cameras"), "the error names where: {why}");
        let (_, cameras) = get_as(port, "/api/cameras", VIEWER);
        assert_eq!(text(&cameras), "[]", "after {what}: {why}");
    }
    // The camera alone is taken.
    let (status, why) = post(port, "/api/cameras", Some(&s.admin), &one);
    assert_eq!(status, 200, "{}", text(&why));
}

/// A camera URL pointed at another service: what that service answers never reaches the API
/// or the retained status topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cameras_peer_cannot_echo_its_bytes_through_the_api_or_the_status_topic() {
    let s = start();
    let port = s.service.port();
    let centre =
        Subscriber::connect(s.broker_port, "sec-centre", &format!("{PREFIX}/#"), None).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let banner_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().take(20).flatten() {
            let mut c = c;
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nServer: BANNER-internal-admin-v1.2\r\nContent-Length: 11\r\n\r\nBANNER-BODY",
            );
        }
    });
    let (status, why) = post(
        port,
        "/api/cameras",
        Some(&s.admin),
        &camera("peer", &format!("rtsp://127.0.0.1:{banner_port}/x")),
    );
    assert_eq!(status, 200, "{}", text(&why));
    let listed = || text(&get_as(port, "/api/cameras", VIEWER).1);
    assert!(
        wait_for(Duration::from_secs(15), || listed()
            .contains("\"reason\":\"")),
        "the camera has a reason: {}",
        listed()
    );
    let got = centre
        .wait_until(Duration::from_secs(5), |m| {
            m.iter()
                .any(|m| m.topic.ends_with("/cameras/peer/status") && !m.json()["reason"].is_null())
        })
        .await;
    assert!(!listed().contains("BANNER"), "{}", listed());
    let statuses: Vec<String> = got
        .iter()
        .filter(|m| m.topic.contains("/cameras/peer/"))
        .map(|m| text(&m.payload))
        .collect();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|p| !p.contains("BANNER")),
        "{statuses:?}"
    );
}

/// Acknowledgements over MQTT for alerts nobody issued change nothing and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_of_an_alert_nobody_issued_is_ignored() {
    let s = start();
    let port = s.service.port();
    let stranger = Subscriber::connect(s.broker_port, "stranger", "nothing/#", None).await;
    let id = "01M84ZY7VXEBGJ9RYRFB7D2AQG";
    stranger
        .publish(
            &format!("{PREFIX}/acks/{id}"),
            format!("{{\"by\": \"{}\"}}", "x".repeat(100_000)).as_bytes(),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Had it been stored, acknowledging again would answer with it (200), not 404.
    assert_eq!(
        post(port, &format!("/api/alerts/{id}/ack"), Some(OPERATOR), "").0,
        404
    );
    let metrics = text(&get(port, "/metrics").1);
    assert!(
        metrics.contains("sharpeyes_alert_time_to_ack_seconds_count 0"),
        "nothing was acknowledged"
    );
}

/// HTTPS on the API itself, for sites without a TLS proxy: the page, the API and the
/// snapshots over TLS on the operator's certificate, and nothing in clear on that port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_on_the_operators_certificate() {
    let broker = Mosquitto::start(false, &[]);
    let dir = tempfile::tempdir().unwrap();
    let certs = sharpeyes_testkit::test_certificates(dir.path());
    let config = service(
        dir.path(),
        "tls-node",
        broker.port,
        PREFIX,
        Some("tls-admin-t0ken"),
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!(
            "listen = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            certs.server_cert.display(),
            certs.server_key.display()
        ),
    );
    let service = Service::run(env!("CARGO_BIN_EXE_sharpeyes"), dir.path(), &config, "warn");
    let port = service.port();

    let trusted = https_client(Some(&certs.ca));
    assert_eq!(
        https_get(&trusted, port, "/readyz", None).await.unwrap(),
        (200, "ready\n".to_owned())
    );
    let (status, body) = https_get(&trusted, port, "/api/cameras", Some("tls-admin-t0ken"))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _) = https_get(&trusted, port, "/api/cameras", None)
        .await
        .unwrap();
    assert_eq!(status, 401, "tokens still needed over TLS");
    // A client that does not trust the certificate gets no answer.
    assert!(
        https_get(&https_client(None), port, "/readyz", None)
            .await
            .is_err()
    );
    // Plain HTTP on the same port: no answer in clear.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!text(&answer).contains("ready"), "{}", text(&answer));
    let (exit, log) = service.stop(Duration::from_secs(20));
    assert!(exit.is_some_and(|e| e.success()), "{log}");
}

/// A TLS client trusting `ca` only (none: trusting nothing).
fn https_client(ca: Option<&std::path::Path>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET path` over TLS to 127.0.0.1:`port`: (status, body), or the TLS error.
async fn https_get(
    client: &tokio_rustls::TlsConnector,
    port: u16,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name =
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let mut tls = tokio::time::timeout(Duration::from_secs(5), client.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)??;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .map_err(std::io::Error::other)??;
    let answer = text(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}
