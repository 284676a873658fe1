//! sharpeyes configuration: a TOML file in, a checked [`Config`] out.
//!
//! [`Config::load`] reads the file, deserializes each section and each `[[cameras]]`,
//! `[[grids]]`... entry on its own, then cross-checks them (unknown grid, duplicate camera id,
//! zone polygon with fewer than 3 points, unknown hazard class...). It reports *every*
//! problem at once, each with file, line, column, field path and a hint ([`Problems`]).
//!
//! Validation also fills in what the file may leave out: grid levels and parents from dashed
//! ids, the county grid of a camera with a GB/T 28181 id ([`gbt28181`]), and model paths
//! resolved against the config's directory and the installed models ([`Install`]).
//!
//! Secrets (`${VAR}`, `${file:/path}`) stay unexpanded in the `Config`: it can be checked on a
//! machine without them, and nothing that prints a `Config` can leak them ([`secret`]).

#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod diag;
pub mod gbt28181;
mod install;
pub mod schema;
pub mod secret;
mod source;
mod summary;
mod validate;

use std::path::{Path, PathBuf};

use diag::{FieldPath, Problem};
use schema::{AlertOptions, Credential, Fusion, Grid, Ingest, Motion, Mqtt, Node, Readings};
pub use schema::{CAMERAS_PER_CORE, Cluster, DEFAULT_NODE_ID, Gb28181, SipAlarm, SipCharset};
pub use schema::{CameraHealth, Health, HealthThresholds, NightHours};

pub use diag::Problems;
pub use install::Install;
pub use schema::{
    Camera, Dispatch, DispatchOn, Hazard, Http, Model, ModelLayout, Precision, Redis, Sampling,
    Sensor, Severity,
};
pub use secret::{Secret, SecretError, SecretUrl, redact_url};
pub use summary::Summary;

/// The demo configuration, built into the binary so `sharpeyes demo` needs no file.
pub const DEMO_TOML: &str = include_str!("../demo.toml");

/// A checked configuration. Every reference in it resolves (grids, models, hazards, zones).
#[derive(Debug, Clone)]
pub struct Config {
    pub node: Node,
    /// `None`: the embedded broker.
    pub mqtt: Option<Mqtt>,
    /// `None`: in-memory state and a disk spool.
    pub redis: Option<Redis>,
    pub http: Http,
    pub alerts: AlertOptions,
    pub grids: Vec<Grid>,
    pub cameras: Vec<Camera>,
    pub models: Vec<Model>,
    pub hazards: Vec<Hazard>,
    pub sensors: Vec<Sensor>,
    pub fusion: Fusion,
    pub motion: Motion,
    /// `[health]`: camera health diagnosis and video loss.
    pub health: Health,
    /// How far a sensor reading's time may be from its arrival.
    pub readings: Readings,
    /// `[ingest]`: where cameras added over the API may be.
    pub ingest: Ingest,
    /// Camera logins by name (`[credentials.NAME]`).
    pub credentials: std::collections::BTreeMap<String, Credential>,
    /// `[cluster]`; see [`Config::cluster`].
    pub cluster: Option<Cluster>,
    /// `[gb28181]`: the county platform this node registers with; absent: none.
    pub gb28181: Option<Gb28181>,
    /// `[[dispatch]]`: departments that take hazards over.
    pub dispatch: Vec<Dispatch>,
}

/// A configuration that passed, with the warnings it raised.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Problems,
}

/// What the command line sets over the file: several nodes can share one file, each with
/// its own id (a Kubernetes pod name) and API address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--node-id` or `SHARPEYES_NODE_ID`, over `[node] id`.
    pub node_id: Option<String>,
    /// `--http-listen`, over `[http] listen`.
    pub http_listen: Option<std::net::SocketAddr>,
}

impl Overrides {
    /// Sets what was given on `config`, checked as the file's values are.
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        if let Some(id) = &self.node_id {
            if !validate::is_topic_safe(id) {
                return Err(format!(
                    "--node-id (or SHARPEYES_NODE_ID) `{}` cannot be used in MQTT topics and Redis keys: use 1 to 64 letters, digits, '-', '_' and '.'",
                    id.chars().take(64).collect::<String>().escape_debug()
                ));
            }
            config.node.id = id.clone();
        }
        if config.cluster().is_some() && config.node.id == DEFAULT_NODE_ID {
            return Err(format!(
                "[cluster] is on and this node's id is the default `{DEFAULT_NODE_ID}`: every node needs its own; give it with --node-id, SHARPEYES_NODE_ID (a pod name) or [node] id"
            ));
        }
        if let Some(listen) = self.http_listen {
            config.http.listen = listen;
            if config.http.open_beyond_loopback() {
                return Err(format!(
                    "--http-listen {listen}: the API would listen beyond loopback with no token; set [http] token or [[http.tokens]] in the file"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// `[cluster]` when it is on.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref().filter(|c| c.enabled)
    }

    /// Reads and checks a file. Relative model paths are looked up beside it, then in
    /// `model_dirs`.
    pub fn load(path: &Path, model_dirs: &[PathBuf]) -> Result<Loaded, Problems> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path, model_dirs),
            Err(e) => Err(Problems {
                file: path.to_owned(),
                items: vec![
                    Problem::error(FieldPath::root(), format!("cannot read the file: {e}"))
                        .hint("check the path given to --config"),
                ],
            }),
        }
    }

