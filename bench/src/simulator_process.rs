//! The RTSP simulator in a child process (this bench started again), so that the CPU a bench
//! measures in its own process is the client's alone: receiving, depacketising, decoding.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use sharpeyes_ingest::{Simulator, SimulatorConfig};

/// Frames per second of the benches' cameras.
pub const FPS: u32 = 25;
/// Frames from one keyframe to the next (2 s), as Sharp Eyes cameras are set.
pub const GOP: u32 = 50;

/// Set in the child: `cameras` and the bit rate (0: the simulator's default).
const ROLE: &str = "SHARPEYES_BENCH_SIMULATOR";

/// A running simulator child; stopped when dropped.
pub struct SimulatorProcess {
    child: Child,
    /// Its RTSP port on 127.0.0.1; cameras are `/cam1` .. `/camN`.
    pub port: u16,
}

/// Simulated 1080p25 cameras with sensor noise like a real camera's, so that each stream
/// carries its full bit rate and delta frames cost what they do on real cameras.
pub fn noisy_1080p(cameras: usize, bitrate_kbps: Option<u32>) -> SimulatorConfig {
    SimulatorConfig {
        cameras,
        width: 1920,
        height: 1080,
        fps: FPS,
        gop: GOP,
        grain: 6,
        bitrate_kbps,
        port: 0,
        ..SimulatorConfig::default()
    }
}

impl SimulatorProcess {
    /// Starts [`noisy_1080p`] in a child and waits for its port.
    pub fn start(cameras: usize, bitrate_kbps: Option<u32>) -> Self {
        let exe = std::env::current_exe().expect("the bench knows its own path");
        let mut child = Command::new(exe)
            .env(
                ROLE,
                format!("{cameras} {}", bitrate_kbps.unwrap_or_default()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the simulator process starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the simulator prints its port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the simulator's port, not {line:?}"));
        Self { child, port }
    }

    /// Call first in a bench's `main`: in the child, serves until the parent closes stdin
    /// and returns true; in the parent, returns false at once.
    pub fn serve_if_child() -> bool {
        let Ok(role) = std::env::var(ROLE) else {
            return false;
        };
        let mut words = role.split_whitespace().map(|w| w.parse::<u32>().ok());
        let (Some(Some(cameras)), Some(Some(kbps))) = (words.next(), words.next()) else {
            panic!("{ROLE}={role:?}: expected `<cameras> <kbit/s>`");
        };
        let config = noisy_1080p(cameras as usize, (kbps > 0).then_some(kbps));
        let sim = Simulator::start(config).expect("simulator starts");
        #[allow(clippy::print_stdout)] // the parent reads the port from here
        {
            println!("port {}", sim.port());
        }
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        sim.stop();
        true
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
