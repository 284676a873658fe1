//! The configuration file's types, one struct per section. Field docs are the user's manual
//! for the TOML keys; defaults are named functions so they are documented in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::gbt28181::DeviceId;
use crate::secret::{Secret, SecretUrl};

/// `[node]`: this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Names this node in `{prefix}/status/{node}` and in Redis leases.
    #[serde(default = "default_node_id")]
    pub id: String,
    /// Spool, snapshots and other local state when Redis is not configured.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            id: default_node_id(),
            data_dir: default_data_dir(),
        }
    }
}

/// The node id when none is given: fine for one node, refused in a cluster.
pub const DEFAULT_NODE_ID: &str = "sharpeyes-1";

fn default_node_id() -> String {
    DEFAULT_NODE_ID.into()
}

fn default_data_dir() -> PathBuf {
    ".sharpeyes".into()
}

/// `[mqtt]`: the broker alerts go to. Absent: an embedded broker on loopback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `mqtt://host:1883` or `mqtts://host:8883`.
    pub url: SecretUrl,
    #[serde(default)]
    pub username: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// First level of every topic: `{prefix}/alerts/...`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub client_id: Option<String>,
    /// CA bundle for `mqtts://` brokers with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that ask for one (mosquitto
    /// `require_certificate true`); with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_prefix() -> String {
    "sharpeyes".into()
}

/// `[redis]`: shared state and the alert outbox. Absent: in memory plus a disk spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://[:password@]host:6379/0`; the password may be `${VAR}`.
    pub url: SecretUrl,
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// CA bundle for `rediss://` servers with a private CA (absent: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers that ask for one (`tls-auth-clients yes`);
    /// with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Redis {
    /// `url` under `key_prefix`, without TLS files.
    pub fn new(url: SecretUrl, key_prefix: &str) -> Self {
        Self {
            url,
            key_prefix: key_prefix.to_owned(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// `[alerts]`: how alerts carry their snapshots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOptions {
    /// Also put the JPEG into the message, base64, for subscribers that cannot fetch the URL.
    #[serde(default)]
    pub inline_snapshots: bool,
    /// A snapshot is re-encoded smaller until it fits.
    #[serde(default = "default_snapshot_max_bytes")]
    pub snapshot_max_bytes: usize,
    /// How long snapshots are kept for their URL.
    #[serde(default = "default_snapshot_ttl", with = "humantime_serde")]
    pub snapshot_ttl: Duration,
    /// How long alerts operators judged are kept, with their clean frames, for
    /// `sharpeyes export` (learning material: the county's own false alarms).
    #[serde(default = "default_judged_ttl", with = "humantime_serde")]
    pub judged_ttl: Duration,
    /// Alerts that may wait for the broker. Past it, new alerts are refused, the least
    /// severe first: info and minor at the limit, major at 1.25 times it, critical at 1.5
    /// times it; each refusal is logged, counted and shown in `/readyz`.
    #[serde(default = "default_outbox_limit")]
    pub outbox_limit: usize,
}

impl Default for AlertOptions {
    fn default() -> Self {
        Self {
            inline_snapshots: false,
            snapshot_max_bytes: default_snapshot_max_bytes(),
            snapshot_ttl: default_snapshot_ttl(),
            judged_ttl: default_judged_ttl(),
            outbox_limit: default_outbox_limit(),
        }
    }
}

fn default_outbox_limit() -> usize {
    10_000
}

fn default_snapshot_max_bytes() -> usize {
    200 * 1024
}

fn default_judged_ttl() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

fn default_snapshot_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// `[http]`: metrics, API and the operators' page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A bearer token with every role. With any token configured, every `/api/*` call and the
    /// page's data need one.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Bearer tokens with one role each: `[[http.tokens]] token = "${...}", role = "viewer"`.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Host names the API answers to besides loopback, the listen address and `public_url`'s
    /// host: a request naming another host (a DNS-rebinding page) is refused.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// `/metrics` answers without a token (Prometheus on a trusted network). `/healthz` and
    /// `/readyz` always do, and say no more than ready or not and which part.
    #[serde(default = "yes")]
    pub open_metrics: bool,
    /// Base of snapshot URLs in alerts, when the listen address is not what subscribers reach.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The API over TLS (HTTPS) with this certificate chain (PEM), for sites without a
    /// TLS-terminating proxy; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
            tokens: Vec::new(),
            allowed_hosts: Vec::new(),
            open_metrics: true,
            public_url: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl Http {
    /// Whether the API would answer beyond this machine with no token: refused.
    pub fn open_beyond_loopback(&self) -> bool {
        !self.listen.ip().is_loopback() && self.all_tokens().next().is_none()
    }

    /// Every configured token with its role (`token` has every role: admin).
    pub fn all_tokens(&self) -> impl Iterator<Item = (&Secret, Role)> {
        self.token
            .iter()
            .map(|t| (t, Role::Admin))
            .chain(self.tokens.iter().map(|t| (&t.token, t.role)))
    }
}

/// One API token and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub token: Secret,
    pub role: Role,
}

/// What an API caller may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read alerts, snapshots, the live feed and cameras.
    Viewer,
    /// Also acknowledge alerts.
    Operator,
    /// Also add and remove cameras, and reload.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// `[credentials.NAME]`: a camera login defined once in the operator's file, named by cameras
/// (`credentials = "NAME"`), including those added over the API, which may not expand
/// secrets themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub user: Secret,
    pub password: Secret,
    /// The networks this login may be sent to: a camera naming it must have an address in
    /// one of them. Without it, cameras added over the API may not name the login, since a
    /// caller could point one at their own host and receive it.
    #[serde(default)]
    pub networks: Vec<ipnet::IpNet>,
}

