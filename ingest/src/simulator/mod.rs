//! The RTSP camera simulator behind `sharpeyes simulate`, the demo, the tests and the benches.
//!
//! An RTSP server on 127.0.0.1 serving `/cam1` .. `/camN`. Each scene is encoded once per
//! size, frame rate and GOP into a two-GOP H.264 clip; every camera then loops the shared,
//! pre-encoded access units, re-stamped and paced to real time. So a camera costs RTP
//! payloading, not an x264 encode, and dozens of 1080p25 cameras fit on a small machine.
//!
//! Lifecycle:
//! 1. [`Simulator::start`] checks the config, encodes (or loads from the clip cache) every
//!    scene the scenario needs, binds the port and returns once clients can connect.
//! 2. A camera's stream starts when its first client asks for it; several clients of one
//!    camera share one stream. Scheduled scenes switch at the next keyframe.
//! 3. [`Simulator::stop`] (or drop) disconnects the clients and frees the port.

mod encode;
mod scene;
mod schedule;
mod sensors;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use gstreamer as gst;

pub use scene::SceneKind;
pub use schedule::{ScenarioError, ScheduledScene};
pub use sensors::{ScheduledAlarm, SensorSimulator};

use encode::{Clip, ClipSpec, MAX_BITRATE_KBPS, MIN_BITRATE_KBPS, default_bitrate_kbps};

/// Most cameras one simulator serves; far above what one machine can stream anyway.
pub const MAX_CAMERAS: usize = 1000;
/// More noise than this is not a camera any more.
const MAX_GRAIN: u8 = 32;
/// Highest frame rate accepted, in frames per second.
const MAX_FPS: u32 = 120;
/// Longest GOP accepted, in seconds of video (`gop / fps`).
const MAX_GOP_S: u32 = 20;
/// Frame size limits, in pixels; x264 with 4:2:0 needs even sizes.
const MIN_SIDE: u32 = 16;
const MAX_SIDE: u32 = 4096;

/// Region code, device type and network digits of the ids printed by
/// [`Simulator::config_block`]: 沭阳县 (321322), grass-roots unit 00, industry 00,
/// type 132 (IP camera), network 0. The last six digits are the camera number.
const ID_PREFIX: &str = "32132200001320";
/// Grid the printed cameras go under: the demo's county grid.
const GRID: &str = "321322";

/// What to simulate. `Default` is four 1080p25 cameras with a 2 s GOP on port 8554.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Number of cameras, served as `/cam1` .. `/camN`.
    pub cameras: usize,
    /// Frame size in pixels (even numbers).
    pub width: u32,
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames from one keyframe to the next. Scene switches wait for a keyframe, and
    /// keyframe-sampling clients see one frame per GOP.
    pub gop: u32,
    /// Sensor noise, in grey levels either way (0: a clean picture). Real cameras' delta
    /// frames are mostly noise, and noise is most of what decoding them costs: benchmarks
    /// set this so that full-rate decoding costs what it does on a real camera.
    pub grain: u8,
    /// A car drives along the street in every scene that shows it (`true`, the default):
    /// something always moves. `false`: only sensor noise moves, as on a patrol camera most
    /// of its day, and a scene changes only where the scenario switches it.
    pub traffic: bool,
    /// Encode at constant quality (VBR, as many cameras' main streams are), so that frame
    /// sizes follow what changes in the picture; `false` (the default): a fixed bit rate
    /// (4 Mbit/s at 1080p), where they do not.
    pub constant_quality: bool,
    /// The fixed bit rate in kbit/s, when not `constant_quality`; `None`: 4 Mbit/s at 1080p,
    /// scaled by the pixel count (benches set 8000 for a camera's "high" setting).
    pub bitrate_kbps: Option<u32>,
    /// Encode on one thread, so that every run streams the same bytes (x264's threads make
    /// each encode differ): for tests that compare what models see on decoded pictures.
    pub deterministic: bool,
    /// Give each camera's keyframes their own time, as independent cameras have: a camera's
    /// first GOP is cut short by its own number of frames ([`first_gop_cut`]). `false` (the
    /// default): each camera's first keyframe goes out when it is first asked for, so cameras
    /// connected together send their keyframes together, every GOP, which no street of real
    /// cameras does; the benchmarks set it.
    pub stagger_gops: bool,
    /// TCP port on 127.0.0.1; 0 picks a free one (see [`Simulator::port`]).
    pub port: u16,
    /// Hazard scenes and when each camera shows them.
    pub scenario: Vec<ScheduledScene>,
    /// When set, clients must authenticate (HTTP Digest, as real IP cameras ask) with these.
    pub credentials: Option<Credentials>,
    /// Where encoded clips are kept between runs; `None`: `sharpeyes-sim-clips` in the
    /// system temp dir. A cached clip makes a restart instant (1080p encoding takes seconds).
    pub cache_dir: Option<PathBuf>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            cameras: 4,
            width: 1920,
            height: 1080,
            fps: 25,
            gop: 50,
            port: 8554,
            scenario: Vec::new(),
            credentials: None,
            cache_dir: None,
            grain: 0,
            traffic: true,
            constant_quality: false,
            bitrate_kbps: None,
            deterministic: false,
            stagger_gops: false,
        }
    }
}

