//! The configuration fixtures of `fixtures/config/`, and the small pieces tests put around
//! them. Crates whose own unit tests cannot use this crate include the same files.

use std::path::Path;

/// The grid hierarchy: county 321322, town -001, village -003, grid -07, with centres.
pub const GRIDS: &str = include_str!("../../fixtures/config/grids.toml");
/// The fire detector at 320 and the fire hazard.
pub const FIRE: &str = include_str!("../../fixtures/config/fire.toml");
/// The grid the test cameras stand in.
pub const GRID: &str = "321322-001-003-07";
/// The topic path of [`GRID`]'s alerts: `{prefix}/alerts/{GRID_TOPIC}/{hazard}`.
pub const GRID_TOPIC: &str = "321322/321322-001/321322-001-003/321322-001-003-07";
/// The GB/T 28181 id of the first test camera.
pub const CAMERA: &str = "32132200531320000001";

/// A `[[cameras]]` entry: a social-unit camera in [`GRID`] watching fire, at `url`.
pub fn fire_camera(id: &str, url: &str) -> String {
    format!(
        r#"
[[cameras]]
id = "{id}"
name = "东元超市门口"
kind = "social-unit"
unit = "东元超市"
url = "{url}"
grid = "{GRID}"
hazards = ["fire"]
"#
    )
}

/// An `[[http.tokens]]` entry: `token` with `role` (`viewer`, `operator` or `admin`).
pub fn role_token(token: &str, role: &str) -> String {
    format!("\n[[http.tokens]]\ntoken = \"{token}\"\nrole = \"{role}\"\n")
}

/// A service's own sections: `[node]` (`node` as its id, data under `dir`), the broker on
/// loopback `broker` with topic `prefix`, the API on a port it picks (`--ready-file` says
/// which) with `token` when given; then the grids and the fire fixture.
pub fn service(dir: &Path, node: &str, broker: u16, prefix: &str, token: Option<&str>) -> String {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    format!(
        r#"[node]
id = "{node}"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
prefix = "{prefix}"

[http]
listen = "127.0.0.1:0"
{token}
{GRIDS}
{FIRE}"#,
        data = dir.join("data").display(),
    )
}

/// Replaces the value of `key` in the first line that sets it in `toml` (`key = ...`):
/// a fixture with one setting changed. Panics when no line sets `key`.
pub fn with(toml: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let mut done = false;
    let lines: Vec<String> = toml
        .lines()
        .map(|line| {
            if !done && line.trim_start().starts_with(&prefix) {
                done = true;
                format!("{key} = {value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(done, "no line sets `{key}` in:\n{toml}");
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_setting_changes_and_the_rest_stays() {
        let changed = with(FIRE, "input_size", "640");
        assert!(changed.contains("input_size = 640"));
        assert!(!changed.contains("input_size = 320"));
        assert_eq!(changed.lines().count(), FIRE.lines().count());
    }

    #[test]
    #[should_panic(expected = "no line sets `nothing`")]
    fn a_key_the_fixture_lacks_is_a_mistake() {
        with(FIRE, "nothing", "1");
    }
}