/// `[ingest]`: where cameras may be, and how their bytes are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    /// Cameras added over the API must have an address in one of these networks (empty: any),
    /// so that an API caller cannot point a camera at the control plane.
    #[serde(default)]
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// RTSP over TCP: about this much of a camera's stream waits in its socket to be read at
    /// once, instead of a wakeup per packet (README, "Tuning guide"). Costs up to one frame
    /// interval of latency; `0s` reads every packet as it comes.
    #[serde(default = "default_receive_coalesce", with = "humantime_serde")]
    pub receive_coalesce: Duration,
    /// Keyframes decoded at once across the node's cameras, first come, first served
    /// (README, "Tuning guide"); absent: one per core this process may run on; `0`: every
    /// camera's decoder runs whenever it has a keyframe.
    #[serde(default)]
    pub keyframe_decoders: Option<usize>,
}

impl Default for Ingest {
    fn default() -> Self {
        Self {
            allowed_networks: Vec::new(),
            receive_coalesce: default_receive_coalesce(),
            keyframe_decoders: None,
        }
    }
}

fn default_receive_coalesce() -> Duration {
    Duration::from_millis(20)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The levels of grid governance, from the county down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GridLevel {
    County,
    Town,
    Village,
    Grid,
}

impl GridLevel {
    /// The level implied by a dashed id: `321322` county, `321322-001` town, and so on.
    pub fn from_id_shape(id: &str) -> Option<Self> {
        match id.split('-').count() {
            1 => Some(Self::County),
            2 => Some(Self::Town),
            3 => Some(Self::Village),
            4 => Some(Self::Grid),
            _ => None,
        }
    }

    pub fn parent(self) -> Option<Self> {
        match self {
            Self::County => None,
            Self::Town => Some(Self::County),
            Self::Village => Some(Self::Town),
            Self::Grid => Some(Self::Village),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::County => "county",
            Self::Town => "town",
            Self::Village => "village",
            Self::Grid => "grid",
        }
    }
}

/// `[[grids]]`: one node of the county -> town -> village -> grid hierarchy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Dashed ids (`321322-001-003-07`) give level and parent for free.
    pub id: String,
    pub name: String,
    /// The service centre that receives this grid's alerts.
    #[serde(default)]
    pub centre: Option<String>,
    /// Derived from the id when absent.
    #[serde(default)]
    pub parent: Option<String>,
    /// Derived from the id when absent.
    #[serde(default)]
    pub level: Option<GridLevel>,
}

/// Whose camera it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraKind {
    /// Public-security cameras of the Sharp Eyes network.
    SharpEyes,
    /// A shop's, school's or bank's own camera connected to the network.
    SocialUnit,
}

impl CameraKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SharpEyes => "sharp-eyes",
            Self::SocialUnit => "social-unit",
        }
    }
}

