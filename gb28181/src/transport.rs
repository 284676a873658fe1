//! How SIP messages travel to and from the platform: datagrams on one UDP socket, or one
//! TCP connection the device opens (and opens again, with backoff, when it drops), framed
//! by `Content-Length`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sip::MAX_DATAGRAM;

/// UDP or TCP, as `[gb28181] server` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    /// As the Via header writes it.
    pub fn via(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

/// What the transport hands the device's task.
pub(crate) enum Event {
    /// One whole SIP message and where it came from.
    Message(Vec<u8>, SocketAddr),
    /// TCP: connected, from this local address; the device registers again.
    Connected(SocketAddr),
    /// TCP: the connection dropped; it is opened again after a backoff.
    Disconnected,
}

/// See the module docs. Dropped, its tasks stop.
pub(crate) struct Transport {
    protocol: Protocol,
    out: Out,
    tasks: Vec<JoinHandle<()>>,
}

enum Out {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(mpsc::Sender<Vec<u8>>),
}

/// Messages waiting for a TCP connection.
const TCP_BACKLOG: usize = 1024;
/// A head or body larger than this from the platform closes the connection.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Transport {
    /// Starts it: UDP binds `listen` at once (its address is returned); TCP connects from
    /// `listen`'s address in the background and says [`Event::Connected`].
    pub(crate) async fn start(
        protocol: Protocol,
        listen: SocketAddr,
        server: SocketAddr,
    ) -> std::io::Result<(Self, mpsc::Receiver<Event>, Option<SocketAddr>)> {
        let (events, incoming) = mpsc::channel(256);
        match protocol {
            Protocol::Udp => {
                let socket = Arc::new(UdpSocket::bind(listen).await?);
                let local = socket.local_addr()?;
                let reader = tokio::spawn(read_udp(socket.clone(), events));
                Ok((
                    Self {
                        protocol,
                        out: Out::Udp(socket, server),
                        tasks: vec![reader],
                    },
                    incoming,
                    Some(local),
                ))
            }
            Protocol::Tcp => {
                let (out, outgoing) = mpsc::channel(TCP_BACKLOG);
                let task = tokio::spawn(run_tcp(listen, server, outgoing, events));
                Ok((
                    Self {
                        protocol,
                        out: Out::Tcp(out),
                        tasks: vec![task],
                    },
                    incoming,
                    None,
                ))
            }
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sends one message to the platform; a failure is the transaction's to notice.
    pub(crate) async fn send(&self, bytes: &[u8]) {
        match &self.out {
            Out::Udp(socket, server) => {
                if let Err(e) = socket.send_to(bytes, server).await {
                    tracing::debug!("gb28181: send to {server} failed: {e}");
                }
            }
            Out::Tcp(out) => {
                let _ = out.try_send(bytes.to_vec());
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn read_udp(socket: Arc<UdpSocket>, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if events
                    .send(Event::Message(buf[..n].to_vec(), from))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // ICMP port unreachable from a platform that is away shows up here.
                tracing::debug!("gb28181: receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn run_tcp(
    listen: SocketAddr,
    server: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let connected = match socket {
            Ok(socket) => {
                let _ = socket.bind(SocketAddr::new(listen.ip(), 0));
                tokio::time::timeout(Duration::from_secs(10), socket.connect(server)).await
            }
            Err(e) => Ok(Err(e)),
        };
        match connected {
            Ok(Ok(stream)) => {
                backoff = Duration::from_secs(1);
                let local = stream.local_addr().unwrap_or(listen);
                // Whatever waited for a connection belongs to the last one.
                while outgoing.try_recv().is_ok() {}
                if events.send(Event::Connected(local)).await.is_err() {
                    return;
                }
                let why = serve_tcp(stream, server, &mut outgoing, &events).await;
                tracing::warn!(%server, "gb28181: the TCP connection to the platform ended ({why}); connecting again");
                if events.send(Event::Disconnected).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::debug!(%server, "gb28181: TCP connect failed: {e}"),
            Err(_) => tracing::debug!(%server, "gb28181: TCP connect timed out"),
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Carries messages both ways until the connection ends; why it ended.
async fn serve_tcp(
    mut stream: tokio::net::TcpStream,
    server: SocketAddr,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    events: &mpsc::Sender<Event>,
) -> String {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) => return "closed by the platform".into(),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        match take_message(&mut buf) {
                            Ok(Some(message)) => {
                                if events.send(Event::Message(message, server)).await.is_err() {
                                    return "the device stopped".into();
                                }
                            }
                            Ok(None) => break,
                            Err(why) => return why.into(),
                        }
                    }
                }
                Err(e) => return e.to_string(),
            },
            out = outgoing.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = stream.write_all(&bytes).await {
                        return e.to_string();
                    }
                }
                None => return "the device stopped".into(),
            },
        }
    }
}

/// One whole message off the front of `buf`, if it holds one; CRLF keep-alives between
/// messages are skipped. An error for a stream that cannot be SIP.
pub fn take_message(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, &'static str> {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    buf.drain(..start);
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("a message head over 16 KiB")
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let length = head
        .split("\r\n")
        .skip(1)
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                .then(|| value.trim().parse::<usize>())
        })
        .unwrap_or(Ok(0))
        .map_err(|_| "a Content-Length that is not a number")?;
    if length > MAX_DATAGRAM {
        return Err("a body over 64 KiB");
    }
    let end = head_end + 4 + length;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(buf.drain(..end).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_cut_into_messages_by_content_length() {
        let mut buf = b"\r\n\r\nSIP/2.0 200 OK\r\nl: 3\r\n\r\nabcMESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nx".to_vec();
        let first = take_message(&mut buf).unwrap().unwrap();
        assert!(first.ends_with(b"\r\n\r\nabc"));
        assert_eq!(take_message(&mut buf), Ok(None), "the second is incomplete");
        buf.push(b'y');
        assert!(take_message(&mut buf).unwrap().unwrap().ends_with(b"xy"));
        assert!(buf.is_empty());
        let mut hostile = b"SIP/2.0 200 OK\r\nContent-Length: 99999999\r\n\r\n".to_vec();
        assert!(take_message(&mut hostile).is_err());
        let mut endless = vec![b'a'; MAX_HEAD + 1];
        assert!(take_message(&mut endless).is_err());
    }
}
