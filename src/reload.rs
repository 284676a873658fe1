//! Camera changes while the service runs: the configuration file read again (SIGHUP,
//! `POST /api/reload`), and cameras added or removed over the API, applied one at a time.
//!
//! Cameras added over the API are kept as TOML beside the file's text, and removed ones as
//! ids, so a reload keeps them; neither is written to the file. In a cluster they are kept in
//! Redis ([`sharpeyes_cluster::Registry`]): a change made on any node is written there
//! first, and every node takes the shared list at its next coordination step, so each camera
//! runs on the node the assignment gives it, and the changes outlive restarts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sharpeyes_alerts::{RedisConnection, RedisStore};
use sharpeyes_cluster::{ApiCameras, Registry};
use sharpeyes_config::{Config, Secret};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cameras::{Applied, Cameras};

/// Where the configuration came from, so it can be read again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file; `None` for the demo's built-in configuration (nothing to reload).
    pub file: Option<PathBuf>,
    /// Its text as loaded.
    pub text: String,
    pub model_dirs: Vec<PathBuf>,
    /// What the command line sets over the file, applied again on every reload.
    pub overrides: sharpeyes_config::Overrides,
}

/// Cameras added over the API at most: each costs a connection, a decoder and memory.
pub const MAX_API_CAMERAS: usize = 1000;

/// What a change answers: what it did, or why nothing changed.
pub type Reply = oneshot::Sender<Result<Applied, String>>;

/// A change to the running cameras, from SIGHUP or the API.
pub enum Control {
    /// Read the configuration file again and apply its cameras.
    Reload(Reply),
    /// Add a camera: the body of one `[[cameras]]` table, in TOML.
    Add(String, Reply),
    /// Remove a camera by id.
    Remove(String, Reply),
    /// In a cluster: the API's changes as Redis holds them, made on any node.
    Shared(ApiCameras),
}

/// How long a change waits for Redis in a cluster.
const REDIS_LIMIT: Duration = Duration::from_secs(3);

/// In a cluster: where the API's camera changes are shared.
pub(crate) struct SharedCameras {
    registry: Registry,
    redis: sharpeyes_config::Redis,
    conn: Option<RedisConnection>,
    /// The version of the shared changes applied here.
    version: u64,
}

impl SharedCameras {
    /// For a node of a cluster on `config`; `None` outside one.
    pub fn new(config: &Config) -> Option<Self> {
        config.cluster()?;
        let redis = config.redis.clone()?;
        Some(Self {
            registry: Registry::new(&format!("{}:cluster", redis.key_prefix)),
            redis,
            conn: None,
            version: 0,
        })
    }

    /// This node wrote `version` and applied it. When no other node wrote in between, this
    /// node is at that version, and an older list read before the write is not applied
    /// over it.
    fn wrote(&mut self, version: u64) {
        if version == self.version + 1 {
            self.version = version;
        }
    }