/// Which frames are decoded: decoding is the dominant CPU cost, so decode only what analytics
/// will look at. Written `"keyframes"`, `"all"`, or `{ fps = 2 }`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(try_from = "SamplingRepr")]
pub enum Sampling {
    /// Only random-access points (about one a second on most cameras).
    #[default]
    Keyframes,
    /// Enough frames to emit this many per second.
    Fps(f64),
    /// Every frame.
    All,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SamplingRepr {
    Word(String),
    Fps { fps: f64 },
}

impl TryFrom<SamplingRepr> for Sampling {
    type Error = String;

    fn try_from(r: SamplingRepr) -> Result<Self, String> {
        match r {
            SamplingRepr::Word(w) => match w.as_str() {
                "keyframes" => Ok(Self::Keyframes),
                "all" => Ok(Self::All),
                other => Err(format!(
                    "unknown sampling `{other}`, expected \"keyframes\", \"all\" or {{ fps = N }}"
                )),
            },
            SamplingRepr::Fps { fps } if fps > 0.0 && fps <= 120.0 => Ok(Self::Fps(fps)),
            SamplingRepr::Fps { fps } => Err(format!("sampling fps {fps} is not in (0, 120]")),
        }
    }
}

/// How a camera is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// retina RTSP client, frames handed to a GStreamer decoder.
    #[default]
    Retina,
    /// A GStreamer `rtspsrc` pipeline, for cameras retina cannot handle.
    Gstreamer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls.
    #[default]
    Tcp,
    Udp,
}

/// A named polygon in normalised coordinates (0..1, origin top left).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
}

/// `[[cameras]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Usually a 20-digit GB/T 28181 id; any unique string is accepted.
    pub id: String,
    pub name: String,
    pub kind: CameraKind,
    /// The owning unit (shop, school, bank...) of a social-unit camera.
    #[serde(default)]
    pub unit: Option<String>,
    /// Main stream; `rtsp://`, `rtsps://`, or `file://` for replaying a recording.
    pub url: SecretUrl,
    /// The name of a `[credentials.NAME]` login, instead of user-info in the URL.
    #[serde(default)]
    pub credentials: Option<String>,
    /// Sub-stream used for detection when given (cheaper to decode).
    #[serde(default)]
    pub detect_url: Option<SecretUrl>,
    /// Grid id. May be left out for GB/T 28181 ids: the camera goes under its county.
    #[serde(default)]
    pub grid: Option<String>,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub transport: Transport,
    /// Hazards watched on this camera; absent: every hazard whose zones the camera has.
    #[serde(default)]
    pub hazards: Option<Vec<String>>,
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// `[longitude, latitude]` in degrees (WGS 84): given to the GB/T 28181 platform with
    /// the camera's channel and alarms.
    #[serde(default)]
    pub location: Option<[f64; 2]>,
    /// `[cameras.health]`: this camera's exceptions to `[health]`.
    #[serde(default)]
    pub health: Option<CameraHealth>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Filled by validation for ids that decode as GB/T 28181.
    #[serde(skip)]
    pub device_id: Option<DeviceId>,
    /// The login `credentials` names, filled by validation.
    #[serde(skip)]
    pub login: Option<Credential>,
}

impl Camera {
    /// The grid the camera belongs to; always set once the configuration is validated.
    pub fn grid(&self) -> &str {
        self.grid.as_deref().unwrap_or_default()
    }

    /// The stream analytics should decode: the sub-stream when there is one.
    pub fn detect_url(&self) -> &SecretUrl {
        self.detect_url.as_ref().unwrap_or(&self.url)
    }
}

fn yes() -> bool {
    true
}

