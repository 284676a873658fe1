//! From a parsed document to a checked [`Config`], collecting every problem on the way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::DeValue;

use crate::Config;
use crate::diag::{FieldPath, Level, Problem, closest};
use crate::gbt28181::{DeviceCategory, DeviceId};
use crate::schema::{
    AlertOptions, Backend, Camera, CameraKind, Cluster, Credential, Dispatch, Fusion, Gb28181,
    Grid, GridLevel, Hazard, Health, Ingest, Model, ModelLayout, Motion, Precision, Readings,
    Sensor, Zone,
};
use crate::secret::SecretUrl;
use crate::source::{Source, string_field};

const SECTIONS: &[&str] = &[
    "node",
    "mqtt",
    "redis",
    "http",
    "alerts",
    "grids",
    "cameras",
    "models",
    "hazards",
    "sensors",
    "fusion",
    "motion",
    "credentials",
    "ingest",
    "readings",
    "cluster",
    "gb28181",
    "health",
    "dispatch",
];

/// The longest id: ids become MQTT topic levels and Redis keys, whose lengths have limits,
/// and an API caller must not be able to make either overflow.
const MAX_ID_BYTES: usize = 64;
/// The longest name, unit or centre: they travel in every alert.
const MAX_NAME_BYTES: usize = 256;

/// Whether `value` may be an id: 1 to 64 of `[A-Za-z0-9._-]`, so that it fits MQTT topic
/// levels and Redis keys.
pub(crate) fn is_topic_safe(value: &str) -> bool {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !value.is_empty() && value.len() <= MAX_ID_BYTES && value.chars().all(safe)
}

/// Where relative model paths are looked up, after the config file's own directory.
pub(crate) struct Lookup<'a> {
    pub config_dir: &'a Path,
    pub model_dirs: &'a [PathBuf],
}

/// An array section: the entries that deserialized, with their index, and the ids of
/// those that did not (so references to a broken entry are not reported twice).
struct Section<T> {
    items: Vec<(usize, T)>,
    broken_ids: HashSet<String>,
}

impl<T> Section<T> {
    fn ids(&self, id: impl Fn(&T) -> &str) -> HashSet<String> {
        let mut all: HashSet<String> = self.items.iter().map(|(_, t)| id(t).to_owned()).collect();
        all.extend(self.broken_ids.iter().cloned());
        all
    }
}

