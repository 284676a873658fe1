//! Camera tasks against servers that misbehave: one that answers the RTSP handshake and
//! then sends nothing (a stall), one that answers with garbage, one that refuses. Each must
//! become a reconnect with a reason in our own words (its kind), never a panic, a stuck task
//! or the peer's bytes in the reason.

use std::sync::Arc;
use std::time::Duration;

use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{SourceConfig, spawn};
use sharpeyes_ingest::{CameraState, ErrorKind, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A one-camera H.264 SDP (parameters from x264 at 320x240).
const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=stall\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtkBQfsBEAAAAwAQAAADAyjxYuSA,aMuMsg==\r\na=control:trackID=0\r\n";

fn config(port: u16) -> SourceConfig {
    SourceConfig {
        camera: Arc::from("test-cam"),
        url: url::Url::parse(&format!("rtsp://127.0.0.1:{port}/cam")).unwrap(),
        udp: false,
        sampling: Sampling::Keyframes,
        skip_quiet: None,
        detect_side: 320,
        hardware_decoding: false,
        timeouts: Timeouts {
            connect: Duration::from_secs(3),
            stall: Duration::from_millis(800),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
        },
    }
}

/// Answers OPTIONS, DESCRIBE, SETUP and PLAY like a camera, then stays silent.
async fn silent_camera(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut pending = String::new();
            loop {
                let n = match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = pending.find("\r\n\r\n") {
                    let request: String = pending.drain(..end + 4).collect();
                    let method = request
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let cseq = request
                        .lines()
                        .find_map(|l| l.strip_prefix("CSeq:").map(|v| v.trim().to_owned()))
                        .unwrap_or_default();
                    let (headers, body) = match method.as_str() {
                        "OPTIONS" => ("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n".to_owned(), String::new()),
                        "DESCRIBE" => ("Content-Type: application/sdp\r\nContent-Base: rtsp://127.0.0.1/cam/\r\n".to_owned(), SDP.to_owned()),
                        "SETUP" => ("Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1234ABCD\r\nSession: 42;timeout=60\r\n".to_owned(), String::new()),
                        "PLAY" => ("Session: 42\r\nRTP-Info: url=rtsp://127.0.0.1/cam/trackID=0;seq=1;rtptime=0\r\n".to_owned(), String::new()),
                        _ => ("Session: 42\r\n".to_owned(), String::new()),
                    };
                    let reply = format!(
                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Waits (bounded) until the camera's state satisfies `pred`; returns it.
async fn wait_state(
    rx: &mut watch::Receiver<CameraState>,
    what: &str,
    pred: impl Fn(&CameraState) -> bool,
) -> CameraState {
    let reached = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.expect("camera task alive").clone());
    reached.unwrap_or_else(|_| panic!("camera never reached {what}; last state {:?}", *rx.borrow()))
}

#[tokio::test]
async fn a_stream_that_goes_silent_is_a_stall_and_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(silent_camera(listener));
    let (stop, shutdown) = watch::channel(false);
    let mut cam = spawn(config(port), shutdown);
    let state = wait_state(&mut cam.state, "backoff after a stall", |s| {
        matches!(s, CameraState::Backoff { .. })
    })
    .await;
    let CameraState::Backoff { error, .. } = state else {
        unreachable!()
    };
    assert_eq!(
        error.kind(),
        &ErrorKind::Stall(Duration::from_millis(800)),
        "{error}"
    );
    assert_eq!(error.kind().to_string(), "no frame for 0.8 s (stall)");
    assert_eq!(error.camera(), Some("test-cam"));
    // And it keeps trying: a second stall counts a second reconnect.
    tokio::time::timeout(Duration::from_secs(20), async {
        while cam
            .counters
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            < 2
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a second reconnect");
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), cam.task)
        .await
        .expect("the task stops on shutdown")
        .unwrap();
    assert_eq!(*cam.state.borrow(), CameraState::Stopped);
    server.abort();
}

#[tokio::test]
async fn garbage_on_the_rtsp_port_is_a_reconnect_not_a_crash() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..50 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let garbage: Vec<u8> = (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            // Another service's banner, as a camera URL pointed at the wrong port gets.
            let _ = sock
                .write_all(b"SSH-2.0-OpenSSH_9.2 BANNER-FROM-THE-PEER\r\n")
                .await;
            let _ = sock.write_all(&garbage).await;
            let _ = sock.shutdown().await;
        }
    });
    let (stop, shutdown) = watch::channel(false);
    let mut cam = spawn(config(port), shutdown);
    let state = wait_state(&mut cam.state, "backoff", |s| {
        matches!(s, CameraState::Backoff { .. })
    })
    .await;
    let CameraState::Backoff { error, .. } = state else {
        unreachable!()
    };
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Protocol | ErrorKind::ConnectionLost
        ),
        "{error}"
    );
    // What the peer sent stays in the detail (the debug log), out of the reason that the
    // API and the status topic show.
    assert!(!error.to_string().contains("BANNER"), "{error}");
    assert!(!error.kind().to_string().contains("BANNER"));
    assert!(
        error.detail().is_some_and(|d| d.contains("BANNER")),
        "{:?}",
        error.detail()
    );
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), cam.task)
        .await
        .expect("stops")
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn a_refused_connection_backs_off_and_retries() {
    // Bind then drop: the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stop, shutdown) = watch::channel(false);
    let mut cam = spawn(config(port), shutdown);
    let state = wait_state(&mut cam.state, "backoff", |s| {
        matches!(s, CameraState::Backoff { .. })
    })
    .await;
    let CameraState::Backoff { error, retry_in } = state else {
        unreachable!()
    };
    assert_eq!(error.kind(), &ErrorKind::Refused, "{error}");
    assert_eq!(
        error.to_string(),
        format!("camera test-cam (rtsp://127.0.0.1:{port}/cam): connection refused")
    );
    assert!(
        retry_in >= Duration::from_millis(100) && retry_in <= Duration::from_millis(300),
        "{retry_in:?}"
    );
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), cam.task)
        .await
        .expect("stops")
        .unwrap();
}
