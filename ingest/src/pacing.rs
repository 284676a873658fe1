//! Fewer, larger socket reads for RTSP over TCP: a receive low-water mark (`SO_RCVLOWAT`)
//! on each camera connection, sized to what the camera sends in [`coalesce_reads`]' window.
//!
//! Why: a camera's 4 Mbit/s arrive as about 360 RTP packets a second, and where the link
//! does no receive offload (loopback, many virtual NICs) each packet wakes the reader; the
//! scheduler and epoll were about 40% of retina's receive CPU (README, "Receiving"). With
//! the mark at about 20 ms of the camera's bytes the kernel wakes the reader once that much
//! waits, and retina alone used 0.60x the CPU at 4 Mbit/s. The price is latency: the tail of
//! a frame can wait for the next frame's first bytes, one frame interval at most while the
//! camera keeps sending.
//!
//! retina owns its sockets and does not hand them out, so one task per process finds them:
//! every [`SCAN`], the TCP sockets of this process whose peer is a registered camera
//! endpoint, each given a mark from its own receive rate over the last two scans (the
//! kernel's `tcpi_bytes_received`, which our reads do not move). A socket that receives
//! little (an RTSP handshake, a camera that stalled) gets 1, the default, at the next
//! scan, and lowering the mark wakes a reader whose bytes now reach it. Other sockets
//! (the broker, Redis, API callers) are never touched.

// FFI to the socket options: every call lives in this file.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::raw::c_int;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use url::Url;

/// How often the sockets are looked at: the longest a mark is too high after a camera's
/// rate falls.
pub(crate) const SCAN: Duration = Duration::from_millis(500);
/// The highest mark set: 20 ms of a 13 Mbit/s camera, far under any receive buffer.
const MAX_MARK: u64 = 32 * 1024;
/// The window until [`coalesce_reads`] sets another (`[ingest] receive_coalesce`'s default).
const DEFAULT_WINDOW: Duration = Duration::from_millis(20);

struct Registry {
    /// Camera endpoints and how many camera connections point at each.
    endpoints: BTreeMap<SocketAddr, usize>,
    window: Duration,
    scanning: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    endpoints: BTreeMap::new(),
    window: DEFAULT_WINDOW,
    scanning: false,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets how long a camera's bytes may wait in its socket to be read together (`[ingest]
/// receive_coalesce`); zero reads every packet as it comes. Applies from the next scan.
pub fn coalesce_reads(window: Duration) {
    registry().window = window;
}

/// A camera connection's endpoint, paced while this lives.
pub(crate) struct Registration(Vec<SocketAddr>);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = registry();
        for addr in &self.0 {
            if let Some(n) = registry.endpoints.get_mut(addr) {
                *n -= 1;
                if *n == 0 {
                    registry.endpoints.remove(addr);
                }
            }
        }
    }
}

/// Paces the TCP connections to `url`'s host and port (554 by default) while the returned
/// registration lives. A host name is resolved here (bounded by 2 s); one that does not
/// resolve is not paced, which costs CPU, never frames.
pub(crate) async fn register(url: &Url) -> Registration {
    let port = url.port().unwrap_or(554);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(name)) => {
            let lookup = tokio::net::lookup_host((name, port));
            match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                Ok(Ok(found)) => found.collect(),
                _ => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let start = {
        let mut registry = registry();
        for addr in &addrs {
            *registry.endpoints.entry(*addr).or_default() += 1;
        }
        let start = !registry.scanning && !addrs.is_empty();
        registry.scanning |= start;
        start
    };
    // Outside the lock: the guard's drop takes it, and a runtime that is shutting down
    // drops what it is given at once.
    if start {
        tokio::spawn(scan_while_registered(Scanning));
    }
    Registration(addrs)
}

/// The mark for a socket receiving `bytes_per_second`: what arrives in `window`, between 1
/// (every byte wakes the reader; also for a zero window) and [`MAX_MARK`].
fn mark(bytes_per_second: f64, window: Duration) -> c_int {
    let bytes = (bytes_per_second * window.as_secs_f64()).clamp(1.0, MAX_MARK as f64);
    bytes as c_int
}