pub(crate) fn validate(src: &Source<'_>, lookup: &Lookup<'_>) -> (Config, Vec<Problem>) {
    let mut v = Validator::default();

    for (key, _) in src.root.get_ref().iter() {
        let key = key.get_ref().as_ref();
        if !SECTIONS.contains(&key) {
            let mut p = Problem::error(
                FieldPath::root().key(key),
                format!("unknown section `{key}`"),
            );
            p.hint = Some(match closest(key, SECTIONS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known sections: {}", SECTIONS.join(", ")),
            });
            v.push(p);
        }
    }

    let node: crate::schema::Node = v.table(src, "node").unwrap_or_default();
    let mqtt = v.table(src, "mqtt");
    let redis: Option<crate::Redis> = v.table(src, "redis");
    let http = v.table(src, "http").unwrap_or_default();
    let alerts: AlertOptions = v.table(src, "alerts").unwrap_or_default();
    if alerts.outbox_limit == 0 {
        v.error(
            FieldPath::root().key("alerts").key("outbox_limit"),
            "an outbox of 0 alerts would refuse every alert",
            "use at least 1; 10000 (the default) holds hours of a county's alerts",
        );
    }
    if alerts.snapshot_max_bytes < 16 * 1024 {
        v.error(
            FieldPath::root().key("alerts").key("snapshot_max_bytes"),
            format!(
                "{} bytes is too small for a useful snapshot",
                alerts.snapshot_max_bytes
            ),
            "use at least 16384; 204800 (the default) suits phones",
        );
    }
    let fusion: Fusion = v.table(src, "fusion").unwrap_or_default();
    if fusion.wait > std::time::Duration::from_secs(300) {
        v.error(
            FieldPath::root().key("fusion").key("wait"),
            format!(
                "{} is too long to hold a sensor alarm back",
                humantime::format_duration(fusion.wait)
            ),
            "use at most 5m; 10s (the default) gives a keyframe camera time to look",
        );
    }
    let motion: Motion = v.table(src, "motion").unwrap_or_default();
    let forced = motion.forced_interval;
    if forced.is_zero() || forced > std::time::Duration::from_secs(600) {
        v.error(
            FieldPath::root().key("motion").key("forced_interval"),
            format!(
                "{} is not in 1s..=10m",
                humantime::format_duration(forced)
            ),
            "10s (the default) keeps slow smoke in view; to analyse every frame, set `enabled = false`",
        );
    }
    let health: Health = v.table(src, "health").unwrap_or_default();
    v.health(&health);
    let readings: Readings = v.table(src, "readings").unwrap_or_default();
    let cluster: Option<Cluster> = v.table(src, "cluster");
    if let Some(c) = cluster.as_ref().filter(|c| c.enabled) {
        v.cluster(c, redis.is_some());
    }
    let gb28181: Option<Gb28181> = v.table(src, "gb28181");
    if let Some(g) = &gb28181 {
        v.gb28181(g);
    }
    let ingest: Ingest = v.table(src, "ingest").unwrap_or_default();
    if ingest.receive_coalesce > std::time::Duration::from_millis(200) {
        v.error(
            FieldPath::root().key("ingest").key("receive_coalesce"),
            format!(
                "{} would hold every camera's frames back that long",
                humantime::format_duration(ingest.receive_coalesce)
            ),
            "use at most 200ms; 20ms (the default) reads a 25 fps camera about once a frame",
        );
    }
    if ingest.keyframe_decoders.is_some_and(|n| n > 1024) {
        v.error(
            FieldPath::root().key("ingest").key("keyframe_decoders"),
            "more keyframe decoders at once than any machine has cores",
            "leave it out (one per core), or 0 to let every camera decode when it has a keyframe",
        );
    }
    let grids: Section<Grid> = v.array(src, "grids", "id");
    let models: Section<Model> = v.array(src, "models", "name");
    let hazards: Section<Hazard> = v.array(src, "hazards", "name");
    let cameras: Section<Camera> = v.array(src, "cameras", "id");
    let sensors: Section<Sensor> = v.array(src, "sensors", "id");
    let dispatch: Section<Dispatch> = v.array(src, "dispatch", "name");
    let credentials: BTreeMap<String, Credential> = v.table(src, "credentials").unwrap_or_default();
    for name in credentials.keys() {
        v.topic_safe(
            FieldPath::root().key("credentials").key(name),
            "credentials name",
            name,
        );
    }

    let grids = v.grids(grids);
    let models = v.models(models, lookup);
    let hazards = v.hazards(hazards, &models);
    let cameras = v.cameras(cameras, &grids, &hazards, &credentials, &health);
    let sensors = v.sensors(sensors, &grids, &cameras, &hazards);
    let prefix = mqtt
        .as_ref()
        .map_or("sharpeyes", |m: &crate::schema::Mqtt| m.prefix.as_str());
    let dispatch = v.dispatch(dispatch, &grids, &hazards, prefix);

    let mut config = Config {
        node,
        mqtt,
        redis,
        http,
        alerts,
        grids: grids.items.into_iter().map(|(_, g)| g).collect(),
        cameras: cameras.items.into_iter().map(|(_, c)| c).collect(),
        models: models.items.into_iter().map(|(_, m)| m).collect(),
        hazards: hazards.items.into_iter().map(|(_, h)| h).collect(),
        sensors: sensors.items.into_iter().map(|(_, s)| s).collect(),
        fusion,
        motion,
        health,
        readings,
        ingest,
        credentials,
        cluster,
        gb28181,
        dispatch: dispatch.items.into_iter().map(|(_, d)| d).collect(),
    };
    v.endpoints(&mut config);
    (config, v.problems)
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    fn error(&mut self, path: FieldPath, msg: impl Into<String>, hint: impl Into<String>) {
        self.push(Problem::error(path, msg).hint(hint));
    }

    fn warn(&mut self, path: FieldPath, msg: impl Into<String>, hint: impl Into<String>) {
        self.push(Problem::warning(path, msg).hint(hint));
    }

    /// `[cluster]` needs `[redis]` and a lease Redis can keep. (Its own node id may come
    /// from the environment: `run` checks it, `check-config` reports it.)
    fn cluster(&mut self, cluster: &Cluster, redis: bool) {
        let path = FieldPath::root().key("cluster");
        if !redis {
            self.error(
                path.clone(),
                "[cluster] needs [redis]: the nodes share their membership and camera leases there",
                "add [redis] with the url every node uses, or remove [cluster] to run every camera here",
            );
        }
        let lease = cluster.lease;
        if lease < std::time::Duration::from_secs(3) || lease > std::time::Duration::from_secs(300)
        {
            self.error(
                path.key("lease"),
                format!("{} is not in 3s..=5m", humantime::format_duration(lease)),
                "10s (the default): a dead node's cameras move within 10 s, renewed every 3.3 s",
            );
        }
        if cluster.capacity == Some(0) {
            self.error(
                path.key("capacity"),
                "a capacity of 0 would give this node no cameras",
                "leave it out for 16 per core, or set `enabled = false` to keep the node out",
            );
        }
        if let Some(zone) = &cluster.zone {
            self.topic_safe(path.key("zone"), "cluster zone", zone);
        }
    }

    /// `[health]`: limits a picture can cross, and times a person would accept.
    fn health(&mut self, h: &Health) {
        let path = FieldPath::root().key("health");
        let minute = std::time::Duration::from_secs(60);
        if h.hold > 60 * minute {
            self.error(
                path.key("hold"),
                format!("{} is longer than 1h", humantime::format_duration(h.hold)),
                "2m (the default) rides out a passing bus or a cloud; a problem older than an hour is long known",
            );
        }
        if h.offline_after < std::time::Duration::from_secs(10)
            || h.offline_after > 24 * 60 * minute
        {
            self.error(
                path.key("offline_after"),
                format!(
                    "{} is not in 10s..=24h",
                    humantime::format_duration(h.offline_after)
                ),
                "5m (the default) rides out a camera's reboot",
            );
        }
        self.health_thresholds(&path, &h.thresholds());
    }

    fn health_thresholds(&mut self, path: &FieldPath, t: &crate::HealthThresholds) {
        let luma = |v: f32| (0.0..=255.0).contains(&v);
        for (field, value) in [
            ("dark_below", t.dark_below),
            ("bright_above", t.bright_above),
            ("flat_below", t.flat_below),
            ("cast_above", t.cast_above),
        ] {
            if !luma(value) {
                self.error(
                    path.key(field),
                    format!("{value} is not a grey level in 0..=255"),
                    "pictures are measured in 8-bit grey levels",
                );
            }
        }
        if t.dark_below >= t.bright_above {
            self.error(
                path.key("dark_below"),
                format!(
                    "dark below {} and bright above {} leave no picture healthy",
                    t.dark_below, t.bright_above
                ),
                "keep dark_below under bright_above (defaults 25 and 235)",
            );
        }
        for (field, value) in [
            ("occluded_ratio", t.occluded_ratio),
            ("blurred_ratio", t.blurred_ratio),
            ("moved_below", t.moved_below),
        ] {
            if !(value > 0.0 && value < 1.0) {
                self.error(
                    path.key(field),
                    format!("{value} is not a fraction in 0..1 (exclusive)"),
                    "a fraction of the camera's own baseline, e.g. 0.35",
                );
            }
        }
        if !(2..=100).contains(&t.frozen_frames) {
            self.error(
                path.key("frozen_frames"),
                format!("{} is not in 2..=100", t.frozen_frames),
                "5 (the default): five analysed frames without a grain of noise",
            );
        }
    }

    /// `[gb28181]`: ids the platform accepts, a server it can be reached at, timers it keeps.
    fn gb28181(&mut self, g: &Gb28181) {
        let path = FieldPath::root().key("gb28181");
        match DeviceId::parse(&g.server_id) {
            Err(e) => self.error(
                path.key("server_id"),
                e.to_string(),
                "the platform's 20-digit SIP id, as its operator gives it (e.g. 32132200002000000001)",
            ),
            Ok(id) => {
                if !g.server_domain.bytes().all(|b| b.is_ascii_digit()) || g.server_domain.len() != 10 {
                    self.error(
                        path.key("server_domain"),
                        format!("`{}` is not a 10-digit SIP realm", g.server_domain),
                        format!("usually the first 10 digits of server_id: {}", &id.as_str()[..10]),
                    );
                }
            }
        }
        match DeviceId::parse(&g.device_id) {
            Err(e) => self.error(
                path.key("device_id"),
                e.to_string(),
                "the 20-digit id the platform's operator added this device under, e.g. 32132200001180000001",
            ),
            Ok(id) => {
                let (code, name) = id.device_type();
                if !matches!(code, "111" | "118" | "200") {
                    self.error(
                        path.key("device_id"),
                        format!("type code {code} ({name}) is not a device with channels"),
                        "use type code 118 (NVR) or 200 (platform) in digits 11-13, as the platform's operator registers it",
                    );
                }
            }
        }
        if g.device_id == g.server_id {
            self.error(
                path.key("device_id"),
                "the device id is the platform's own id",
                "give this device its own 20-digit id",
            );
        }
        match g.server.split_once("://") {
            Some(("udp" | "tcp", addr))
                if addr.rsplit_once(':').is_some_and(|(h, p)| {
                    !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                }) => {}
            _ => self.error(
                path.key("server"),
                format!("`{}` is not udp://host:port or tcp://host:port", g.server),
                "e.g. udp://10.32.13.1:5060 (GB/T 28181 platforms listen on 5060, UDP and TCP)",
            ),
        }
        if g.password.is_literal() {
            self.warn(
                path.key("password"),
                "the platform password is written in the file",
                "use password = \"${GB28181_PASSWORD}\" or \"${file:/run/secrets/gb28181}\"",
            );
        }
        for (hazard, alarm) in &g.alarms {
            self.topic_safe(path.key("alarms").key(hazard), "hazard name", hazard);
            let types: &[u8] = match alarm.method {
                2 => &[1, 2, 3, 4, 5],
                5 => &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                6 => &[1, 2],
                1 | 3 | 4 | 7 => &[],
                m => {
                    self.error(
                        path.key("alarms").key(hazard).key("method"),
                        format!("{m} is not an AlarmMethod of GB/T 28181"),
                        "1 telephone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other",
                    );
                    continue;
                }
            };
            if let Some(t) = alarm.alarm_type.filter(|t| !types.contains(t)) {
                self.error(
                    path.key("alarms").key(hazard).key("type"),
                    format!("{t} is not an AlarmType of AlarmMethod {}", alarm.method),
                    match alarm.method {
                        2 => "1 video loss, 2 tamper, 3 disk full, 4 high temperature, 5 low temperature; or leave it out",
                        5 => "1 manual, 2 motion, 3 left object, 4 removed object, 5 tripwire, 6 intrusion, 7 wrong way, 8 loitering, 9 counting, 10 density, 11 video anomaly, 12 fast motion",
                        6 => "1 disk fault, 2 fan fault",
                        _ => "leave it out: this method has no types",
                    },
                );
            }
        }
        let secs = |d: std::time::Duration| humantime::format_duration(d).to_string();
        if g.expires < std::time::Duration::from_secs(60)
            || g.expires > std::time::Duration::from_secs(86400)
        {
            self.error(
                path.key("expires"),
                format!("{} is not in 1m..=1day", secs(g.expires)),
                "3600s (the default): registered for an hour, renewed before it ends",
            );
        }
        if g.keepalive < std::time::Duration::from_secs(5)
            || g.keepalive > std::time::Duration::from_secs(600)
        {
            self.error(
                path.key("keepalive"),
                format!("{} is not in 5s..=10m", secs(g.keepalive)),
                "60s (the default); platforms mark a device offline after 3 missed keepalives",
            );
        }
    }

    /// `ca_file`, `cert_file` and `key_file` of a link: used only over TLS, and a client
    /// certificate only with its key.
    fn tls_files(
        &mut self,
        path: &FieldPath,
        url: &SecretUrl,
        tls: bool,
        [ca, cert, key]: [&Option<std::path::PathBuf>; 3],
    ) {
        for (field, file) in [("ca_file", ca), ("cert_file", cert), ("key_file", key)] {
            if file.is_some() && !tls {
                self.error(
                    path.key(field),
                    format!("{field} is used only over TLS, and {url} is not TLS"),
                    "use a TLS url (rediss://, mqtts://), or remove the field",
                );
            }
        }
        if cert.is_some() != key.is_some() {
            self.error(
                path.key(if cert.is_some() {
                    "key_file"
                } else {
                    "cert_file"
                }),
                "a client certificate needs both cert_file and key_file",
                "set both (PEM files), or neither",
            );
        }
    }

    fn table<T: DeserializeOwned>(&mut self, src: &Source<'_>, key: &str) -> Option<T> {
        let value = src.get(key)?;
        match src.deserialize(value, &FieldPath::root().key(key)) {
            Ok(t) => Some(t),
            Err(p) => {
                self.push(p);
                None
            }
        }
    }

    fn array<T: DeserializeOwned>(&mut self, src: &Source<'_>, key: &str, id: &str) -> Section<T> {
        let mut section = Section {
            items: Vec::new(),
            broken_ids: HashSet::new(),
        };
        let Some(value) = src.get(key) else {
            return section;
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                FieldPath::root().key(key),
                format!("`{key}` must be an array of tables"),
                format!("write each entry under its own `[[{key}]]` header"),
            );
            return section;
        };
        for (i, item) in items.iter().enumerate() {
            match src.deserialize::<T>(item, &FieldPath::item(key, i)) {
                Ok(t) => section.items.push((i, t)),
                Err(p) => {
                    if let Some(name) = string_field(item, id) {
                        section.broken_ids.insert(name.to_owned());
                    }
                    self.push(p);
                }
            }
        }
        section
    }

    /// Flags repeated ids; returns the set of ids seen.
    fn unique<'a, T>(
        &mut self,
        section: &'a Section<T>,
        what: &str,
        field: &str,
        id: impl Fn(&T) -> &str,
    ) -> HashSet<&'a str> {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, t) in &section.items {
            let key = id(t);
            if let Some(prev) = first.get(key) {
                self.error(
                    FieldPath::item(what, *i).key(field),
                    format!("duplicate {field} `{key}`: {what}[{prev}] has it too"),
                    format!("every entry of [[{what}]] needs its own {field}"),
                );
            } else {
                first.insert(key, *i);
            }
        }
        first.into_keys().collect()
    }

    /// Ids become MQTT topic levels and Redis keys: at most [`MAX_ID_BYTES`] of letters,
    /// digits, '-', '_' and '.'.
    fn topic_safe(&mut self, path: FieldPath, what: &str, value: &str) {
        if !is_topic_safe(value) {
            let shown: String = value.chars().take(MAX_ID_BYTES).collect();
            let more = if shown.len() < value.len() { "..." } else { "" };
            self.error(
                path,
                format!(
                    "{what} `{shown}{more}` ({} bytes) cannot be used in MQTT topics and Redis keys",
                    value.len()
                ),
                format!("use 1 to {MAX_ID_BYTES} letters, digits, '-', '_' and '.'"),
            );
        }
    }

    /// Names, units and centres travel in every alert: at most [`MAX_NAME_BYTES`].
    fn bounded(&mut self, path: FieldPath, what: &str, value: &str) {
        if value.len() > MAX_NAME_BYTES {
            self.error(
                path,
                format!("{what} is {} bytes long", value.len()),
                format!("use at most {MAX_NAME_BYTES} bytes"),
            );
        }
    }

    fn grids(&mut self, mut section: Section<Grid>) -> Section<Grid> {
        self.unique(&section, "grids", "id", |g| &g.id);
        let ids = section.ids(|g| &g.id);
        for (i, g) in &mut section.items {
            let path = FieldPath::item("grids", *i);
            self.topic_safe(path.key("id"), "grid id", &g.id);
            self.bounded(path.key("name"), "the grid name", &g.name);
            if let Some(c) = &g.centre {
                self.bounded(path.key("centre"), "the centre", c);
            }
            let level = match g.level.or_else(|| GridLevel::from_id_shape(&g.id)) {
                Some(l) => l,
                None => {
                    self.error(
                        path.key("id"),
                        format!("cannot tell the level of grid `{}`", g.id),
                        "give level = \"county\" | \"town\" | \"village\" | \"grid\", or use dashed ids like 321322-001-003-07",
                    );
                    continue;
                }
            };
            g.level = Some(level);
            let explicit_parent = g.parent.is_some();
            if g.parent.is_none() && level != GridLevel::County {
                g.parent = g.id.rsplit_once('-').map(|(p, _)| p.to_owned());
            }
            match (&g.parent, level) {
                (Some(_), GridLevel::County) => self.error(
                    path.key("parent"),
                    format!("county `{}` cannot have a parent", g.id),
                    "the county is the top of the hierarchy: remove parent",
                ),
                (None, _) if level != GridLevel::County => self.error(
                    path.key("parent"),
                    format!("{} `{}` has no parent", level.as_str(), g.id),
                    "give parent = the id of the grid one level up",
                ),
                (Some(p), _) if !ids.contains(p) => self.error(
                    path.key(if explicit_parent { "parent" } else { "id" }),
                    format!("parent `{p}` of grid `{}` is not defined", g.id),
                    format!("add a [[grids]] entry with id = \"{p}\""),
                ),
                _ => {}
            }
            if g.centre.is_none() {
                self.warn(
                    path.key("centre"),
                    format!("grid `{}` names no service centre", g.id),
                    "alerts and escalations say which centre handles them: add centre = \"...\"",
                );
            }
        }
        // Levels must step down by one: checked once every level is known.
        let levels: HashMap<String, GridLevel> = section
            .items
            .iter()
            .filter_map(|(_, g)| g.level.map(|l| (g.id.clone(), l)))
            .collect();
        for (i, g) in &section.items {
            if let (Some(level), Some(parent)) = (g.level, &g.parent)
                && let Some(&pl) = levels.get(parent)
                && Some(pl) != level.parent()
            {
                self.error(
                    FieldPath::item("grids", *i).key("parent"),
                    format!(
                        "{} `{}` has parent `{parent}`, which is a {}",
                        level.as_str(),
                        g.id,
                        pl.as_str()
                    ),
                    format!(
                        "a {}'s parent must be a {}",
                        level.as_str(),
                        level.parent().map_or("nothing", GridLevel::as_str)
                    ),
                );
            }
        }
        section
    }

    fn models(&mut self, mut section: Section<Model>, lookup: &Lookup<'_>) -> Section<Model> {
        self.unique(&section, "models", "name", |m| &m.name);
        for (i, m) in &mut section.items {
            let path = FieldPath::item("models", *i);
            match find_model(&m.path, lookup) {
                Ok(found) if m.precision == Precision::Int8 => {
                    if let Some(int8) = self.int8_sibling(m, &found, &path) {
                        m.path = int8;
                    }
                }
                Ok(found) => m.path = found,
                Err(searched) => self.error(
                    path.key("path"),
                    format!("model `{}`: file {} not found", m.name, m.path.display()),
                    format!(
                        "looked in {}; run `make setup` to install the models, or give an absolute path",
                        searched
                    ),
                ),
            }
            if m.layout == ModelLayout::Yolov8
                && (m.input_size % 32 != 0 || !(32..=2048).contains(&m.input_size))
            {
                self.error(
                    path.key("input_size"),
                    format!(
                        "model `{}`: input_size {} is not a multiple of 32 in 32..=2048",
                        m.name, m.input_size
                    ),
                    "yolov8 models take sides that are multiples of 32, e.g. 320 or 640",
                );
            }
            if let Some(h) = m.input_height {
                if m.layout != ModelLayout::Yolov8 {
                    self.error(
                        path.key("input_height"),
                        format!(
                            "model `{}`: input_height is for yolov8 models; {} models take a square input",
                            m.name,
                            m.layout.as_str()
                        ),
                        "remove input_height",
                    );
                } else if h % 32 != 0 || !(32..=m.input_size).contains(&h) {
                    self.error(
                        path.key("input_height"),
                        format!(
                            "model `{}`: input_height {h} is not a multiple of 32 in 32..={}",
                            m.name, m.input_size
                        ),
                        "192 with input_size 320, or 384 with 640, fits 16:9 cameras",
                    );
                }
            }
            if !(1..=64).contains(&m.threads) {
                self.error(
                    path.key("threads"),
                    format!("threads {} is not in 1..=64", m.threads),
                    "1 or 2 per core is typical",
                );
            }
            if !(1..=64).contains(&m.max_batch) {
                self.error(
                    path.key("max_batch"),
                    format!("max_batch {} is not in 1..=64", m.max_batch),
                    "4 to 8 fill a CPU batch well",
                );
            }
            let mut seen = HashSet::new();
            for (j, c) in m.classes.iter().enumerate() {
                if !seen.insert(c) {
                    self.error(
                        path.key("classes").index(j),
                        format!("class `{c}` is listed twice"),
                        "class names are by index and must be distinct",
                    );
                }
            }
        }
        section
    }

    /// The INT8 version of a found float model: `NAME_int8.onnx` beside it.
    fn int8_sibling(&mut self, m: &Model, found: &Path, path: &FieldPath) -> Option<PathBuf> {
        if m.layout != ModelLayout::Yolov8 {
            self.error(
                path.key("precision"),
                format!(
                    "model `{}`: precision = \"int8\" is made for yolov8 models, this one is {}",
                    m.name,
                    m.layout.as_str()
                ),
                "use precision = \"float\" (the default)",
            );
            return None;
        }
        let int8 = Precision::Int8.file_for(found);
        if int8.is_file() {
            return Some(int8);
        }
        self.error(
            path.key("precision"),
            format!(
                "model `{}`: precision = \"int8\" but {} does not exist",
                m.name,
                int8.display()
            ),
            "`make setup` quantizes the yolov8 models in models/ (scripts/quantize.py); run it, or quantize yours the same way, or set precision = \"float\"",
        );
        None
    }

    fn hazards(
        &mut self,
        mut section: Section<Hazard>,
        models: &Section<Model>,
    ) -> Section<Hazard> {
        self.unique(&section, "hazards", "name", |h| &h.name);
        let model_ids = models.ids(|m| &m.name);
        for (i, h) in &mut section.items {
            let path = FieldPath::item("hazards", *i);
            self.topic_safe(path.key("name"), "hazard name", &h.name);
            if !model_ids.contains(&h.model) {
                let names: Vec<&str> = model_ids.iter().map(String::as_str).collect();
                self.error(
                    path.key("model"),
                    format!("hazard `{}` uses unknown model `{}`", h.name, h.model),
                    hint_from(&h.model, &names, "models"),
                );
            } else if let Some((_, m)) = models.items.iter().find(|(_, m)| m.name == h.model)
                && !m.classes.is_empty()
            {
                for (j, c) in h.classes.iter().enumerate() {
                    if !m.classes.contains(c) {
                        let names: Vec<&str> = m.classes.iter().map(String::as_str).collect();
                        self.error(
                            path.key("classes").index(j),
                            format!("hazard `{}`: model `{}` has no class `{c}`", h.name, m.name),
                            hint_from(c, &names, "classes"),
                        );
                    }
                }
            }
            if h.classes.is_empty() {
                self.error(
                    path.key("classes"),
                    format!("hazard `{}` lists no classes", h.name),
                    "e.g. classes = [\"fire\"]",
                );
            }
            if !(h.min_confidence > 0.0 && h.min_confidence <= 1.0) {
                self.error(
                    path.key("min_confidence"),
                    format!("min_confidence {} is not in (0, 1]", h.min_confidence),
                    "scores are probabilities; 0.4 to 0.6 is typical",
                );
            }
            let c = h.confirm;
            if c.k == 0 || c.k > c.n || c.n > 100 {
                self.error(
                    path.key("confirm"),
                    format!("confirm k = {}, n = {} needs 1 <= k <= n <= 100", c.k, c.n),
                    "e.g. confirm = { k = 2, n = 3 }: two of the last three frames",
                );
            }
            if h.min_count == 0 {
                self.error(
                    path.key("min_count"),
                    "min_count must be at least 1",
                    "a crowd rule is e.g. min_count = 8",
                );
            }
            for z in &h.zones {
                if h.exclude_zones.contains(z) {
                    self.error(
                        path.key("exclude_zones"),
                        format!("zone `{z}` is both included and excluded"),
                        "list it in one of zones and exclude_zones",
                    );
                }
            }
        }
        section
    }

    fn cameras(
        &mut self,
        mut section: Section<Camera>,
        grids: &Section<Grid>,
        hazards: &Section<Hazard>,
        credentials: &BTreeMap<String, Credential>,
        health: &Health,
    ) -> Section<Camera> {
        self.unique(&section, "cameras", "id", |c| &c.id);
        let grid_ids = grids.ids(|g| &g.id);
        let hazard_ids = hazards.ids(|h| &h.name);
        let counties: HashSet<&str> = grids
            .items
            .iter()
            .filter(|(_, g)| g.level == Some(GridLevel::County))
            .map(|(_, g)| g.id.as_str())
            .collect();
        for (i, cam) in &mut section.items {
            let path = FieldPath::item("cameras", *i);
            self.topic_safe(path.key("id"), "camera id", &cam.id);
            self.bounded(path.key("name"), "the camera name", &cam.name);
            if let Some(u) = &cam.unit {
                self.bounded(path.key("unit"), "the unit", u);
            }
            self.camera_id(cam, &path);
            if let Some([lon, lat]) = cam.location {
                if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
                    self.error(
                        path.key("location"),
                        format!("[{lon}, {lat}] is not [longitude, latitude] in degrees"),
                        "longitude first: Shuyang is about [118.77, 34.13]",
                    );
                }
            }
            if cam.health.is_some() {
                let resolved = health.thresholds_for(cam);
                self.health_thresholds(&path.key("health"), &resolved);
            }
            self.camera_urls(cam, &path);
            self.camera_login(cam, &path, credentials);
            if cam.kind == CameraKind::SocialUnit && cam.unit.is_none() {
                self.error(
                    path.key("unit"),
                    format!("social-unit camera `{}` names no owning unit", cam.id),
                    "add unit = \"...\" (the shop, school or bank): operators call the unit",
                );
            }
            match &cam.grid {
                Some(g) if !grid_ids.contains(g) => {
                    let names: Vec<&str> = grid_ids.iter().map(String::as_str).collect();
                    self.error(
                        path.key("grid"),
                        format!("camera `{}` is in unknown grid `{g}`", cam.id),
                        hint_from(g, &names, "grids"),
                    );
                }
                Some(_) => {}
                None => match &cam.device_id {
                    Some(d) if counties.contains(d.county_code()) => {
                        cam.grid = Some(d.county_code().to_owned())
                    }
                    Some(d) => self.error(
                        path.key("grid"),
                        format!(
                            "camera `{}` has no grid, and its county {} is not a grid here",
                            cam.id,
                            d.county_code()
                        ),
                        format!(
                            "add grid = \"...\", or a county [[grids]] entry with id = \"{}\"",
                            d.county_code()
                        ),
                    ),
                    None => self.error(
                        path.key("grid"),
                        format!("camera `{}` has no grid", cam.id),
                        "add grid = \"...\" (only GB/T 28181 ids can be placed under their county)",
                    ),
                },
            }
            self.zones(&cam.zones, &path);
            let zone_names: HashSet<&str> = cam.zones.iter().map(|z| z.name.as_str()).collect();
            for (j, name) in cam.hazards.iter().flatten().enumerate() {
                if !hazard_ids.contains(name) {
                    let names: Vec<&str> = hazard_ids.iter().map(String::as_str).collect();
                    self.error(
                        path.key("hazards").index(j),
                        format!("camera `{}` watches unknown hazard `{name}`", cam.id),
                        hint_from(name, &names, "hazards"),
                    );
                } else if let Some((_, h)) = hazards.items.iter().find(|(_, h)| &h.name == name)
                    && !h.zones.is_empty()
                    && !h.zones.iter().any(|z| zone_names.contains(z.as_str()))
                {
                    self.error(
                        path.key("hazards").index(j),
                        format!("hazard `{name}` only counts inside zones {:?}, and camera `{}` has none of them", h.zones, cam.id),
                        "draw the zone in this camera's zones, or remove the hazard from it",
                    );
                }
            }
        }
        section
    }

    /// A named login: it must exist, and the URL must not carry one of its own.
    fn camera_login(
        &mut self,
        cam: &mut Camera,
        path: &FieldPath,
        credentials: &BTreeMap<String, Credential>,
    ) {
        let Some(name) = &cam.credentials else {
            return;
        };
        match credentials.get(name) {
            Some(c) => {
                if !c.networks.is_empty() {
                    self.login_networks(cam, path, name, &c.networks);
                }
                cam.login = Some(c.clone());
            }
            None => {
                let names: Vec<&str> = credentials.keys().map(String::as_str).collect();
                self.error(
                    path.key("credentials"),
                    format!("camera `{}` names unknown credentials `{name}`", cam.id),
                    hint_from(name, &names, "credentials"),
                );
            }
        }
        for (field, url) in std::iter::once(("url", &cam.url))
            .chain(cam.detect_url.as_ref().map(|u| ("detect_url", u)))
        {
            if url.has_credentials() {
                self.error(
                    path.key(field),
                    format!(
                        "camera `{}` names credentials `{name}` and has a login in its {field} too",
                        cam.id
                    ),
                    "give the user and password in one place: remove them from the URL",
                );
            }
        }
    }

    /// A login with `networks` goes only to cameras whose address is in one of them.
    fn login_networks(
        &mut self,
        cam: &Camera,
        path: &FieldPath,
        name: &str,
        networks: &[ipnet::IpNet],
    ) {
        for (field, url) in std::iter::once(("url", &cam.url))
            .chain(cam.detect_url.as_ref().map(|u| ("detect_url", u)))
        {
            if !url.host_in(networks) {
                self.error(
                    path.key(field),
                    format!(
                        "camera `{}` would send login `{name}` to {}, outside its networks",
                        cam.id,
                        url.host().unwrap_or("no host")
                    ),
                    format!(
                        "give the camera's IP address in one of credentials.{name}.networks, or add its network there"
                    ),
                );
            }
        }
    }

    fn camera_id(&mut self, cam: &mut Camera, path: &FieldPath) {
        if !DeviceId::looks_like(&cam.id) {
            return;
        }
        match DeviceId::parse(&cam.id) {
            Ok(d) => {
                if !matches!(
                    d.category(),
                    DeviceCategory::Camera | DeviceCategory::VideoSource
                ) {
                    self.warn(
                        path.key("id"),
                        format!("GB/T 28181 id `{}` has type code {} ({}), not a camera", cam.id, d.device_type().0, d.device_type().1),
                        "camera ids usually have type 131 (camera) or 132 (IP camera) in digits 11-13",
                    );
                }
                let mismatch = match cam.kind {
                    CameraKind::SharpEyes => d.is_social_unit(),
                    CameraKind::SocialUnit => d.is_public_security(),
                };
                if mismatch {
                    self.warn(
                        path.key("kind"),
                        format!("camera `{}` is kind {}, but its industry code {} means {}", cam.id, cam.kind.as_str(), d.industry().0, d.industry().1),
                        "industry codes 00-03 are public security (sharp-eyes), 40-99 enterprises and residents (social-unit): check kind or the id",
                    );
                }
                cam.device_id = Some(d);
            }
            Err(e) => self.error(
                path.key("id"),
                format!("camera id {e}"),
                "fix the id, or use an id that is not 20 digits",
            ),
        }
    }

    fn camera_urls(&mut self, cam: &Camera, path: &FieldPath) {
        let urls = [
            ("url", Some(&cam.url)),
            ("detect_url", cam.detect_url.as_ref()),
        ];
        for (field, url) in urls {
            let Some(url) = url else { continue };
            if !matches!(url.scheme(), "rtsp" | "rtsps" | "file") {
                self.error(
                    path.key(field),
                    format!(
                        "camera `{}`: scheme `{}` is not supported in {url}",
                        cam.id,
                        url.scheme()
                    ),
                    "use rtsp:// or rtsps:// (or file:// to replay a recording)",
                );
            } else if url.scheme() == "rtsps" && cam.backend == Backend::Retina {
                self.error(
                    path.key(field),
                    format!(
                        "camera `{}`: {url} is RTSP over TLS, which the default backend (retina) does not speak",
                        cam.id
                    ),
                    "add backend = \"gstreamer\" to this camera (rtspsrc speaks rtsps://, checking the certificate against the system's CAs)",
                );
            } else if url.scheme() != "file" && url.host().is_none_or(str::is_empty) {
                self.error(
                    path.key(field),
                    format!("camera `{}`: {url} has no host", cam.id),
                    "e.g. rtsp://user:${CAM_PASS}@10.1.2.3:554/Streaming/Channels/102",
                );
            }
            literal_password_warning(self, path.key(field), &format!("camera `{}`", cam.id), url);
        }
    }

    fn zones(&mut self, zones: &[Zone], path: &FieldPath) {
        let mut seen = HashSet::new();
        for (j, z) in zones.iter().enumerate() {
            let zp = path.key("zones").index(j);
            if !seen.insert(z.name.as_str()) {
                self.error(
                    zp.key("name"),
                    format!("zone `{}` is defined twice", z.name),
                    "zone names are unique per camera",
                );
            }
            if z.polygon.len() < 3 {
                self.error(
                    zp.key("polygon"),
                    format!(
                        "zone `{}` has {} point(s); a polygon needs at least 3",
                        z.name,
                        z.polygon.len()
                    ),
                    "e.g. polygon = [[0.1,0.6],[0.9,0.6],[0.9,1.0],[0.1,1.0]]",
                );
                continue;
            }
            if let Some((k, _)) = z
                .polygon
                .iter()
                .enumerate()
                .find(|(_, [x, y])| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
            {
                self.error(
                    zp.key("polygon").index(k),
                    format!("zone `{}`: point {k} is outside 0..1", z.name),
                    "zone points are fractions of the image width and height",
                );
            } else if polygon_area(&z.polygon) < 1e-6 {
                self.error(
                    zp.key("polygon"),
                    format!("zone `{}` has no area (its points are on one line)", z.name),
                    "give the corners of the region in order",
                );
            }
        }
    }

    fn sensors(
        &mut self,
        section: Section<Sensor>,
        grids: &Section<Grid>,
        cameras: &Section<Camera>,
        hazards: &Section<Hazard>,
    ) -> Section<Sensor> {
        let hazard_names = hazards.ids(|h| &h.name);
        self.unique(&section, "sensors", "id", |s| &s.id);
        let grid_ids = grids.ids(|g| &g.id);
        let camera_ids = cameras.ids(|c| &c.id);
        for (i, s) in &section.items {
            let path = FieldPath::item("sensors", *i);
            self.topic_safe(path.key("id"), "sensor id", &s.id);
            self.bounded(path.key("unit"), "the unit", &s.unit);
            if !grid_ids.contains(&s.grid) {
                let names: Vec<&str> = grid_ids.iter().map(String::as_str).collect();
                self.error(
                    path.key("grid"),
                    format!("sensor `{}` is in unknown grid `{}`", s.id, s.grid),
                    hint_from(&s.grid, &names, "grids"),
                );
            }
            for (j, c) in s.cameras.iter().enumerate() {
                if !camera_ids.contains(c) {
                    self.error(
                        path.key("cameras").index(j),
                        format!("sensor `{}` is covered by unknown camera `{c}`", s.id),
                        "list ids of [[cameras]] entries",
                    );
                }
            }
            self.topic_safe(path.key("hazard"), "sensor hazard", s.hazard_name());
            for (j, h) in s.verified_by.iter().flatten().enumerate() {
                if !hazard_names.contains(h) {
                    let names: Vec<&str> = hazard_names.iter().map(String::as_str).collect();
                    self.error(
                        path.key("verified_by").index(j),
                        format!("sensor `{}` is verified by unknown hazard `{h}`", s.id),
                        hint_from(h, &names, "hazards"),
                    );
                }
            }
            if s.above.is_none() && s.below.is_none() && s.rate.is_none() {
                self.error(
                    path.clone(),
                    format!("sensor `{}` has no threshold", s.id),
                    "give above, below or rate (units per minute)",
                );
            }
            if let (Some(a), Some(b)) = (s.above, s.below)
                && b >= a
            {
                self.error(
                    path.key("below"),
                    format!("sensor `{}`: below {b} is not under above {a}", s.id),
                    "the normal range is between below and above",
                );
            }
            if s.unit.trim().is_empty() {
                self.error(
                    path.key("unit"),
                    format!("sensor `{}` has an empty unit", s.id),
                    "e.g. unit = \"°C\"",
                );
            }
            if let Some(t) = &s.topic
                && (t.contains(['+', '#']) || t.is_empty())
            {
                self.error(
                    path.key("topic"),
                    format!("sensor topic `{t}` must be a plain topic"),
                    "wildcards are not allowed: one topic per sensor",
                );
            }
        }
        section
    }

    fn dispatch(
        &mut self,
        section: Section<Dispatch>,
        grids: &Section<Grid>,
        hazards: &Section<Hazard>,
        prefix: &str,
    ) -> Section<Dispatch> {
        self.unique(&section, "dispatch", "name", |d| &d.name);
        let hazard_names = hazards.ids(|h| &h.name);
        let grid_ids = grids.ids(|g| &g.id);
        // A department's topic must not be one the service itself reads or means something
        // else on: under `{prefix}/acks` a dispatched alert would acknowledge itself.
        let reserved: Vec<String> = ["acks", "alerts", "sensors", "status", "cameras", "health"]
            .iter()
            .map(|l| format!("{prefix}/{l}"))
            .collect();
        for (i, d) in &section.items {
            let path = FieldPath::item("dispatch", *i);
            self.bounded(path.key("name"), "the name", &d.name);
            if d.name.trim().is_empty() {
                self.error(
                    path.key("name"),
                    "a department without a name",
                    "e.g. name = \"fire-brigade\"",
                );
            }
            if d.hazards.is_empty() {
                self.error(
                    path.key("hazards"),
                    format!("department `{}` takes no hazard", d.name),
                    "list [[hazards]] names, e.g. hazards = [\"fire\", \"smoke\"]",
                );
            }
            for (j, h) in d.hazards.iter().enumerate() {
                if !hazard_names.contains(h) {
                    let names: Vec<&str> = hazard_names.iter().map(String::as_str).collect();
                    self.error(
                        path.key("hazards").index(j),
                        format!("department `{}` takes unknown hazard `{h}`", d.name),
                        hint_from(h, &names, "hazards"),
                    );
                }
            }
            if let Some(g) = d.grid.as_ref().filter(|g| !grid_ids.contains(*g)) {
                let names: Vec<&str> = grid_ids.iter().map(String::as_str).collect();
                self.error(
                    path.key("grid"),
                    format!("department `{}` covers unknown grid `{g}`", d.name),
                    hint_from(g, &names, "grids"),
                );
            }
            let t = &d.topic;
            let plain = !t.is_empty()
                && t.len() <= MAX_NAME_BYTES
                && !t.contains(['+', '#', '\0'])
                && t.split('/').all(|level| !level.is_empty());
            if !plain {
                self.error(
                    path.key("topic"),
                    format!("department `{}`: `{t}` is not a plain topic", d.name),
                    "levels of letters, digits, - and _ between single slashes, no wildcards, e.g. sy/dispatch/fire-brigade",
                );
            } else if let Some(r) = reserved
                .iter()
                .find(|r| t == *r || t.starts_with(&format!("{r}/")))
            {
                self.error(
                    path.key("topic"),
                    format!(
                        "department `{}`: `{t}` is under `{r}`, which sharpeyes uses itself",
                        d.name
                    ),
                    format!("use a topic of its own, e.g. {prefix}/dispatch/{}", d.name),
                );
            }
        }
        section
    }

    fn endpoints(&mut self, config: &mut Config) {
        if let Some(m) = &config.mqtt {
            let path = FieldPath::root().key("mqtt");
            if !matches!(m.url.scheme(), "mqtt" | "mqtts" | "tcp" | "ssl") {
                self.error(
                    path.key("url"),
                    format!(
                        "MQTT scheme `{}` is not supported in {}",
                        m.url.scheme(),
                        m.url
                    ),
                    "use mqtt://host:1883 or mqtts://host:8883",
                );
            }
            if m.prefix.is_empty()
                || m.prefix.contains(['+', '#'])
                || m.prefix.starts_with('/')
                || m.prefix.ends_with('/')
            {
                self.error(
                    path.key("prefix"),
                    format!("topic prefix `{}` is not usable", m.prefix),
                    "a plain topic without wildcards or leading/trailing '/', e.g. \"sharpeyes\"",
                );
            }
            if m.password.is_some() && matches!(m.url.scheme(), "mqtt" | "tcp") {
                self.warn(
                    path.key("password"),
                    "the MQTT password goes over an unencrypted connection",
                    "use mqtts:// for brokers outside this host",
                );
            }
            if m.password.as_ref().is_some_and(|p| p.is_literal()) {
                self.warn(
                    path.key("password"),
                    "the MQTT password is written in the file",
                    "use password = \"${MQTT_PASSWORD}\" or \"${file:/run/secrets/mqtt}\"",
                );
            }
            literal_password_warning(self, path.key("url"), "the MQTT broker", &m.url);
            let tls = matches!(m.url.scheme(), "mqtts" | "ssl" | "tls");
            self.tls_files(&path, &m.url, tls, [&m.ca_file, &m.cert_file, &m.key_file]);
        }
        if let Some(r) = &config.redis {
            let path = FieldPath::root().key("redis");
            if !matches!(r.url.scheme(), "redis" | "rediss" | "unix") {
                self.error(
                    path.key("url"),
                    format!(
                        "Redis scheme `{}` is not supported in {}",
                        r.url.scheme(),
                        r.url
                    ),
                    "use redis://host:6379/0 or rediss://",
                );
            }
            literal_password_warning(self, path.key("url"), "Redis", &r.url);
            let tls = r.url.scheme() == "rediss";
            self.tls_files(&path, &r.url, tls, [&r.ca_file, &r.cert_file, &r.key_file]);
            if !tls && r.url.has_credentials() && !r.url.host_is_loopback() {
                self.warn(
                    path.key("url"),
                    format!(
                        "the Redis password, alerts and snapshots go over an unencrypted connection to {}",
                        r.url
                    ),
                    "use rediss:// (redis-server --tls-port) for a Redis outside this host",
                );
            }
        }
        let http = FieldPath::root().key("http");
        if config.http.cert_file.is_some() != config.http.key_file.is_some() {
            self.error(
                http.key(if config.http.cert_file.is_some() {
                    "key_file"
                } else {
                    "cert_file"
                }),
                "HTTPS needs both cert_file and key_file",
                "set both (PEM files), or neither to serve plain HTTP behind a TLS proxy",
            );
        }
        if config.http.open_beyond_loopback() {
            self.error(
                http.key("listen"),
                format!(
                    "the API listens on {} with no token: anyone who reaches it could read every alert and snapshot, and silence alerts",
                    config.http.listen
                ),
                "set http.token = \"${SHARPEYES_API_TOKEN}\" (or [[http.tokens]] with roles), or listen on 127.0.0.1 behind a proxy that authenticates",
            );
        }
        if config.http.listen.ip().is_unspecified()
            && config.http.allowed_hosts.is_empty()
            && config.http.public_url.is_none()
        {
            self.warn(
                http.key("allowed_hosts"),
                format!(
                    "the API listens on {} but answers only to loopback names",
                    config.http.listen
                ),
                "list the names operators reach it by in allowed_hosts (or set public_url): other names are refused, against DNS rebinding",
            );
        }
        for (i, (token, _)) in config.http.all_tokens().enumerate() {
            if token.is_literal() {
                self.warn(
                    if config.http.token.is_some() && i == 0 {
                        http.key("token")
                    } else {
                        http.key("tokens")
                            .index(i - usize::from(config.http.token.is_some()))
                    },
                    "an API token is written in the file",
                    "write it as ${VAR} or ${file:/path} so it stays out of the file",
                );
            }
        }
        if config.cameras.is_empty() {
            self.push(Problem {
                level: Level::Warning,
                ..Problem::error(
                    FieldPath::root().key("cameras"),
                    "no cameras are configured",
                )
                .hint("`sharpeyes demo` brings its own simulated cameras; `run` needs [[cameras]]")
            });
        }
    }
}

