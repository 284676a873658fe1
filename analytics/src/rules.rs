//! Hazard rules: one camera's tracks in, a confirmed hazard out. A frame is positive when
//! enough matching objects are where the hazard says; k positives in the last n frames
//! confirm, and a cooldown keeps one hazard from alerting every frame.

use std::time::Instant;

use sharpeyes_config::schema::{Confirm, Zone};
use sharpeyes_config::{Hazard, Severity};

use crate::detection::BBox;
use crate::error::Error;
use crate::track::Track;

/// A confirmed hazard, with the objects of the frame that confirmed it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleHit {
    pub hazard: String,
    pub severity: Severity,
    /// The highest score among the matching objects.
    pub confidence: f32,
    /// (track id, class, score, box) of each matching object.
    pub objects: Vec<(u64, usize, f32, BBox)>,
    /// The include zone the first matching object stands in; `None` for hazards without zones.
    pub zone: Option<String>,
}

/// Normalised anchors are kept just below 1: feet on the frame's bottom row must still be
/// inside a zone drawn down to y = 1, which ray casting counts as outside.
const MAX_ANCHOR: f64 = 1.0 - 1e-9;

/// One hazard on one camera.
#[derive(Debug)]
pub struct HazardRule {
    hazard: Hazard,
    classes: Vec<usize>,
    include: Vec<Zone>,
    exclude: Vec<Zone>,
    /// Regions operators muted for this hazard on this camera after false alarms
    /// (normalised polygons): they act as exclude zones.
    muted: Vec<crate::Polygon>,
    /// The last n frame results, a ring written at `next`.
    window: Vec<bool>,
    next: usize,
    positives: usize,
    last_hit: Option<Instant>,
    /// The latest frame had an object that counts but for its dwell: keep looking, or a
    /// still object seen only every `forced_interval` is a new track at every look.
    dwelling: bool,
    /// (track index, include zone index) of this frame's matching objects.
    matching: Vec<(usize, Option<usize>)>,
}

impl HazardRule {
    /// Resolves the hazard's class names against the model's and its zones against the
    /// camera's. Exclude zones the camera lacks are ignored; include zones it lacks are
    /// unusable, and an error when none is left.
    pub fn new(
        hazard: &Hazard,
        class_names: &[String],
        zones: &[Zone],
    ) -> Result<HazardRule, Error> {
        let error = |problem: String| Error::Rule {
            hazard: hazard.name.clone(),
            problem,
        };
        let Confirm { k, n } = hazard.confirm;
        if k == 0 || k > n {
            return Err(error(format!(
                "has confirm k = {k}, n = {n}; needs 1 <= k <= n"
            )));
        }
        if hazard.min_count == 0 {
            return Err(error("has min_count 0; it must be at least 1".into()));
        }
        let mut classes = Vec::with_capacity(hazard.classes.len());
        for name in &hazard.classes {
            let Some(class) = class_names.iter().position(|c| c == name) else {
                let model = class_names.join(", ");
                return Err(error(format!(
                    "asks for class `{name}`, the model has {model}"
                )));
            };
            classes.push(class);
        }
        let find = |names: &[String]| -> Vec<Zone> {
            zones
                .iter()
                .filter(|z| names.contains(&z.name))
                .cloned()
                .collect()
        };
        let include = find(&hazard.zones);
        if !hazard.zones.is_empty() && include.is_empty() {
            let camera: Vec<_> = zones.iter().map(|z| z.name.as_str()).collect();
            let (wanted, camera) = (hazard.zones.join(", "), camera.join(", "));
            let problem = format!("watches zones [{wanted}], the camera has [{camera}]");
            return Err(error(problem));
        }
        Ok(HazardRule {
            hazard: hazard.clone(),
            classes,
            include,
            exclude: find(&hazard.exclude_zones),
            muted: Vec::new(),
            window: vec![false; n as usize],
            next: 0,
            positives: 0,
            last_hit: None,
            dwelling: false,
            matching: Vec::new(),
        })
    }

    pub fn hazard(&self) -> &Hazard {
        &self.hazard
    }

