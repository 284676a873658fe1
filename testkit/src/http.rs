//! Plain HTTP/1.1 over a real socket to a server on loopback: the status code and the body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path`.
pub fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    request(port, "GET", path, &[], "")
}

/// `GET path` with a bearer token.
pub fn get_as(port: u16, path: &str, token: &str) -> (u16, Vec<u8>) {
    request(port, "GET", path, &bearer(Some(token)), "")
}

/// `POST path` with `body`, and a bearer token when given.
pub fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, Vec<u8>) {
    request(port, "POST", path, &bearer(token), body)
}

/// `DELETE path`, with a bearer token when given.
pub fn delete(port: u16, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    request(port, "DELETE", path, &bearer(token), "")
}

fn bearer(token: Option<&str>) -> Vec<(&'static str, String)> {
    token
        .map(|t| vec![("Authorization", format!("Bearer {t}"))])
        .unwrap_or_default()
}

/// Any request, with extra `headers`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the server listens");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(
        s,
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request is sent");
    response(s)
}

/// Reads a response: by its Content-Length when the server keeps the connection open (as
/// Chromium's DevTools server does), else to the end.
fn response(mut s: TcpStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let (split, length) = loop {
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "the connection closed before the headers ended");
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (split, length);
        }
    };
    match length {
        Some(len) => {
            while raw.len() < split + 4 + len {
                let n = s.read(&mut buf).expect("the body");
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            let _ = s.read_to_end(&mut raw);
        }
    }
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    (status, raw[split + 4..].to_vec())
}