/// Frames camera `camera` (from 1) sends of its first GOP before jumping to the next
/// keyframe, with GOPs of `gop` frames: 1..=`gop`, spread by the golden ratio so that any
/// number of cameras covers the GOP about evenly.
pub fn first_gop_cut(camera: usize, gop: u32) -> u32 {
    let phase = (camera as f64 * 0.618_033_988_749_895).fract();
    1 + (phase * f64::from(gop.saturating_sub(1))) as u32
}

impl SimulatorConfig {
    /// Requires clients to log in as `user` / `password` (URL-safe characters only, since
    /// they are printed into `rtsp://user:password@...` URLs).
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    fn clip_spec(&self) -> ClipSpec {
        ClipSpec {
            width: self.width,
            height: self.height,
            fps: self.fps,
            gop: self.gop,
            grain: self.grain,
            traffic: self.traffic,
            constant_quality: self.constant_quality,
            bitrate_kbps: self
                .bitrate_kbps
                .unwrap_or_else(|| default_bitrate_kbps(self.width, self.height)),
            deterministic: self.deterministic,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let bad = |what: String| Err(SimError::Config(what));
        if !(1..=MAX_CAMERAS).contains(&self.cameras) {
            return bad(format!(
                "cameras = {}: must be 1 to {MAX_CAMERAS}",
                self.cameras
            ));
        }
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&v) || v % 2 != 0 {
                return bad(format!(
                    "{name} = {v} px: must be an even number from {MIN_SIDE} to {MAX_SIDE}"
                ));
            }
        }
        if !(1..=MAX_FPS).contains(&self.fps) {
            return bad(format!("fps = {}: must be 1 to {MAX_FPS}", self.fps));
        }
        if self.gop == 0 || self.gop > self.fps * MAX_GOP_S {
            return bad(format!(
                "gop = {} frames: must be 1 to {} ({MAX_GOP_S} s at {} fps)",
                self.gop,
                self.fps * MAX_GOP_S,
                self.fps
            ));
        }
        if let Some(kbps) = self.bitrate_kbps
            && !(MIN_BITRATE_KBPS..=MAX_BITRATE_KBPS).contains(&kbps)
        {
            return bad(format!(
                "bitrate_kbps = {kbps}: must be {MIN_BITRATE_KBPS} to {MAX_BITRATE_KBPS} kbit/s"
            ));
        }
        if self.grain > MAX_GRAIN {
            return bad(format!(
                "grain = {}: must be 0 to {MAX_GRAIN} grey levels",
                self.grain
            ));
        }
        if let Some(s) = self.scenario.iter().find(|s| s.camera > self.cameras) {
            return bad(format!(
                "scenario `{s}`: there is no cam{} with {} cameras; raise the camera count or pick cam1..cam{}",
                s.camera, self.cameras, self.cameras
            ));
        }
        if let Some(c) = &self.credentials {
            let url_safe = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            };
            if c.user.is_empty() || !url_safe(&c.user) || !url_safe(&c.password) {
                return bad("credentials: the user must be non-empty, and user and password may only use letters, digits and - . _ ~".into());
            }
        }
        Ok(())
    }
}

/// A user name and password clients must present.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// When a camera started sending a scene: the time its first frame was handed to the RTP
/// payloader. A harness measures alert latency from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneChange {
    /// Camera number as in its path: 3 is `/cam3`.
    pub camera: usize,
    pub scene: SceneKind,
    /// Wall-clock time, comparable with times in alerts.
    pub at: SystemTime,
    /// The same moment on the monotonic clock, for measuring within this process.
    pub instant: Instant,
}