/// Numeric precision of a detector's weights and activations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// The model file as given.
    #[default]
    Float,
    /// Its INT8 version (QDQ, per-channel weights, calibrated on the fixtures).
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Int8 => "int8",
        }
    }

    /// The file of this precision for the float model `float`: itself, or the sibling
    /// `NAME_int8.onnx` that `make setup` writes beside it.
    pub fn file_for(self, float: &Path) -> PathBuf {
        match self {
            Self::Float => float.to_owned(),
            Self::Int8 => {
                let stem = float.file_stem().unwrap_or_default().to_string_lossy();
                float.with_file_name(format!("{stem}_int8.onnx"))
            }
        }
    }

    /// The float model that `file`, a model file of this precision, was made from.
    pub fn float_of(self, file: &Path) -> PathBuf {
        match self {
            Self::Float => file.to_owned(),
            Self::Int8 => {
                let stem = file.file_stem().unwrap_or_default().to_string_lossy();
                let float = stem.strip_suffix("_int8").unwrap_or(&stem);
                file.with_file_name(format!("{float}.onnx"))
            }
        }
    }
}

/// Output layout of a detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelLayout {
    /// `[batch, 4 + classes, anchors]`: cx, cy, w, h then class scores; NMS by the caller.
    Yolov8,
    /// TensorFlow object-detection outputs with NMS in the graph (`detection_boxes`...).
    Ssd,
}

impl ModelLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yolov8 => "yolov8",
            Self::Ssd => "ssd",
        }
    }
}

/// `[[models]]`: an ONNX detector, loaded once and shared by every camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub name: String,
    /// Relative paths are looked up beside the config file, then in the models directory
    /// that `make setup` fills. Validation replaces it with the path found.
    pub path: PathBuf,
    pub layout: ModelLayout,
    /// Input side in pixels (the width when `input_height` is set); a multiple of 32 for
    /// yolov8.
    #[serde(default = "default_input_size")]
    pub input_size: u32,
    /// Input height when not square (yolov8): a 16:9 camera letterboxed into a square input
    /// leaves 44% of it grey bars, which inference pays for and never sees anything in.
    /// 192 with 320 (or 384 with 640) fits 16:9 with no bars: 0.6x the pixels, the same
    /// detections. Absent: `input_size` (square).
    #[serde(default)]
    pub input_height: Option<u32>,
    /// `int8` runs the statically quantized sibling `NAME_int8.onnx` that `make setup`
    /// makes from a yolov8 float model: about 2.5x less CPU for the same detections.
    #[serde(default)]
    pub precision: Precision,
    /// Class names by index; absent: read from the ONNX metadata `names`.
    #[serde(default)]
    pub classes: Vec<String>,
    /// ONNX Runtime intra-op threads per inference worker.
    #[serde(default = "one")]
    pub threads: usize,
    /// Frames from all cameras run together up to this many...
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// ...or after the first one waited this long.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

fn default_input_size() -> u32 {
    640
}

impl Model {
    /// The model's input, width by height.
    pub fn input_shape(&self) -> (u32, u32) {
        (
            self.input_size,
            self.input_height.unwrap_or(self.input_size),
        )
    }
}

fn one() -> usize {
    1
}

fn default_max_batch() -> usize {
    4
}

fn default_max_wait() -> Duration {
    Duration::from_millis(50)
}

/// How urgent an alert is; it also picks the escalation timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }
}

/// k positive frames out of the last n before a hazard is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    pub k: u32,
    pub n: u32,
}

impl Default for Confirm {
    fn default() -> Self {
        Self { k: 1, n: 1 }
    }
}

/// `[[hazards]]`: a rule that turns detections into an alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hazard {
    pub name: String,
    pub model: String,
    /// Model classes that count, e.g. `["fire"]`.
    pub classes: Vec<String>,
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f32,
    /// Only detections inside one of these camera zones count (empty: anywhere).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Detections inside these zones never count.
    #[serde(default)]
    pub exclude_zones: Vec<String>,
    /// At least this many matching objects at once (a crowd gathering).
    #[serde(default = "one_u32")]
    pub min_count: u32,
    /// An object must stay this long (a person lingering on a river bank).
    #[serde(default, with = "humantime_serde")]
    pub min_dwell: Duration,
    #[serde(default)]
    pub confirm: Confirm,
    pub severity: Severity,
    /// No second alert for the same camera, hazard and zone within this time.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Unacknowledged this long: republished to the parent centre.
    #[serde(default = "default_escalate_after", with = "humantime_serde")]
    pub escalate_after: Duration,
}

fn default_min_confidence() -> f32 {
    0.5
}

fn one_u32() -> u32 {
    1
}

fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

fn default_escalate_after() -> Duration {
    Duration::from_secs(600)
}