    /// Checks `text` as if read from `origin` (used in messages and to resolve model paths).
    pub fn parse(text: &str, origin: &Path, model_dirs: &[PathBuf]) -> Result<Loaded, Problems> {
        let fail = |items| Problems {
            file: origin.to_owned(),
            items,
        };
        let src = source::Source::parse(text).map_err(|p| fail(vec![p]))?;
        let config_dir = origin
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let lookup = validate::Lookup {
            config_dir,
            model_dirs,
        };
        let (config, mut items) = validate::validate(&src, &lookup);
        for p in &mut items {
            src.locate(p);
        }
        items.sort_by_key(|p| p.position.map(|pos| (pos.line, pos.column)));
        let problems = fail(items);
        if problems.has_errors() {
            Err(problems)
        } else {
            Ok(Loaded {
                config,
                warnings: problems,
            })
        }
    }

    pub fn grid(&self, id: &str) -> Option<&Grid> {
        self.grids.iter().find(|g| g.id == id)
    }

    /// The grids from the county down to `id` (inclusive): the alert topic and escalation path.
    pub fn grid_path(&self, id: &str) -> Vec<&Grid> {
        let mut path = Vec::new();
        let mut next = self.grid(id);
        while let Some(g) = next {
            if path.len() > 4 {
                break; // levels step down by one, so a longer chain cannot happen
            }
            path.push(g);
            next = g.parent.as_deref().and_then(|p| self.grid(p));
        }
        path.reverse();
        path
    }

    pub fn camera(&self, id: &str) -> Option<&Camera> {
        self.cameras.iter().find(|c| c.id == id)
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn hazard(&self, name: &str) -> Option<&Hazard> {
        self.hazards.iter().find(|h| h.name == name)
    }

    /// The hazards watched on a camera: its list, or every hazard whose zones it has.
    pub fn camera_hazards<'a>(
        &'a self,
        camera: &'a Camera,
    ) -> impl Iterator<Item = &'a Hazard> + 'a {
        self.hazards.iter().filter(move |h| match &camera.hazards {
            Some(list) => list.contains(&h.name),
            None => {
                h.zones.is_empty()
                    || h.zones
                        .iter()
                        .any(|z| camera.zones.iter().any(|cz| &cz.name == z))
            }
        })
    }

    /// Every secret in the configuration with the field it is in, e.g. `cameras[3].url`.
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        let mut out = Vec::new();
        if let Some(m) = &self.mqtt {
            out.push(("mqtt.url".to_owned(), m.url.secret()));
            out.extend(m.username.iter().map(|s| ("mqtt.username".to_owned(), s)));
            out.extend(m.password.iter().map(|s| ("mqtt.password".to_owned(), s)));
        }
        if let Some(r) = &self.redis {
            out.push(("redis.url".to_owned(), r.url.secret()));
        }
        if let Some(g) = &self.gb28181 {
            out.push(("gb28181.password".to_owned(), &g.password));
        }
        out.extend(self.http.token.iter().map(|s| ("http.token".to_owned(), s)));
        for (i, t) in self.http.tokens.iter().enumerate() {
            out.push((format!("http.tokens[{i}].token"), &t.token));
        }
        for (name, c) in &self.credentials {
            out.push((format!("credentials.{name}.user"), &c.user));
            out.push((format!("credentials.{name}.password"), &c.password));
        }
        for (i, c) in self.cameras.iter().enumerate() {
            out.push((
                format!("cameras[{i}].url (camera {})", c.id),
                c.url.secret(),
            ));
            if let Some(d) = &c.detect_url {
                out.push((
                    format!("cameras[{i}].detect_url (camera {})", c.id),
                    d.secret(),
                ));
            }
        }
        out
    }

    /// Expands every secret once, so a missing variable or file stops start-up with the full
    /// list rather than the first camera that needs it: each failing field, with why (the
    /// variable or file, never a value).
    pub fn check_secrets(&self) -> Result<(), Vec<(String, SecretError)>> {
        let failures: Vec<(String, SecretError)> = self
            .secrets()
            .into_iter()
            .filter_map(|(field, s)| s.expand().err().map(|e| (field, e)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// What `check-config` prints for a valid file.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

#[cfg(test)]
mod tests;