/// Why the simulator could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// A [`SimulatorConfig`] value is out of range; the message names it and the range.
    Config(String),
    /// GStreamer is missing, or an element the simulator needs is not installed.
    GStreamer(String),
    /// Encoding a scene failed.
    Encode { scene: SceneKind, reason: String },
    /// The RTSP server could not listen (port taken, ...).
    Server { address: String, reason: String },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Config(m) => write!(f, "simulator config: {m}"),
            SimError::GStreamer(m) => write!(f, "simulator: {m}"),
            SimError::Encode { scene, reason } => {
                write!(f, "simulator: cannot encode the {scene} scene: {reason}")
            }
            SimError::Server { address, reason } => {
                write!(f, "simulator: cannot serve RTSP on {address}: {reason}")
            }
        }
    }
}

impl std::error::Error for SimError {}

/// Elements the simulator needs, with the Debian package that has each.
const NEEDED_ELEMENTS: [(&str, &str); 6] = [
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("rtph264pay", "gstreamer1.0-plugins-good"),
];

/// State shared by the server thread and every camera's feeder.
struct Shared {
    started: Instant,
    stopping: AtomicBool,
    scenario: Vec<ScheduledScene>,
    clips: BTreeMap<SceneKind, Arc<Clip>>,
    fps: u32,
    /// With [`SimulatorConfig::stagger_gops`]: the GOP whose first one each camera cuts.
    stagger_gop: Option<u32>,
    log: Mutex<Vec<SceneChange>>,
}

impl Shared {
    /// Records that `camera` now sends `scene`, unless that is what it last sent.
    fn scene_sent(&self, camera: usize, scene: SceneKind) {
        let Ok(mut log) = self.log.lock() else { return };
        let last = log
            .iter()
            .rev()
            .find(|c| c.camera == camera)
            .map(|c| c.scene);
        if last != Some(scene) {
            log.push(SceneChange {
                camera,
                scene,
                at: SystemTime::now(),
                instant: Instant::now(),
            });
        }
    }
}

/// A running simulator. Dropping it stops it.
pub struct Simulator {
    config: SimulatorConfig,
    port: u16,
    shared: Arc<Shared>,
    context: gst::glib::MainContext,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("port", &self.port)
            .field("config", &self.config)
            .finish()
    }
}

impl SimulatorConfig {
    /// The access units (Annex B, with whether each is a keyframe) a camera showing `scene`
    /// sends, from the same cache [`Simulator::start`] uses: for benchmarks of what comes
    /// after the network, such as decoding.
    pub fn access_units(&self, scene: SceneKind) -> Result<Vec<(Vec<u8>, bool)>, SimError> {
        self.validate()?;
        gst::init()
            .map_err(|e| SimError::GStreamer(format!("GStreamer does not initialise: {e}")))?;
        let clip = encode::load_or_encode(scene, self.clip_spec(), Some(&self.clip_cache_dir()))
            .map_err(|reason| SimError::Encode { scene, reason })?;
        Ok(clip
            .aus
            .iter()
            .filter_map(|au| {
                let map = au.buffer.map_readable().ok()?;
                Some((map.to_vec(), au.keyframe))
            })
            .collect())
    }

    fn clip_cache_dir(&self) -> std::path::PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("sharpeyes-sim-clips"))
    }
}

impl Simulator {
    /// Encodes the scenes (or loads them from the cache), starts the RTSP server on its own
    /// thread and returns once it listens. Blocks for the encoding: about a second or more
    /// per 1080p scene the first time, milliseconds with a warm cache.
    pub fn start(config: SimulatorConfig) -> Result<Simulator, SimError> {
        config.validate()?;
        gst::init()
            .map_err(|e| SimError::GStreamer(format!("GStreamer does not initialise: {e}")))?;
        for (element, package) in NEEDED_ELEMENTS {
            if gst::ElementFactory::find(element).is_none() {
                return Err(SimError::GStreamer(format!(
                    "the GStreamer element `{element}` is missing; install {package} (scripts/setup.sh does)"
                )));
            }
        }

        let cache_dir = config.clip_cache_dir();
        let mut scenes: Vec<SceneKind> = config.scenario.iter().map(|s| s.scene).collect();
        scenes.push(SceneKind::Street);
        scenes.sort();
        scenes.dedup();
        let mut clips = BTreeMap::new();
        for scene in scenes {
            let clip = encode::load_or_encode(scene, config.clip_spec(), Some(&cache_dir))
                .map_err(|reason| SimError::Encode { scene, reason })?;
            clips.insert(scene, clip);
        }

        let shared = Arc::new(Shared {
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            scenario: config.scenario.clone(),
            clips,
            fps: config.fps,
            stagger_gop: config.stagger_gops.then_some(config.gop),
            log: Mutex::default(),
        });
        let context = gst::glib::MainContext::new();
        let (port, thread) = server::spawn(&config, Arc::clone(&shared), context.clone())?;
        Ok(Simulator {
            config,
            port,
            shared,
            context,
            thread: Some(thread),
        })
    }