/// A sensor's position, in the covering camera's normalised image coordinates or on a map.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
}

/// `[[dispatch]]`: a department that deals with some hazards (fire to the fire brigade,
/// flood to water affairs): their alerts are republished to it, with the same id, under its
/// own topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatch {
    /// Shown on the page and in logs, e.g. `fire-brigade` or `县消防救援大队`.
    pub name: String,
    /// The hazards it takes.
    pub hazards: Vec<String>,
    /// Only alerts in this grid or below it; absent: every grid.
    #[serde(default)]
    pub grid: Option<String>,
    /// The topic the department subscribes under (e.g. `sy/dispatch/fire-brigade`): an alert
    /// goes to `{topic}/{grid path}/{hazard}`, as on the alert topic.
    pub topic: String,
    #[serde(default)]
    pub on: DispatchOn,
}

/// When an alert is dispatched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DispatchOn {
    /// When an operator's verdict says it is real (`confirmed`): the department is not
    /// sent false alarms.
    #[default]
    Confirmed,
    /// As soon as it is raised.
    Every,
}

/// `[[sensors]]`: a smoke detector, thermometer, gas or water-level gauge in a grid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    pub id: String,
    /// `smoke`, `temperature`, `gas`, `water_level`, or any other declared type.
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub grid: String,
    #[serde(default)]
    pub position: Option<Position>,
    /// Cameras that can see the sensor's surroundings: they verify its alarms.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Alarm when the value is above this...
    #[serde(default)]
    pub above: Option<f64>,
    /// ...or below this...
    #[serde(default)]
    pub below: Option<f64>,
    /// ...or rises faster than this many units per minute...
    #[serde(default)]
    pub rate: Option<f64>,
    /// ...for at least this long.
    #[serde(default, with = "humantime_serde")]
    pub hold: Duration,
    #[serde(default = "default_sensor_severity")]
    pub severity: Severity,
    /// Expected time between readings; silence for longer marks the sensor offline.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Topic readings arrive on; default `{prefix}/sensors/{id}`.
    #[serde(default)]
    pub topic: Option<String>,
    /// The hazard its alarms are published as (the last topic level); default by type:
    /// smoke and temperature `fire`, water_level `flood`, gas `gas-leak`, others the type.
    #[serde(default)]
    pub hazard: Option<String>,
    /// Video hazards that confirm its alarm on a covering camera; default by type: smoke and
    /// temperature `["fire", "smoke"]`, others none (the alarm goes out with a snapshot).
    #[serde(default)]
    pub verified_by: Option<Vec<String>>,
}

impl Sensor {
    /// The hazard name of this sensor's alarms.
    pub fn hazard_name(&self) -> &str {
        if let Some(h) = &self.hazard {
            return h;
        }
        match self.kind.as_str() {
            "smoke" | "temperature" => "fire",
            "water_level" => "flood",
            "gas" => "gas-leak",
            other => other,
        }
    }

    /// The video hazards that confirm this sensor's alarm.
    pub fn verifying_hazards(&self) -> Vec<&str> {
        match &self.verified_by {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => match self.kind.as_str() {
                "smoke" | "temperature" => vec!["fire", "smoke"],
                _ => Vec::new(),
            },
        }
    }
}

/// `[fusion]`: how a sensor alarm and the cameras covering the sensor work together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fusion {
    /// How long an alarm waits for video to confirm it before it goes out as a sensor alert.
    #[serde(default = "default_fusion_wait", with = "humantime_serde")]
    pub wait: Duration,
    /// How long the covering cameras analyse every frame (verify mode) after an alarm.
    #[serde(default = "default_verify_for", with = "humantime_serde")]
    pub verify_for: Duration,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            wait: default_fusion_wait(),
            verify_for: default_verify_for(),
        }
    }
}

/// `[readings]`: what a sensor reading's own time may say. A gateway with a wrong clock, or a
/// stranger on the broker, must not date readings where they freeze a sensor (far ahead: every
/// later reading looks out of order) or slip past `hold` (far behind).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readings {
    /// A reading dated more than this after its arrival is refused (dead-lettered).
    #[serde(default = "default_max_ahead", with = "humantime_serde")]
    pub max_ahead: Duration,
    /// A reading dated more than this before its arrival is refused.
    #[serde(default = "default_max_behind", with = "humantime_serde")]
    pub max_behind: Duration,
}

