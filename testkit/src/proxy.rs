//! A loopback TCP proxy to put between the service and a server, to break the link the way
//! networks break: refuse new connections, blackhole (hold every byte both ways, the
//! connection stays open), delay every chunk, or cut the connections it carries.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the proxy treats traffic from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Close new connections at once, as a host with nothing listening would.
    Refuse,
    /// Hold every byte in both directions; connections stay open and silent.
    Blackhole,
}

/// See the module docs.
pub struct FaultProxy {
    pub port: u16,
    fault: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    accepted: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` on loopback.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (f, d, c) = (fault.clone(), delay_ms.clone(), connections.clone());
        let counted = accepted.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if f.load(Ordering::SeqCst) == Fault::Refuse as u8 {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = pump(cr, sw, f.clone(), d.clone());
                let down = pump(sr, cw, f.clone(), d.clone());
                // Each way runs until its sender closes and what it sent is delivered, as TCP
                // does: a peer that writes and closes at once is still heard.
                let task = tokio::spawn(async move {
                    tokio::join!(up, down);
                });
                let mut tasks = c.lock().expect("not poisoned");
                tasks.retain(|t| !t.is_finished());
                tasks.push(task);
            }
        });
        Self {
            port,
            fault,
            delay_ms,
            accepted,
            connections,
            accept,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Holds each chunk this long before passing it on (0: no delay).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Closes every connection through the proxy; new ones are accepted as [`Fault`] says.
    pub fn cut(&self) {
        for task in self.connections.lock().expect("not poisoned").drain(..) {
            task.abort();
        }
    }

    /// Connections forwarded since the start (refused ones are not counted).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        let mut tasks = self.connections.lock().expect("not poisoned");
        tasks.retain(|t| !t.is_finished());
        tasks.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Copies `from` to `to`, holding bytes while blackholed and delaying them as asked.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    fault: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        while fault.load(Ordering::SeqCst) == Fault::Blackhole as u8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An echo server on loopback; returns its port.
    async fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    async fn round_trip(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(limit, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf.to_vec())
    }

    #[tokio::test]
    async fn each_fault_breaks_the_link_its_own_way() {
        let proxy = FaultProxy::start(echo().await).await;
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        assert_eq!(
            round_trip(&mut s, Duration::from_secs(5)).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxy.set(Fault::Blackhole);
        assert_eq!(
            round_trip(&mut s, Duration::from_millis(300)).await,
            None,
            "held"
        );
        proxy.set(Fault::None);
        let mut rest = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut rest))
            .await
            .expect("released once the blackhole ends")
            .unwrap();

        proxy.delay(Duration::from_millis(200));
        let started = Instant::now();
        assert!(round_trip(&mut s, Duration::from_secs(5)).await.is_some());
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "both ways delayed"
        );
        proxy.delay(Duration::ZERO);

        proxy.cut();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "cut: {read:?}");

        proxy.set(Fault::Refuse);
        let mut t = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "refused: {read:?}");
        proxy.set(Fault::None);
        let mut u = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        assert!(round_trip(&mut u, Duration::from_secs(5)).await.is_some());
        assert_eq!(proxy.open_connections(), 1);
    }
}
