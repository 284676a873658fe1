//! `sharpeyes run` as a process under test: started on a configuration whose `[http]
//! listen` may take port 0, found through its `--ready-file`, stopped however the test ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::servers::signal;

/// How long a service may take to start: models load, the broker connects.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The running service; killed when dropped.
pub struct Service {
    child: Child,
    /// Where its API listens.
    pub http: SocketAddr,
    log: Option<JoinHandle<String>>,
}

impl Service {
    /// `bin run --config config --ready-file ...` from `dir` with logs at `log_level`
    /// (`SHARPEYES_LOG`), kept for [`Service::stop`]; returns once it is listening.
    pub fn start(
        bin: impl AsRef<Path>,
        config: &Path,
        dir: impl AsRef<Path>,
        log_level: &str,
    ) -> Service {
        Self::start_with(bin, config, dir, log_level, &[])
    }

    /// [`Service::start`] with more arguments to `run` (`--node-id ID`, ...).
    pub fn start_with(
        bin: impl AsRef<Path>,
        config: &Path,
        dir: impl AsRef<Path>,
        log_level: &str,
        args: &[&str],
    ) -> Service {
        let ready = ready_path(config);
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(bin.as_ref())
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .env_remove("SHARPEYES_NODE_ID")
            .current_dir(dir.as_ref())
            .env("SHARPEYES_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sharpeyes binary runs");
        let stderr = child.stderr.take().expect("piped");
        let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(http) = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["http"].as_str()?.parse().ok())
            {
                return Service {
                    child,
                    http,
                    log: Some(log),
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = log.join().unwrap_or_default();
                panic!("sharpeyes run exited ({status}) before it was ready:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let log = log.join().unwrap_or_default();
                panic!("sharpeyes run was not ready within {START_LIMIT:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes `config` to `dir/service.toml` and starts `bin` on it from `dir`.
    pub fn run(bin: impl AsRef<Path>, dir: &Path, config: &str, log_level: &str) -> Service {
        let path = dir.join("service.toml");
        std::fs::write(&path, config).expect("the configuration is written");
        Service::start(bin, &path, dir, log_level)
    }

    pub fn port(&self) -> u16 {
        self.http.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (`HUP`, `TERM`...).
    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// SIGTERM, as systemd stops it; waits up to `limit`. Returns how it exited (`None`: it
    /// did not, and was killed) and everything it logged.
    pub fn stop(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        self.signal("TERM");
        let deadline = Instant::now() + limit;
        let mut exit = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                exit = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let log = self
            .log
            .take()
            .and_then(|l| l.join().ok())
            .unwrap_or_default();
        (exit, log)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready_path(config: &Path) -> PathBuf {
    config.with_extension("ready.json")
}