    /// The port the server listens on (the chosen one when the config said 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/camN` for camera number `camera` (1-based, as in the path),
    /// without credentials. A number past the last camera gives a URL the server answers
    /// with 404 Not Found.
    pub fn url(&self, camera: usize) -> String {
        format!("rtsp://127.0.0.1:{}/cam{camera}", self.port)
    }

    /// A `[[cameras]]` TOML block per camera, in the sharpeyes config format, with the
    /// credentials in the URL when the simulator requires them.
    pub fn config_block(&self) -> String {
        let auth = self
            .config
            .credentials
            .as_ref()
            .map(|c| format!("{}:{}@", c.user, c.password))
            .unwrap_or_default();
        let mut out = format!(
            "# {} simulated cameras, {}x{} at {} fps, a keyframe every {} frames\n",
            self.config.cameras,
            self.config.width,
            self.config.height,
            self.config.fps,
            self.config.gop
        );
        for n in 1..=self.config.cameras {
            out.push_str(&format!(
                "\n[[cameras]]\nid = \"{ID_PREFIX}{n:06}\"\nname = \"simulated cam{n}\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://{auth}127.0.0.1:{port}/cam{n}\"\ngrid = \"{GRID}\"\n",
                port = self.port
            ));
        }
        out
    }

    /// Every scene change sent so far, oldest first: one entry when a camera's stream
    /// starts, and one per switch. Cameras nobody watches send nothing and log nothing.
    pub fn scene_log(&self) -> Vec<SceneChange> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Disconnects every client, stops the streams and closes the port.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.context.wakeup();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(port = self.port, "the simulator's server thread panicked");
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_gops_are_cut_to_spread_keyframes_over_the_gop() {
        let cuts: Vec<u32> = (1..=50).map(|c| first_gop_cut(c, 50)).collect();
        assert!(cuts.iter().all(|c| (1..=50).contains(c)), "{cuts:?}");
        // 50 cameras land in at least 40 of the 50 frames of a GOP, none more than thrice.
        let mut per_frame = [0u32; 51];
        for c in &cuts {
            per_frame[*c as usize] += 1;
        }
        let used = per_frame.iter().filter(|n| **n > 0).count();
        assert!(used >= 40, "{used} frames used: {cuts:?}");
        assert!(per_frame.iter().all(|n| *n <= 3), "{cuts:?}");
        assert_eq!(first_gop_cut(7, 1), 1, "a GOP of one frame is never cut");
    }

    #[test]
    fn bad_config_values_are_named_with_their_range() {
        let check = |c: SimulatorConfig, needle: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        check(
            SimulatorConfig {
                cameras: 0,
                ..Default::default()
            },
            "cameras = 0",
        );
        check(
            SimulatorConfig {
                width: 321,
                ..Default::default()
            },
            "width = 321 px",
        );
        check(
            SimulatorConfig {
                fps: 0,
                ..Default::default()
            },
            "fps = 0",
        );
        check(
            SimulatorConfig {
                gop: 0,
                ..Default::default()
            },
            "gop = 0 frames",
        );
        check(
            SimulatorConfig {
                bitrate_kbps: Some(90_000),
                ..Default::default()
            },
            "bitrate_kbps = 90000: must be 200 to 50000 kbit/s",
        );
        check(
            SimulatorConfig {
                scenario: vec!["fire@1s:cam9".parse().unwrap()],
                ..Default::default()
            },
            "no cam9 with 4 cameras",
        );
        check(
            SimulatorConfig::default().with_credentials("a:b", "c"),
            "credentials",
        );
        SimulatorConfig::default()
            .with_credentials("admin", "s3cret.pw")
            .validate()
            .unwrap();
    }

    #[test]
    fn credentials_do_not_show_in_debug_output() {
        let c = SimulatorConfig::default().with_credentials("admin", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