/// What the last scans saw of one socket.
struct Seen {
    inode: u64,
    bytes: u64,
    at: Instant,
    /// The rate over the scan before this one: a mark follows the lower of two, so one
    /// keyframe's burst does not raise it.
    rate: f64,
    mark: c_int,
}

/// Clears `scanning` however the scanner ends, its runtime's shutdown included (even before
/// its first poll: the guard is moved into the task), so that the next registration starts
/// another.
struct Scanning;

impl Drop for Scanning {
    fn drop(&mut self) {
        registry().scanning = false;
    }
}

async fn scan_while_registered(_scanning: Scanning) {
    let mut seen: HashMap<c_int, Seen> = HashMap::new();
    loop {
        tokio::time::sleep(SCAN).await;
        let (endpoints, window) = {
            let registry = registry();
            if registry.endpoints.is_empty() {
                return;
            }
            (
                registry.endpoints.keys().copied().collect::<Vec<_>>(),
                registry.window,
            )
        };
        // A few syscalls per socket of this process, every half second.
        scan(&endpoints, window, &mut seen);
    }
}

/// One look at this process's sockets: marks set on those connected to `endpoints`.
fn scan(endpoints: &[SocketAddr], window: Duration, seen: &mut HashMap<c_int, Seen>) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let now = Instant::now();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<c_int>().ok())
        else {
            continue;
        };
        let Some(inode) = std::fs::read_link(entry.path()).ok().and_then(|t| {
            let t = t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            t.parse::<u64>().ok()
        }) else {
            continue;
        };
        if !peer_of(fd).is_some_and(|p| endpoints.contains(&p)) {
            continue;
        }
        let Some(bytes) = bytes_received(fd) else {
            continue;
        };
        let previous = seen.get(&fd).filter(|s| s.inode == inode);
        let (rate, earlier, old_mark) = match previous {
            Some(s) => {
                let secs = now.duration_since(s.at).as_secs_f64().max(1e-3);
                (bytes.saturating_sub(s.bytes) as f64 / secs, s.rate, s.mark)
            }
            // First sight: no rate yet; the kernel's default stands.
            None => (0.0, 0.0, 1),
        };
        let wanted = mark(rate.min(earlier), window);
        // Small changes are not worth a syscall; falling to 1 always is.
        let differs = (wanted - old_mark).abs() > old_mark / 4 || (wanted == 1) != (old_mark == 1);
        let set = if differs && set_mark(fd, wanted) {
            wanted
        } else {
            old_mark
        };
        seen.insert(
            fd,
            Seen {
                inode,
                bytes,
                at: now,
                rate,
                mark: set,
            },
        );
    }
    // Sockets not seen in this scan are closed (or no longer a camera's).
    seen.retain(|_, s| s.at == now);
}

/// The peer of `fd` if it is a connected TCP socket.
fn peer_of(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: `getsockopt` and `getpeername` write at most the lengths given into the
    // zeroed values they are given; an fd that closed since the listing fails with EBADF.
    unsafe {
        let mut kind: c_int = 0;
        let mut len = size_of::<c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut kind).cast(),
            &mut len,
        );
        if rc != 0 || kind != libc::SOCK_STREAM {
            return None;
        }
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return None;
        }
        match c_int::from(addr.ss_family) {
            libc::AF_INET => {
                let a: libc::sockaddr_in = *(&raw const addr).cast();
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                let a: libc::sockaddr_in6 = *(&raw const addr).cast();
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                // A v4 camera reached over a dual-stack socket shows as ::ffff:a.b.c.d.
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }
}

/// Bytes the kernel has received on TCP socket `fd`, read by us or not.
fn bytes_received(fd: c_int) -> Option<u64> {
    // SAFETY: the kernel writes at most `len` bytes of its `tcp_info` into the zeroed
    // struct; an older kernel writes fewer, leaving the field 0.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        (rc == 0).then_some(info.tcpi_bytes_received)
    }
}

