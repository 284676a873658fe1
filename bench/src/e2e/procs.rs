//! The processes of one step: a real mosquitto, the real service, and what the harness reads
//! of them (`/proc` CPU and memory, `/metrics` over HTTP).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (nothing else is ever bound).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// Waits (at most `limit`) until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{what} did not listen on 127.0.0.1:{port} within {limit:?}"
    ))
}

/// A child process, killed and reaped when dropped.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto on a free loopback port, with its files in `dir`.
pub fn start_broker(dir: &Path) -> Result<(Process, u16), String> {
    let port = free_port()?;
    // Started as root, mosquitto drops to its own user: it must be able to write here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest file {}/mosquitto.log\nmax_queued_messages 100000\n",
            dir.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("mosquitto does not start ({e}); `make setup` installs it"))?;
    let broker = Process { child };
    wait_for_port(port, "mosquitto", Duration::from_secs(10))?;
    Ok((broker, port))
}

/// `sharpeyes run --config CONFIG`, logging warnings to `log`.
pub fn start_service(binary: &Path, config: &Path, log: &Path) -> Result<Process, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("SHARPEYES_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| {
            format!(
                "{} does not start ({e}); build it with `cargo build --release`",
                binary.display()
            )
        })?;
    Ok(Process { child })
}

/// User + system CPU seconds a process (a pid, or `self`) has used, all its threads; `None`
/// once it is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    // After the command name: utime and stime are fields 14 and 15 (1-based), in ticks of
    // 1/100 s on Linux.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident and peak resident memory of a process, in MiB.
pub fn memory_mib(pid: &str) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// A plain HTTP/1.1 GET on loopback: status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let fail = |e: std::io::Error| format!("GET 127.0.0.1:{port}{path}: {e}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no HTTP response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in `{head}`"))?;
    Ok((status, body.to_owned()))
}
