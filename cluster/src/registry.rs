//! Cameras added or removed over the API of any node, kept in Redis so that every node of
//! the cluster runs from the same list and the changes outlive restarts. Merged with the
//! configuration file every node reads:
//!
//! - `{p}:api:added`: hash, camera id -> its `[[cameras]]` entry as TOML;
//! - `{p}:api:removed`: set, ids of the file's cameras removed over the API;
//! - `{p}:api:version`: bumped by every change, so nodes poll one small key.

use redis::aio::ConnectionLike;

/// The API's changes to the file's cameras, as of `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiCameras {
    pub version: u64,
    /// (id, `[[cameras]]` entry), by id.
    pub added: Vec<(String, String)>,
    /// Ids of the file's cameras removed, sorted.
    pub removed: Vec<String>,
}

/// KEYS: added, removed, version. ARGV: id, entry. Adds the entry unless one with this id
/// was added already: the new version, or 0.
const ADD: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
"#;

/// See the module docs.
pub struct Registry {
    prefix: String,
}

impl Registry {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn keys(&self) -> [String; 3] {
        ["added", "removed", "version"].map(|k| format!("{}:api:{k}", self.prefix))
    }

    /// The version of the changes: 0 before the first.
    pub async fn version(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<u64> {
        let [_, _, version] = self.keys();
        let v: Option<u64> = redis::cmd("GET").arg(version).query_async(conn).await?;
        Ok(v.unwrap_or(0))
    }

    /// Every change, read at one version.
    pub async fn read(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<ApiCameras> {
        let [added, removed, version] = self.keys();
        let (version, added, removed): (Option<u64>, Vec<(String, String)>, Vec<String>) =
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(version)
                .cmd("HGETALL")
                .arg(added)
                .cmd("SMEMBERS")
                .arg(removed)
                .query_async(conn)
                .await?;
        let mut changes = ApiCameras {
            version: version.unwrap_or(0),
            added,
            removed,
        };
        changes.added.sort();
        changes.removed.sort();
        Ok(changes)
    }

    /// Adds `entry` as camera `id`; `None` when a camera of that id was added already, by
    /// any node. The new version otherwise.
    pub async fn add(
        &self,
        conn: &mut impl ConnectionLike,
        id: &str,
        entry: &str,
    ) -> redis::RedisResult<Option<u64>> {
        let [added, removed, version] = self.keys();
        let v: u64 = redis::cmd("EVAL")
            .arg(ADD)
            .arg(3)
            .arg(added)
            .arg(removed)
            .arg(version)
            .arg(id)
            .arg(entry)
            .query_async(conn)
            .await?;
        Ok((v > 0).then_some(v))
    }

    /// Removes camera `id`: one added over the API is forgotten; one of the file is listed
    /// as removed (`in_file`). The new version.
    pub async fn remove(
        &self,
        conn: &mut impl ConnectionLike,
        id: &str,
        in_file: bool,
    ) -> redis::RedisResult<u64> {
        let [added, removed, version] = self.keys();
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HDEL").arg(added).arg(id).ignore();
        if in_file {
            pipe.cmd("SADD").arg(removed).arg(id).ignore();
        }
        let (v,): (u64,) = pipe.cmd("INCR").arg(version).query_async(conn).await?;
        Ok(v)
    }
}