    /// Replaces the muted regions: objects standing in one count no more than in an exclude
    /// zone, from the next frame on.
    pub fn set_muted(&mut self, regions: Vec<crate::Polygon>) {
        self.muted = regions;
    }

    /// A positive frame is in the window but no alert has gone out for it yet, or an
    /// object waits out `min_dwell`: the camera should keep looking until it confirms or
    /// the window clears.
    pub fn pending(&self, now: Instant) -> bool {
        (self.positives > 0 || self.dwelling) && !self.cooling(now)
    }

    fn cooling(&self, now: Instant) -> bool {
        self.last_hit
            .is_some_and(|t| now.saturating_duration_since(t) < self.hazard.cooldown)
    }

    /// Feeds one analysed frame's tracks (from [`crate::Tracker::update`]). Returns a hit on
    /// a positive frame that completes k of n, outside the cooldown; a hit starts the
    /// cooldown. Allocates only for the hit itself.
    pub fn evaluate(
        &mut self,
        tracks: &[Track],
        frame_width: u32,
        frame_height: u32,
        now: Instant,
    ) -> Option<RuleHit> {
        self.matching.clear();
        self.dwelling = false;
        for (i, t) in tracks.iter().enumerate() {
            match self.matches(t, frame_width, frame_height) {
                Match::Counts(zone) => self.matching.push((i, zone)),
                Match::Dwelling => self.dwelling = true,
                Match::No => {}
            }
        }
        let positive = self.matching.len() >= self.hazard.min_count as usize;
        let expired = std::mem::replace(&mut self.window[self.next], positive);
        self.positives = self.positives + usize::from(positive) - usize::from(expired);
        self.next = (self.next + 1) % self.window.len();

        let confirmed = self.positives >= self.hazard.confirm.k as usize;
        let cooling = self.cooling(now);
        if !positive || !confirmed || cooling {
            return None;
        }
        self.last_hit = Some(now);
        let objects: Vec<_> = (self.matching.iter().map(|&(i, _)| &tracks[i]))
            .map(|t| (t.id, t.class, t.score, t.bbox))
            .collect();
        Some(RuleHit {
            hazard: self.hazard.name.clone(),
            severity: self.hazard.severity,
            confidence: objects.iter().map(|o| o.2).fold(0.0, f32::max),
            objects,
            zone: self.matching[0].1.map(|z| self.include[z].name.clone()),
        })
    }

    /// Whether the track counts for this rule, and in which include zone.
    fn matches(&self, t: &Track, frame_width: u32, frame_height: u32) -> Match {
        if !self.classes.contains(&t.class) || t.score < self.hazard.min_confidence {
            return Match::No;
        }
        // The anchor is the bottom centre of the box: where a person stands, where a fire burns.
        let anchor = [
            (f64::from(t.bbox.x1 + t.bbox.x2) / 2.0 / f64::from(frame_width))
                .clamp(0.0, MAX_ANCHOR),
            (f64::from(t.bbox.y2) / f64::from(frame_height)).clamp(0.0, MAX_ANCHOR),
        ];
        let contains = |z: &Zone| point_in_polygon(anchor, &z.polygon);
        if self.exclude.iter().any(contains)
            || self.muted.iter().any(|m| point_in_polygon(anchor, m))
        {
            return Match::No;
        }
        let zone = if self.include.is_empty() {
            None
        } else {
            match self.include.iter().position(contains) {
                Some(z) => Some(z),
                None => return Match::No,
            }
        };
        if t.dwell() < self.hazard.min_dwell {
            Match::Dwelling
        } else {
            Match::Counts(zone)
        }
    }
}

/// How one track stands against one rule.
enum Match {
    No,
    /// Everything but `min_dwell`.
    Dwelling,
    /// Counts, in this include zone (if the rule has zones).
    Counts(Option<usize>),
}