    /// Runs `op` on the registry within [`REDIS_LIMIT`], connecting first if need be.
    async fn with<T>(
        &mut self,
        op: impl AsyncFnOnce(&Registry, &mut RedisConnection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let unreachable = |e: String| {
            format!(
                "the cluster keeps cameras changed over the API in Redis, which does not answer ({e}); try again when it does"
            )
        };
        let result = tokio::time::timeout(REDIS_LIMIT, async {
            if self.conn.is_none() {
                let conn = RedisStore::connection(&self.redis)
                    .await
                    .map_err(|e| e.to_string())?;
                self.conn = Some(conn);
            }
            let conn = self.conn.as_mut().ok_or("no connection")?;
            op(&self.registry, conn)
                .await
                .map_err(|e| sharpeyes_config::redact_url(&e.to_string()).to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REDIS_LIMIT:?}")));
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(unreachable)
    }
}
/// Applies the changes sent to `requests`, one at a time, until `stop` turns true.
pub(crate) struct ControlLoop {
    pub cameras: Arc<Cameras>,
    /// Takes the `[[dispatch]]` departments of a reloaded file.
    pub alerts: sharpeyes_alerts::Alerts,
    pub source: ConfigSource,
    pub requests: mpsc::Receiver<Control>,
    pub stop: watch::Receiver<bool>,
    /// Cameras added over the API: (id, TOML entry).
    pub added: Vec<(String, String)>,
    /// Cameras of the file removed over the API.
    pub removed: Vec<String>,
    /// In a cluster: where `added` and `removed` are shared.
    pub shared: Option<SharedCameras>,
}

/// Runs [`ControlLoop`] until `stop`; its state outlives a panic (see [`crate::supervise`]).
pub(crate) async fn control_loop(state: &mut ControlLoop) {
    let ControlLoop {
        cameras,
        alerts,
        source,
        requests,
        stop,
        added,
        removed,
        shared,
    } = state;
    loop {
        let request = tokio::select! {
            _ = crate::stopped(stop) => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        match request {
            Control::Shared(changes) => {
                let Some(shared) = shared.as_mut() else {
                    continue;
                };
                if changes.version <= shared.version {
                    continue;
                }
                // Said once per version, not at every step, when it does not fit.
                shared.version = changes.version;
                match apply(cameras, alerts, source, &changes.added, &changes.removed).await {
                    Ok(_) => (*added, *removed) = (changes.added, changes.removed),
                    Err(e) => tracing::error!(
                        version = changes.version,
                        "the cameras changed over the API on the cluster's nodes do not fit this node's configuration file, so this node keeps its list until the next change: {e}"
                    ),
                }
            }
            Control::Reload(reply) => {
                let result = match &source.file {
                    None => {
                        Err("this configuration is built in: there is no file to reload".into())
                    }
                    Some(path) => match std::fs::read_to_string(path) {
                        Err(e) => Err(format!("{}: cannot read it: {e}", path.display())),
                        Ok(text) => {
                            let candidate = ConfigSource {
                                text,
                                ..source.clone()
                            };
                            let result = apply(cameras, alerts, &candidate, added, removed).await;
                            if result.is_ok() {
                                *source = candidate;
                            }
                            result
                        }
                    },
                };
                let _ = reply.send(result);
            }
            Control::Add(body, reply) => {
                let result = match posted_camera(&body) {
                    Err(e) => Err(e),
                    Ok(_) if added.len() >= MAX_API_CAMERAS => Err(format!(
                        "{MAX_API_CAMERAS} cameras were added over the API already: add more in the configuration file"
                    )),
                    Ok((id, _))
                        if effective(source, added, removed)
                            .is_ok_and(|c| c.camera(&id).is_some()) =>
                    {
                        Err(format!(
                            "camera `{id}` already exists: remove it first, or change it in the configuration file and reload"
                        ))
                    }
                    Ok((id, _)) if removed.contains(&id) => Err(format!(
                        "camera `{id}` is in the configuration file and was removed over the API; edit the file and reload to bring it back"
                    )),
                    Ok((id, entry)) => {
                        let mut candidate = added.clone();
                        candidate.push((id.clone(), entry));
                        let reach = match effective(source, &candidate, removed) {
                            Ok(config) => api_camera_reach(&config, &id),
                            // `apply` says what is wrong with it.
                            Err(_) => Ok(()),
                        };
                        let result = match (reach, shared.as_mut()) {
                            (Err(e), _) => Err(e),
                            (Ok(()), None) => {
                                apply(cameras, alerts, source, &candidate, removed).await
                            }
                            (Ok(()), Some(shared)) => {
                                share_add(shared, cameras, alerts, source, &candidate, removed, &id)
                                    .await
                            }
                        };
                        if result.is_ok() {
                            *added = candidate;
                        }
                        result
                    }
                };
                let _ = reply.send(result);
            }
            Control::Remove(id, reply) => {
                let exists =
                    effective(source, added, removed).is_ok_and(|c| c.camera(&id).is_some());
                let result = if !exists {
                    Err(format!("no camera `{id}`"))
                } else {
                    let (mut a, mut r) = (added.clone(), removed.clone());
                    let in_file = !a.iter().any(|(i, _)| *i == id);
                    if in_file {
                        r.push(id.clone());
                    } else {
                        a.retain(|(i, _)| *i != id);
                    }
                    let written = match shared.as_mut() {
                        None => Ok(None),
                        Some(shared) => {
                            shared
                                .with(async |registry, conn| {
                                    registry.remove(conn, &id, in_file).await.map(Some)
                                })
                                .await
                        }
                    };
                    let result = match written {
                        Ok(version) => {
                            apply(cameras, alerts, source, &a, &r)
                                .await
                                .map(|mut applied| {
                                    if let (Some(v), Some(shared)) = (version, shared.as_mut()) {
                                        applied.cluster = Some(SHARED.into());
                                        shared.wrote(v);
                                    }
                                    applied
                                })
                        }
                        Err(e) => Err(e),
                    };
                    if result.is_ok() {
                        (*added, *removed) = (a, r);
                    }
                    result
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// A camera added on this node of a cluster: checked against the file, written to Redis
/// (where another node may have added the same id first), then applied here.
async fn share_add(
    shared: &mut SharedCameras,
    cameras: &Cameras,
    alerts: &sharpeyes_alerts::Alerts,
    source: &ConfigSource,
    candidate: &[(String, String)],
    removed: &[String],
    id: &str,
) -> Result<Applied, String> {
    effective(source, candidate, removed)?;
    let entry = candidate
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, e)| e.clone())
        .unwrap_or_default();
    let written = shared
        .with(async |registry, conn| registry.add(conn, id, &entry).await)
        .await?;
    let Some(version) = written else {
        return Err(format!(
            "camera `{id}` was added on another node of the cluster already: remove it first"
        ));
    };
    let mut applied = apply(cameras, alerts, source, candidate, removed).await?;
    applied.cluster = Some(SHARED.into());
    shared.wrote(version);
    Ok(applied)
}

const SHARED: &str = "shared with every node of the cluster through Redis: the node the assignment gives the camera runs it from its next step";

/// The configuration with the API's additions and removals; every problem, with its line.
fn effective(
    source: &ConfigSource,
    added: &[(String, String)],
    removed: &[String],
) -> Result<Config, String> {
    let mut text = source.text.clone();
    for (_, entry) in added {
        text.push('\n');
        text.push_str(entry);
    }
    let origin = source
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("config/demo.toml"));
    let mut config = Config::parse(&text, &origin, &source.model_dirs)
        .map_err(|p| p.to_string())?
        .config;
    source.overrides.apply(&mut config)?;
    config.cameras.retain(|c| !removed.contains(&c.id));
    Ok(config)
}

/// Applies the file's cameras with the API's changes, and its `[[dispatch]]` departments;
/// any other section that changed is said to take a restart.
async fn apply(
    cameras: &Cameras,
    alerts: &sharpeyes_alerts::Alerts,
    source: &ConfigSource,
    added: &[(String, String)],
    removed: &[String],
) -> Result<Applied, String> {
    let config = effective(source, added, removed)?;
    let mut applied = cameras.apply(&config).await;
    alerts.set_departments(&config.dispatch);
    let (mut before, mut after) = ((**cameras.config()).clone(), config);
    before.cameras.clear();
    after.cameras.clear();
    before.dispatch.clear();
    after.dispatch.clear();
    if format!("{before:?}") != format!("{after:?}") {
        let note = "sections other than [[cameras]] changed: they take effect after a restart";
        tracing::warn!("{note}");
        applied.ignored = Some(note.into());
    }
    tracing::info!(added = ?applied.added, removed = ?applied.removed, restarted = ?applied.restarted, failed = applied.failed.len(), "cameras applied");
    Ok(applied)
}

/// A posted camera's id and its `[[cameras]]` entry, once it is known to name no secret.
///
/// The entry is written back from the parsed table, never taken as posted: appended as text,
/// a header in the body (`[[cameras]]`, `[[http.tokens]]`, `[mqtt]`) opened another section.
/// Written back, whatever the body held stays inside this one camera, where the configuration
/// check refuses what a camera does not have.
fn posted_camera(body: &str) -> Result<(String, String), String> {
    let table: toml::Table = body
        .parse()
        .map_err(|e| format!("the camera is not TOML: {e}"))?;
    refuse_secret_references(&table, "cameras")?;
    let id = match table.get("id") {
        Some(toml::Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err("the camera has no `id`: give id, name, kind, url, grid, hazards as in a [[cameras]] entry".into()),
    };
    let mut document = toml::Table::new();
    document.insert(
        "cameras".into(),
        toml::Value::Array(vec![toml::Value::Table(table)]),
    );
    let entry = toml::to_string(&document)
        .map_err(|e| format!("the camera cannot be written back as TOML: {e}"))?;
    Ok((id, entry))
}

/// Where a camera added over the API may point: inside `[ingest] allowed_networks` when it
/// is set, and with a login of the file only when that login lists its networks (checked for
/// every camera by the configuration). Otherwise an API caller could point a camera at the
/// control plane, or at their own host to receive the login.
fn api_camera_reach(config: &Config, id: &str) -> Result<(), String> {
    let Some(camera) = config.camera(id) else {
        return Ok(());
    };
    let allowed = &config.ingest.allowed_networks;
    for (field, url) in std::iter::once(("url", &camera.url))
        .chain(camera.detect_url.as_ref().map(|u| ("detect_url", u)))
    {
        if !allowed.is_empty() && !url.host_in(allowed) {
            return Err(format!(
                "cameras.{field}: {} is not an address in [ingest] allowed_networks; cameras added over the API must be given by an IP address in those networks",
                url.host().unwrap_or("no host")
            ));
        }
    }
    if let Some(name) = &camera.credentials {
        if config
            .credentials
            .get(name)
            .is_some_and(|c| c.networks.is_empty())
        {
            return Err(format!(
                "cameras.credentials: login `{name}` lists no networks, so a camera added over the API may not name it; the operator adds networks = [\"10.1.0.0/16\"] to [credentials.{name}], or write the camera's own login in its URL"
            ));
        }
    }
    Ok(())
}

/// Secrets are expanded from the operator's file only: a `${VAR}` or `${file:...}` an API
/// caller wrote would send the service's own secrets wherever the caller's URL points.
fn refuse_secret_references(table: &toml::Table, path: &str) -> Result<(), String> {
    for (key, value) in table {
        let field = format!("{path}.{key}");
        match value {
            toml::Value::String(s) => {
                let refers = Secret::new(s.as_str())
                    .references()
                    .map_or(true, |r| !r.is_empty());
                if refers {
                    return Err(format!(
                        "{field}: `${{...}}` secrets are expanded from the configuration file only, never from the API; write the camera's user and password in the URL, or name a login of the file with credentials = \"NAME\" ([credentials.NAME])"
                    ));
                }
            }
            toml::Value::Table(t) => refuse_secret_references(t, &field)?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        refuse_secret_references(t, &format!("{field}[{i}]"))?;
                    } else if let toml::Value::String(s) = item {
                        let mut one = toml::Table::new();
                        one.insert(format!("{key}[{i}]"), toml::Value::String(s.clone()));
                        refuse_secret_references(&one, path)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever is posted, the answer is one camera entry or an error that says why.
    #[test]
    fn posted_cameras_never_panic_and_stay_one_camera() {
        const SAMPLE: &str = "id = \"c1\"\nname = \"东元超市\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://u:p@10.0.0.1/x\"\ngrid = \"321322-001\"\nhazards = [\"fire\"]\nzones = [{ name = \"door\", polygon = [[0.1, 0.1], [0.5, 0.5], [0.1, 0.5]] }]\n";
        sharpeyes_testkit::hostile::check(
            "posted cameras",
            2000,
            |h| h.mangle(SAMPLE.as_bytes()),
            |bytes| {
                let Ok(body) = std::str::from_utf8(bytes) else {
                    return;
                };
                match posted_camera(body) {
                    Ok((id, entry)) => {
                        let document: toml::Table = entry.parse().expect("written back as TOML");
                        assert_eq!(document.len(), 1, "one section: {entry}");
                        let cameras = document["cameras"].as_array().expect("[[cameras]]");
                        assert_eq!(cameras.len(), 1, "{entry}");
                        assert_eq!(cameras[0]["id"].as_str(), Some(id.as_str()));
                    }
                    Err(e) => assert!(!e.is_empty()),
                }
            },
        );
    }

    #[test]
    fn a_posted_camera_may_not_name_a_secret_anywhere() {
        let ok = "id = \"c1\"\nurl = \"rtsp://admin:pa$$w0rd@10.0.0.1/ch1\"";
        assert_eq!(posted_camera(ok).unwrap().0, "c1");
        for (body, field) in [
            (
                "id = \"c1\"\nurl = \"rtsp://10.9.9.9:554/${MQTT_PASSWORD}\"",
                "cameras.url",
            ),
            (
                "id = \"c1\"\ndetect_url = \"rtsp://u:${file:/etc/shadow}@h/x\"",
                "cameras.detect_url",
            ),
            ("id = \"c1\"\nname = \"${HOME\"", "cameras.name"),
            (
                "id = \"c1\"\nzones = [{ name = \"${X}\", polygon = [] }]",
                "cameras.zones[0].name",
            ),
            ("id = \"c1\"\nhazards = [\"${X}\"]", "cameras.hazards[0]"),
        ] {
            let e = posted_camera(body).unwrap_err();
            assert!(e.starts_with(&format!("{field}:")), "{body}: {e}");
            assert!(e.contains("configuration file only"), "{e}");
        }
    }
}
