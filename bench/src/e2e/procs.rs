//! The processes of one step: a real mosquitto, the real service, and what the harness reads
//! of them (`/proc` CPU and memory, `/metrics` over HTTP).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// How long the service may take to listen (models load first).
const START_LIMIT: Duration = Duration::from_secs(60);

/// `sharpeyes run --config CONFIG`, logging warnings to `log`, on `cpus` (a `taskset -c`
/// list) when given; returns it with the port its API took (its `--ready-file` says, once
/// it listens).
pub fn start_service(
    binary: &Path,
    config: &Path,
    log: &Path,
    cpus: Option<&str>,
) -> Result<(Process, u16), String> {
    start_service_as(binary, config, log, &[], cpus)
}

/// Keeps this process (every thread it has and starts) off the CPUs the service runs on:
/// the simulator and the broker then load only the others. Returns the CPUs it kept.
pub fn keep_off(service_cpus: &str) -> Result<String, String> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rest = other_cpus(service_cpus, all)?;
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &rest, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset (util-linux) does not run: {e}"))?;
    if !status.success() {
        return Err(format!("taskset could not move the harness to CPUs {rest}"));
    }
    Ok(rest)
}

/// Of CPUs `0..all`, those not in `service_cpus` (single CPU numbers, `0` or `0,1`), as a
/// `taskset -c` list.
fn other_cpus(service_cpus: &str, all: usize) -> Result<String, String> {
    let taken: Vec<usize> = service_cpus
        .split(',')
        .map(|c| c.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!("--service-cpus {service_cpus}: a list of CPU numbers, as 0 or 0,1")
        })?;
    let rest: Vec<String> = (0..all)
        .filter(|c| !taken.contains(c))
        .map(|c| c.to_string())
        .collect();
    if rest.is_empty() || taken.iter().any(|&c| c >= all) {
        return Err(format!(
            "--service-cpus {service_cpus}: this machine has CPUs 0 to {}; leave at least one to the load generator",
            all.saturating_sub(1)
        ));
    }
    Ok(rest.join(","))
}

/// [`start_service`] with environment variables set (`SHARPEYES_NODE_ID` for a cluster's
/// node).
pub fn start_service_as(
    binary: &Path,
    config: &Path,
    log: &Path,
    env: &[(&str, &str)],
    cpus: Option<&str>,
) -> Result<(Process, u16), String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let ready = config.with_extension("ready.json");
    // A node started again must not read its last run's port.
    let _ = std::fs::remove_file(&ready);
    let mut command = match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.args(["-c", list]).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--ready-file")
        .arg(&ready)
        .env("SHARPEYES_LOG", "warn")
        .envs(env.iter().copied())
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
    let mut service = Process { child };
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let port = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["http"].as_str()?.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port());
        if let Some(port) = port {
            return Ok((service, port));
        }
        if !service.alive() {
            return Err(format!(
                "the service exited before it listened; see {}",
                log.display()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the service did not listen within {START_LIMIT:?}; see {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

#[cfg(test)]
mod tests {
    use super::other_cpus;

    #[test]
    fn the_load_generator_gets_the_cpus_the_service_does_not() {
        assert_eq!(other_cpus("0", 2).unwrap(), "1");
        assert_eq!(other_cpus("1, 3", 4).unwrap(), "0,2");
        let none_left = other_cpus("0,1", 2).unwrap_err();
        assert!(none_left.contains("leave at least one"), "{none_left}");
        let past_the_end = other_cpus("2", 2).unwrap_err();
        assert!(past_the_end.contains("CPUs 0 to 1"), "{past_the_end}");
        let not_numbers = other_cpus("0-1", 4).unwrap_err();
        assert!(
            not_numbers.contains("a list of CPU numbers"),
            "{not_numbers}"
        );
    }
}