/// Ray casting: a ray from `p` towards +x crosses the boundary an odd number of times
/// when `p` is inside. Points on the bottom or right edges count as outside.
fn point_in_polygon(p: [f64; 2], polygon: &[[f64; 2]]) -> bool {
    let Some(&last) = polygon.last() else {
        return false;
    };
    let mut inside = false;
    let mut prev = last;
    for &cur in polygon {
        if (cur[1] > p[1]) != (prev[1] > p[1])
            && p[0] < (prev[0] - cur[0]) * (p[1] - cur[1]) / (prev[1] - cur[1]) + cur[0]
        {
            inside = !inside;
        }
        prev = cur;
    }
    inside
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const W: u32 = 1000;
    const H: u32 = 1000;
    const PERSON: usize = 1;
    const BOTTOM_HALF: [[f64; 2]; 4] = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]];

    fn classes() -> Vec<String> {
        ["fire", "person"].map(String::from).to_vec()
    }

    fn zone(name: &str, polygon: &[[f64; 2]]) -> Zone {
        Zone {
            name: name.into(),
            polygon: polygon.to_vec(),
        }
    }

    fn hazard() -> Hazard {
        Hazard {
            name: "loitering".into(),
            model: "coco".into(),
            classes: vec!["person".into()],
            min_confidence: 0.5,
            zones: vec![],
            exclude_zones: vec![],
            min_count: 1,
            min_dwell: Duration::ZERO,
            confirm: Confirm { k: 1, n: 1 },
            severity: Severity::Major,
            cooldown: Duration::from_secs(60),
            escalate_after: Duration::from_secs(600),
        }
    }

    /// A person whose feet are at pixel (x, y), first seen `now`.
    fn person(id: u64, x: f32, y: f32, now: Instant) -> Track {
        Track {
            id,
            class: PERSON,
            bbox: BBox {
                x1: x - 20.0,
                y1: y - 100.0,
                x2: x + 20.0,
                y2: y,
            },
            score: 0.8,
            first_seen: now,
            last_seen: now,
            hits: 1,
        }
    }

    fn ids(hit: &RuleHit) -> Vec<u64> {
        hit.objects.iter().map(|o| o.0).collect()
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn two_of_three_frames_confirm() {
        let mut h = hazard();
        h.confirm = Confirm { k: 2, n: 3 };
        h.cooldown = Duration::ZERO;
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        let t0 = Instant::now();
        let one = |t| vec![person(1, 500.0, 500.0, t)];
        assert!(rule.evaluate(&one(t0), W, H, t0).is_none());
        assert!(rule.evaluate(&[], W, H, at(t0, 1)).is_none());
        assert!(rule.evaluate(&[], W, H, at(t0, 2)).is_none());
        // The first positive has left the window: this one alone does not confirm.
        assert!(rule.evaluate(&one(at(t0, 3)), W, H, at(t0, 3)).is_none());
        assert!(rule.evaluate(&[], W, H, at(t0, 4)).is_none());
        let hit = rule.evaluate(&one(at(t0, 5)), W, H, at(t0, 5)).unwrap();
        assert_eq!(hit.hazard, "loitering");
        assert_eq!(hit.severity, Severity::Major);
        assert_eq!(ids(&hit), [1]);
        assert_eq!(hit.confidence, 0.8);
    }

    #[test]
    fn a_rule_is_pending_from_its_first_positive_until_it_confirms_or_clears() {
        let mut h = hazard();
        h.confirm = Confirm { k: 2, n: 3 };
        h.cooldown = Duration::from_secs(60);
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        let t0 = Instant::now();
        let one = |t| vec![person(1, 500.0, 500.0, t)];
        assert!(!rule.pending(t0));
        assert!(rule.evaluate(&one(t0), W, H, t0).is_none());
        assert!(rule.pending(t0), "one positive of the two needed");
        assert!(rule.evaluate(&one(at(t0, 1)), W, H, at(t0, 1)).is_some());
        assert!(
            !rule.pending(at(t0, 1)),
            "confirmed: cooling down, nothing to hurry"
        );
        // A lone positive that leaves the window clears it.
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        rule.evaluate(&one(t0), W, H, t0);
        for s in 1..=3 {
            rule.evaluate(&[], W, H, at(t0, s));
        }
        assert!(!rule.pending(at(t0, 3)));
    }

    #[test]
    fn person_inside_the_zone_triggers_and_outside_does_not() {
        let mut h = hazard();
        h.zones = vec!["bank".into(), "not-on-this-camera".into()];
        let zones = [zone("bank", &BOTTOM_HALF)];
        let mut rule = HazardRule::new(&h, &classes(), &zones).unwrap();
        let t0 = Instant::now();
        // Head in the bottom half, feet in the top half: outside.
        let outside = [person(1, 500.0, 450.0, t0)];
        assert!(rule.evaluate(&outside, W, H, t0).is_none());
        // Feet on the frame's last row: inside a zone drawn down to y = 1.
        let inside = [person(2, 500.0, 1000.0, t0), outside[0]];
        let hit = rule.evaluate(&inside, W, H, at(t0, 1)).unwrap();
        assert_eq!(hit.zone.as_deref(), Some("bank"));
        assert_eq!(ids(&hit), [2]);
    }

    #[test]
    fn a_muted_region_suppresses_there_only_and_unmuting_restores_it() {
        let mut h = hazard();
        h.cooldown = Duration::ZERO;
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        let t0 = Instant::now();
        // The false alarm stood in the bottom half's left quarter.
        let left_quarter = vec![[0.0, 0.5], [0.25, 0.5], [0.25, 1.0], [0.0, 1.0]];
        rule.set_muted(vec![left_quarter.clone()]);
        let muted = [person(1, 100.0, 800.0, t0)];
        let elsewhere = [person(2, 600.0, 800.0, t0)];
        assert!(rule.evaluate(&muted, W, H, t0).is_none(), "muted");
        let hit = rule.evaluate(&elsewhere, W, H, at(t0, 1)).unwrap();
        assert_eq!(
            ids(&hit),
            [2],
            "the same hazard elsewhere on the camera alerts"
        );
        // Both at once: only the one outside the region is in the alert.
        let both = [muted[0], elsewhere[0]];
        let hit = rule.evaluate(&both, W, H, at(t0, 2)).unwrap();
        assert_eq!(ids(&hit), [2]);

        rule.set_muted(Vec::new());
        let hit = rule.evaluate(&muted, W, H, at(t0, 3));
        assert!(hit.is_some(), "unmuted, the region alerts again");
    }

    #[test]
    fn exclude_zone_suppresses() {
        let mut h = hazard();
        h.exclude_zones = vec!["doorway".into()];
        let zones = [zone("doorway", &BOTTOM_HALF)];
        let mut rule = HazardRule::new(&h, &classes(), &zones).unwrap();
        let t0 = Instant::now();
        assert!(
            rule.evaluate(&[person(1, 500.0, 800.0, t0)], W, H, t0)
                .is_none()
        );
        let hit = rule.evaluate(&[person(2, 500.0, 300.0, t0)], W, H, at(t0, 1));
        assert_eq!(hit.unwrap().zone, None);
    }

    #[test]
    fn count_rule_needs_min_count_objects() {
        let mut h = hazard();
        h.min_count = 3;
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        let t0 = Instant::now();
        let mut crowd: Vec<Track> = (0..2)
            .map(|i| person(i, 100.0 + 200.0 * i as f32, 500.0, t0))
            .collect();
        // A fire does not make a crowd.
        crowd.push(Track {
            class: 0,
            ..person(9, 900.0, 500.0, t0)
        });
        assert!(rule.evaluate(&crowd, W, H, t0).is_none());
        crowd.push(person(3, 700.0, 500.0, t0));
        let hit = rule.evaluate(&crowd, W, H, at(t0, 1)).unwrap();
        assert_eq!(ids(&hit), [0, 1, 3]);
    }

    #[test]
    fn no_hit_until_dwell_reaches_min_dwell() {
        let mut h = hazard();
        h.min_dwell = Duration::from_secs(30);
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        let t0 = Instant::now();
        let seen_until = |secs| {
            [Track {
                last_seen: at(t0, secs),
                ..person(1, 500.0, 500.0, t0)
            }]
        };
        assert!(rule.evaluate(&seen_until(0), W, H, t0).is_none());
        assert!(rule.evaluate(&seen_until(29), W, H, at(t0, 29)).is_none());
        assert!(rule.evaluate(&seen_until(30), W, H, at(t0, 30)).is_some());
    }

    /// Under the motion gate a still object is analysed only every `forced_interval`
    /// (10 s), longer than the tracker keeps an unseen track (3 s): its dwell would restart
    /// at every look and never reach `min_dwell`. Waiting out a dwell keeps the camera looking.
    #[test]
    fn an_object_waiting_out_its_dwell_keeps_the_rule_pending() {
        let mut h = hazard();
        h.min_dwell = Duration::from_secs(5);
        h.zones = vec!["bank".into()];
        let zones = [zone("bank", &BOTTOM_HALF)];
        let mut rule = HazardRule::new(&h, &classes(), &zones).unwrap();
        let t0 = Instant::now();
        let seen_until = |x, y, secs| {
            [Track {
                last_seen: at(t0, secs),
                ..person(1, x, y, t0)
            }]
        };
        assert!(
            rule.evaluate(&seen_until(500.0, 800.0, 0), W, H, t0)
                .is_none()
        );
        assert!(rule.pending(t0), "in the zone, 5 s to go");
        assert!(
            rule.evaluate(&seen_until(500.0, 800.0, 2), W, H, at(t0, 2))
                .is_none()
        );
        assert!(rule.pending(at(t0, 2)));
        // Outside the zone, or gone: nothing to wait for.
        assert!(
            rule.evaluate(&seen_until(500.0, 300.0, 3), W, H, at(t0, 3))
                .is_none()
        );
        assert!(!rule.pending(at(t0, 3)));
        assert!(rule.evaluate(&[], W, H, at(t0, 4)).is_none());
        assert!(!rule.pending(at(t0, 4)));
    }

    #[test]
    fn cooldown_holds_back_the_second_hit() {
        let h = hazard();
        let mut rule = HazardRule::new(&h, &classes(), &[]).unwrap();
        let t0 = Instant::now();
        let mut frame = |t: Instant| {
            let tracks = [person(1, 500.0, 500.0, t)];
            rule.evaluate(&tracks, W, H, t).is_some()
        };
        assert!(frame(t0));
        assert!(!frame(t0 + Duration::from_secs(1)));
        assert!(!frame(t0 + h.cooldown - Duration::from_millis(1)));
        assert!(frame(t0 + h.cooldown));
        assert!(!frame(t0 + h.cooldown + Duration::from_secs(1)));
    }

    #[test]
    fn unknown_class_and_missing_zones_are_named() {
        let mut h = hazard();
        h.name = "fire".into();
        h.classes = vec!["flame".into()];
        let err = HazardRule::new(&h, &["smoke".into(), "fire".into()], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hazard `fire` asks for class `flame`, the model has smoke, fire"
        );
        h.classes = vec!["fire".into()];
        h.zones = vec!["kitchen".into()];
        let err = HazardRule::new(&h, &classes(), &[zone("yard", &BOTTOM_HALF)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hazard `fire` watches zones [kitchen], the camera has [yard]"
        );
        h.zones.clear();
        h.confirm = Confirm { k: 0, n: 3 };
        let err = HazardRule::new(&h, &classes(), &[]).unwrap_err();
        assert!(matches!(err, Error::Rule { hazard, .. } if hazard == "fire"));
    }

    #[test]
    fn ray_casting_on_a_concave_polygon() {
        // A U shape: the notch between the arms is outside.
        let u = [
            [0.0, 0.0],
            [0.3, 0.0],
            [0.3, 0.6],
            [0.7, 0.6],
            [0.7, 0.0],
            [1.0, 0.0],
            [1.0, 1.0],
            [0.0, 1.0],
        ];
        assert!(point_in_polygon([0.1, 0.1], &u));
        assert!(point_in_polygon([0.9, 0.3], &u));
        assert!(point_in_polygon([0.5, 0.8], &u));
        assert!(!point_in_polygon([0.5, 0.3], &u));
        assert!(!point_in_polygon([1.5, 0.5], &u));
        assert!(!point_in_polygon([0.5, 0.5], &[[0.0, 0.0], [1.0, 1.0]]));
        assert!(!point_in_polygon([0.5, 0.5], &[]));
    }
}