fn set_mark(fd: c_int, mark: c_int) -> bool {
    // SAFETY: an int option read from the pointer and length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const mark).cast(),
            size_of::<c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The mark on `fd` now, for tests.
#[cfg(test)]
fn mark_of(fd: c_int) -> c_int {
    let mut mark: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: as `set_mark`, reading.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw mut mark).cast(),
            &mut len,
        );
    }
    mark
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn the_mark_is_the_window_of_the_rate_within_bounds() {
        let window = Duration::from_millis(20);
        assert_eq!(mark(500_000.0, window), 10_000); // 4 Mbit/s
        assert_eq!(mark(0.0, window), 1);
        assert_eq!(mark(10.0, window), 1);
        assert_eq!(mark(1e9, window), MAX_MARK as c_int);
        assert_eq!(mark(500_000.0, Duration::ZERO), 1);
    }

    /// The tests share the process-wide registry: one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A runtime that ends before its scanner ran once (a test's, or the service's at a
    /// shutdown) must not leave the next registration without one.
    #[test]
    fn a_scanner_dropped_before_it_ran_is_started_again() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let url = Url::parse("rtsp://127.0.0.1:9/cam").unwrap();
        let quick = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let registered = quick.block_on(register(&url));
        drop(quick); // the scanner, spawned but never polled, goes with it
        drop(registered);
        assert!(!registry().scanning, "no scanner runs, and none is said to");
    }

    /// A sender at about 1 MB/s, then a trickle: the reader's socket gets a mark near 20 ms
    /// of the fast rate, falls under a trickle's write within a scan, and the trickle's
    /// bytes keep arriving; a socket to an endpoint nobody registered keeps 1 throughout.
    #[test]
    fn a_fast_camera_socket_is_marked_and_unmarked_when_it_slows() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        runtime().block_on(fast_then_trickle());
    }

    async fn fast_then_trickle() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let url = Url::parse(&format!("rtsp://127.0.0.1:{}/cam", addr.port())).unwrap();
        let _registered = register(&url).await;
        let mut paced = tokio::net::TcpStream::connect(addr).await.unwrap();
        let unpaced = tokio::net::TcpStream::connect(other.local_addr().unwrap())
            .await
            .unwrap();
        let (mut camera, _) = listener.accept().unwrap();
        let (mut other_camera, _) = other.accept().unwrap();
        let fast_until = Instant::now() + SCAN * 4;
        let trickle_until = fast_until + SCAN * 5;
        let sender = std::thread::spawn(move || {
            let chunk = [7u8; 10_000];
            while Instant::now() < fast_until {
                camera.write_all(&chunk).unwrap();
                other_camera.write_all(&chunk).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            while Instant::now() < trickle_until {
                camera.write_all(&[1u8; 100]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut marks = Vec::new();
            let mut last_read = Instant::now();
            let mut longest_gap_late = Duration::ZERO;
            loop {
                match tokio::time::timeout(Duration::from_secs(5), paced.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
                if Instant::now() > fast_until + SCAN * 3 {
                    longest_gap_late = longest_gap_late.max(last_read.elapsed());
                }
                last_read = Instant::now();
                marks.push((Instant::now(), mark_of(paced.as_raw_fd())));
            }
            (marks, longest_gap_late, mark_of(unpaced.as_raw_fd()))
        });
        tokio::task::spawn_blocking(move || sender.join().unwrap())
            .await
            .unwrap();
        let (marks, gap, unpaced_mark) = reader.await.unwrap();
        let fast_marks: Vec<c_int> = marks
            .iter()
            .filter(|(at, _)| *at < fast_until)
            .map(|(_, m)| *m)
            .collect();
        let peak = fast_marks.iter().copied().max().unwrap_or(0);
        assert!(
            (5_000..=MAX_MARK as c_int).contains(&peak),
            "at ~1 MB/s the mark should be near 20 ms of it, was at most {peak}"
        );
        let late = marks
            .iter()
            .filter(|(at, _)| *at > fast_until + SCAN * 3)
            .map(|(_, m)| *m)
            .max();
        assert!(
            late.is_some_and(|m| m < 100),
            "a trickle's mark must fall under one of its 100-byte writes: {late:?}"
        );
        assert!(
            gap < Duration::from_millis(400),
            "the trickle's bytes must keep coming; a read waited {gap:?}"
        );
        assert_eq!(
            unpaced_mark, 1,
            "a socket to another endpoint is never marked"
        );
    }
}
