//! `--scenario` entries: which camera shows which hazard scene, when, and for how long.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::SceneKind;

/// One scheduled scene: `fire@10s:cam3` (from 10 s on) or `fire@10s+30s:cam3` (for 30 s).
///
/// Times count from [`Simulator::start`](super::Simulator::start) returning. The camera
/// switches at the first keyframe at or after `at`, because a switch between two clips is
/// only decodable on a keyframe: expect up to one GOP of delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledScene {
    pub scene: SceneKind,
    /// Camera number as in its path: 3 is `/cam3`.
    pub camera: usize,
    /// When the scene starts, from the simulator's start.
    pub at: Duration,
    /// How long it stays; `None`: until the simulator stops.
    pub duration: Option<Duration>,
}

/// Why a `--scenario` entry does not parse: names the entry, the part and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError(pub(super) String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

const SHAPE: &str =
    "expected SCENE@START[+DURATION]:camN, e.g. fire@10s:cam3 or person@5s+30s:cam1";

impl FromStr for ScheduledScene {
    type Err = ScenarioError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let fail = |why: String| ScenarioError(format!("`{entry}`: {why}"));
        let (scene, rest) = entry
            .split_once('@')
            .ok_or_else(|| fail(format!("no `@START`; {SHAPE}")))?;
        let (times, camera) = rest
            .rsplit_once(':')
            .ok_or_else(|| fail(format!("no `:camN`; {SHAPE}")))?;
        let scene: SceneKind = scene.trim().parse().map_err(fail)?;
        let (at, duration) = match times.split_once('+') {
            Some((at, d)) => (at, Some(d)),
            None => (times, None),
        };
        let at = parse_duration(at).map_err(fail)?;
        let duration = duration.map(parse_duration).transpose().map_err(fail)?;
        if duration == Some(Duration::ZERO) {
            return Err(fail(
                "a zero duration shows nothing; leave `+DURATION` out to keep the scene".into(),
            ));
        }
        let camera = camera.trim();
        let number = camera
            .strip_prefix("cam")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                fail(format!(
                    "`{camera}` is not a camera; cameras are cam1, cam2, ..."
                ))
            })?;
        Ok(ScheduledScene {
            scene,
            camera: number,
            at,
            duration,
        })
    }
}

impl fmt::Display for ScheduledScene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.scene, humantime::format_duration(self.at))?;
        if let Some(d) = self.duration {
            write!(f, "+{}", humantime::format_duration(d))?;
        }
        write!(f, ":cam{}", self.camera)
    }
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    humantime::parse_duration(s)
        .map_err(|_| format!("`{s}` is not a duration, e.g. 10s, 1m30s or 500ms"))
}

/// The scene camera `camera` should show `elapsed` after the start: the last matching entry
/// wins, and the street is shown when none matches.
pub(crate) fn scene_at(scenario: &[ScheduledScene], camera: usize, elapsed: Duration) -> SceneKind {
    scenario
        .iter()
        .rev()
        .find(|s| {
            s.camera == camera && s.at <= elapsed && s.duration.is_none_or(|d| elapsed < s.at + d)
        })
        .map_or(SceneKind::Street, |s| s.scene)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ScheduledScene, String> {
        s.parse::<ScheduledScene>().map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            parse("fire@10s:cam3").unwrap(),
            ScheduledScene {
                scene: SceneKind::Fire,
                camera: 3,
                at: Duration::from_secs(10),
                duration: None
            }
        );
        assert_eq!(
            parse("crowd@1m30s+500ms:cam12").unwrap(),
            ScheduledScene {
                scene: SceneKind::Crowd,
                camera: 12,
                at: Duration::from_secs(90),
                duration: Some(Duration::from_millis(500)),
            }
        );
        let s = parse("person@5s+30s:cam1").unwrap();
        assert_eq!(parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn errors_name_the_entry_and_the_bad_part() {
        let e = parse("fire@10x:cam3").unwrap_err();
        assert!(
            e.contains("`fire@10x:cam3`") && e.contains("`10x` is not a duration, e.g. 10s"),
            "{e}"
        );
        let e = parse("smoke@10s:cam3").unwrap_err();
        assert!(
            e.contains("`smoke` is not a scene") && e.contains("fire"),
            "{e}"
        );
        let e = parse("fire@10s:camera3").unwrap_err();
        assert!(e.contains("`camera3` is not a camera"), "{e}");
        assert!(parse("fire@10s:cam0").unwrap_err().contains("`cam0`"));
        assert!(parse("fire:cam3").unwrap_err().contains("no `@START`"));
        assert!(parse("fire@10s").unwrap_err().contains("no `:camN`"));
        assert!(
            parse("fire@10s+0s:cam1")
                .unwrap_err()
                .contains("zero duration")
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn the_timeline_picks_the_latest_matching_entry() {
        let scenario: Vec<ScheduledScene> =
            ["fire@10s+5s:cam2", "person@12s:cam2", "crowd@0s:cam1"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let at = |cam, secs| scene_at(&scenario, cam, Duration::from_secs(secs));
        assert_eq!(at(2, 0), SceneKind::Street);
        assert_eq!(at(2, 10), SceneKind::Fire);
        assert_eq!(at(2, 12), SceneKind::Person);
        assert_eq!(at(2, 100), SceneKind::Person);
        assert_eq!(at(1, 0), SceneKind::Crowd);
        assert_eq!(at(3, 11), SceneKind::Street);
        let scenario: Vec<ScheduledScene> = vec!["fire@10s+5s:cam2".parse().unwrap()];
        assert_eq!(
            scene_at(&scenario, 2, Duration::from_secs(15)),
            SceneKind::Street
        );
    }
}