fn literal_password_warning(v: &mut Validator, path: FieldPath, what: &str, url: &SecretUrl) {
    if url.has_literal_password() {
        v.warn(
            path,
            format!("{what}: the password is written in the file"),
            "write it as ${VAR} (from the environment) or ${file:/path} so it stays out of the file",
        );
    }
}

fn find_model(path: &Path, lookup: &Lookup<'_>) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(path.display().to_string())
        };
    }
    let dirs: Vec<&Path> = std::iter::once(lookup.config_dir)
        .chain(lookup.model_dirs.iter().map(PathBuf::as_path))
        .collect();
    for d in &dirs {
        let candidate = d.join(path);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

fn polygon_area(points: &[[f64; 2]]) -> f64 {
    let n = points.len();
    let twice: f64 = (0..n)
        .map(|i| {
            let [x1, y1] = points[i];
            let [x2, y2] = points[(i + 1) % n];
            x1 * y2 - x2 * y1
        })
        .sum();
    twice.abs() / 2.0
}

fn hint_from(word: &str, known: &[&str], what: &str) -> String {
    if let Some(c) = closest(word, known) {
        return format!("did you mean `{c}`?");
    }
    let mut known: Vec<&str> = known.to_vec();
    known.sort_unstable();
    if known.is_empty() {
        format!("no {what} are defined")
    } else if known.len() <= 8 {
        format!("known {what}: {}", known.join(", "))
    } else {
        format!("{} {what} are defined; check the spelling", known.len())
    }
}