impl Default for Readings {
    fn default() -> Self {
        Self {
            max_ahead: default_max_ahead(),
            max_behind: default_max_behind(),
        }
    }
}

fn default_max_ahead() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_max_behind() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// `[cluster]`: this node is one of several sharing the cameras of one file, coordinated in
/// `[redis]` (membership, per-camera leases). Absent or `enabled = false`: this node runs
/// every camera.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a node's membership and camera leases outlive its last renewal: a dead
    /// node's cameras move after at most this long. Renewed at a third of it.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Cameras this node may hold: its weight in the assignment and its limit. Absent: 16
    /// per core.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// A label (rack, site) shown in `/api/cluster`.
    #[serde(default)]
    pub zone: Option<String>,
}

fn default_lease() -> Duration {
    Duration::from_secs(10)
}

/// Cameras per core a node takes by default: the README's sizing, 32 1080p keyframe cameras
/// on 2 cores (48 were held once, not on a rerun).
pub const CAMERAS_PER_CORE: u32 = 16;

impl Cluster {
    /// `capacity`, or [`CAMERAS_PER_CORE`] per core of this machine.
    pub fn capacity(&self) -> u32 {
        self.capacity.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            CAMERAS_PER_CORE.saturating_mul(u32::try_from(cores).unwrap_or(u32::MAX))
        })
    }
}

/// `[motion]`: the motion gate in front of inference, for every camera. Static scenes are
/// most of a patrol camera's day; the gate is what lets one core watch dozens of cameras.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Motion {
    /// `false`: every sampled frame goes to inference, moving or not.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A static scene is still analysed this often: smoke grows too slowly to trip the gate.
    #[serde(default = "default_forced_interval", with = "humantime_serde")]
    pub forced_interval: Duration,
    /// With keyframe sampling (retina cameras): do not even decode a keyframe when the
    /// sizes of the frames before it say nothing changed since the last one decoded
    /// (compressed-domain motion). One is still decoded every `forced_interval`, and every
    /// one while a hazard waits for confirmation, the picture moves or a health problem is
    /// being confirmed. Off by default: on a camera encoding at a fixed bit rate, sizes do
    /// not show a change, which then waits for the forced interval.
    #[serde(default)]
    pub skip_quiet_keyframes: bool,
}

impl Default for Motion {
    fn default() -> Self {
        Self {
            enabled: true,
            forced_interval: default_forced_interval(),
            skip_quiet_keyframes: false,
        }
    }
}

impl Motion {
    /// How often a camera must decode a keyframe when it skips quiet ones; `None`: it
    /// decodes every keyframe it samples.
    pub fn skip_quiet(&self) -> Option<Duration> {
        (self.enabled && self.skip_quiet_keyframes).then_some(self.forced_interval)
    }
}

fn default_forced_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[health]`: camera health, from the keyframes already decoded (video quality diagnosis,
/// 视频质量诊断) and from the stream itself (video loss). Every limit may be set per camera
/// in `[cameras.health]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `false`: no diagnosis, no health messages (video loss included).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a problem must persist before it is reported, and be gone before it ends:
    /// a passing bus or a cloud must not page a maintenance team.
    #[serde(default = "default_health_hold", with = "humantime_serde")]
    pub hold: Duration,
    /// A camera not streaming this long has `video-loss`.
    #[serde(default = "default_offline_after", with = "humantime_serde")]
    pub offline_after: Duration,
    /// `"19:00-06:00"`, China Standard Time (UTC+8, as GB/T 28181 alarm times): dark is
    /// expected then. A picture with no colour (an IR camera at night) is never dark.
    #[serde(default, deserialize_with = "night_hours")]
    pub night: Option<NightHours>,
    /// Mean luma (0-255) below this: `dark`.
    #[serde(default = "default_dark_below")]
    pub dark_below: f32,
    /// Mean luma above this: `bright` (glare, an IR lamp in the lens).
    #[serde(default = "default_bright_above")]
    pub bright_above: f32,
    /// Luma standard deviation below this, and below `occluded_ratio` of the camera's own
    /// healthy baseline: `occluded` (the lens covered or sprayed).
    #[serde(default = "default_flat_below")]
    pub flat_below: f32,
    #[serde(default = "default_occluded_ratio")]
    pub occluded_ratio: f32,
    /// Sharpness below this fraction of the camera's own baseline: `blurred`.
    #[serde(default = "default_blurred_ratio")]
    pub blurred_ratio: f32,
    /// Mean chroma offset from neutral above this: `color-cast`.
    #[serde(default = "default_cast_above")]
    pub cast_above: f32,
    /// This many analysed frames in a row without even sensor noise: `frozen`.
    #[serde(default = "default_frozen_frames")]
    pub frozen_frames: u32,
    /// Edge correlation with the camera's reference view below this: `moved`.
    #[serde(default = "default_moved_below")]
    pub moved_below: f32,
}

/// The measures' limits as they apply to one camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthThresholds {
    pub dark_below: f32,
    pub bright_above: f32,
    pub flat_below: f32,
    pub occluded_ratio: f32,
    pub blurred_ratio: f32,
    pub cast_above: f32,
    pub frozen_frames: u32,
    pub moved_below: f32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            enabled: true,
            hold: default_health_hold(),
            offline_after: default_offline_after(),
            night: None,
            dark_below: default_dark_below(),
            bright_above: default_bright_above(),
            flat_below: default_flat_below(),
            occluded_ratio: default_occluded_ratio(),
            blurred_ratio: default_blurred_ratio(),
            cast_above: default_cast_above(),
            frozen_frames: default_frozen_frames(),
            moved_below: default_moved_below(),
        }
    }
}

impl Health {
    /// Whether `camera` is diagnosed at all.
    pub fn enabled_for(&self, camera: &Camera) -> bool {
        self.enabled && camera.health.and_then(|h| h.enabled).unwrap_or(true)
    }

    /// The night hours that apply to `camera`.
    pub fn night_for(&self, camera: &Camera) -> Option<NightHours> {
        camera.health.and_then(|h| h.night).or(self.night)
    }

    /// The limits that apply to `camera`: its `[cameras.health]` over this section.
    pub fn thresholds_for(&self, camera: &Camera) -> HealthThresholds {
        let o = camera.health.unwrap_or_default();
        HealthThresholds {
            dark_below: o.dark_below.unwrap_or(self.dark_below),
            bright_above: o.bright_above.unwrap_or(self.bright_above),
            flat_below: o.flat_below.unwrap_or(self.flat_below),
            occluded_ratio: o.occluded_ratio.unwrap_or(self.occluded_ratio),
            blurred_ratio: o.blurred_ratio.unwrap_or(self.blurred_ratio),
            cast_above: o.cast_above.unwrap_or(self.cast_above),
            frozen_frames: o.frozen_frames.unwrap_or(self.frozen_frames),
            moved_below: o.moved_below.unwrap_or(self.moved_below),
        }
    }

    /// This section's own limits.
    pub fn thresholds(&self) -> HealthThresholds {
        HealthThresholds {
            dark_below: self.dark_below,
            bright_above: self.bright_above,
            flat_below: self.flat_below,
            occluded_ratio: self.occluded_ratio,
            blurred_ratio: self.blurred_ratio,
            cast_above: self.cast_above,
            frozen_frames: self.frozen_frames,
            moved_below: self.moved_below,
        }
    }
}

/// `[cameras.health]`: a camera's exceptions to `[health]` (a camera that looks into a dark
/// tunnel, a lens that is always a little soft).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraHealth {
    /// `false`: this camera is not diagnosed.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "night_hours")]
    pub night: Option<NightHours>,
    #[serde(default)]
    pub dark_below: Option<f32>,
    #[serde(default)]
    pub bright_above: Option<f32>,
    #[serde(default)]
    pub flat_below: Option<f32>,
    #[serde(default)]
    pub occluded_ratio: Option<f32>,
    #[serde(default)]
    pub blurred_ratio: Option<f32>,
    #[serde(default)]
    pub cast_above: Option<f32>,
    #[serde(default)]
    pub frozen_frames: Option<u32>,
    #[serde(default)]
    pub moved_below: Option<f32>,
}

/// Night hours, in minutes after midnight China Standard Time; `from` after `to` spans
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NightHours {
    pub from: u16,
    pub to: u16,
}

impl NightHours {
    /// Whether `at` falls in these hours (UTC+8; China keeps no daylight saving).
    pub fn contains(&self, at: std::time::SystemTime) -> bool {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let minute = ((secs + 8 * 3600) / 60 % (24 * 60)) as u16;
        if self.from <= self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

fn night_hours<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NightHours>, D::Error> {
    let s = String::deserialize(d)?;
    let minute = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let parsed = s.split_once('-').and_then(|(a, b)| {
        Some(NightHours {
            from: minute(a)?,
            to: minute(b)?,
        })
    });
    match parsed {
        Some(n) if n.from != n.to => Ok(Some(n)),
        _ => Err(serde::de::Error::custom(format!(
            "`{s}` is not night hours; write \"HH:MM-HH:MM\" in China Standard Time, e.g. \"19:00-06:00\""
        ))),
    }
}

fn default_health_hold() -> Duration {
    Duration::from_secs(120)
}

fn default_offline_after() -> Duration {
    Duration::from_secs(300)
}

fn default_dark_below() -> f32 {
    25.0
}

fn default_bright_above() -> f32 {
    235.0
}

fn default_flat_below() -> f32 {
    6.0
}

fn default_occluded_ratio() -> f32 {
    0.3
}

fn default_blurred_ratio() -> f32 {
    0.35
}

fn default_cast_above() -> f32 {
    28.0
}

fn default_frozen_frames() -> u32 {
    5
}

fn default_moved_below() -> f32 {
    0.45
}

fn default_fusion_wait() -> Duration {
    Duration::from_secs(10)
}

fn default_verify_for() -> Duration {
    Duration::from_secs(120)
}

fn default_sensor_severity() -> Severity {
    Severity::Major
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

/// Durations written the way people write them: `"5m"`, `"30s"`, `"1h 30m"`, `"250ms"`.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write e.g. \"30s\", \"5m\", \"250ms\""
            ))
        })
    }
}

/// `[gb28181]`: sharpeyes registers with a county's GB/T 28181 video platform as one device
/// whose channels are its cameras, and sends every alert there as an Alarm. Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gb28181 {
    /// The platform's 20-digit SIP id.
    pub server_id: String,
    /// The platform's 10-digit SIP realm, e.g. `3213220000`.
    pub server_domain: String,
    /// `udp://host:port` or `tcp://host:port`.
    pub server: String,
    /// sharpeyes' own 20-digit id on the platform (type code 118 or 200).
    pub device_id: String,
    /// The password the platform gave this device; `${VAR}` or `${file:...}`.
    pub password: Secret,
    /// The local SIP address.
    #[serde(default = "default_sip_listen")]
    pub listen: std::net::SocketAddr,
    /// How long a registration lasts; renewed before it ends.
    #[serde(default = "default_sip_expires", with = "humantime_serde")]
    pub expires: Duration,
    /// How often a Keepalive goes to the platform.
    #[serde(default = "default_sip_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// The charset of the XML bodies: `GB2312` (the standard's) or `UTF-8`.
    #[serde(default)]
    pub charset: SipCharset,
    /// `[gb28181.alarms.HAZARD]`: how a hazard's alerts arrive, over the defaults.
    #[serde(default)]
    pub alarms: std::collections::BTreeMap<String, SipAlarm>,
}

/// A hazard's alarm on the platform (GB/T 28181-2016 A.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAlarm {
    /// `AlarmMethod`: 2 device, 5 video, 6 device fault, 7 other, ...
    pub method: u8,
    /// `Info/AlarmType`; absent: the method's default.
    #[serde(default, rename = "type")]
    pub alarm_type: Option<u8>,
    /// `Info/AlarmTypeParam/EventType` (intrusion: 1 entering, 2 leaving).
    #[serde(default)]
    pub event_type: Option<u8>,
}

/// The charset of GB/T 28181 XML bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SipCharset {
    #[default]
    #[serde(rename = "GB2312")]
    Gb2312,
    #[serde(rename = "UTF-8")]
    Utf8,
}

fn default_sip_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 5060))
}

fn default_sip_expires() -> Duration {
    Duration::from_secs(3600)
}

fn default_sip_keepalive() -> Duration {
    Duration::from_secs(60)
}
