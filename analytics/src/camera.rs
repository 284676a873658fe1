//! One camera's analysis state: its motion gate, and per model a tracker and the hazard
//! rules of the hazards it watches. Detections in, hazard events out.
//!
//! Per analysed frame:
//! 1. [`CameraAnalyzer::gate`] says whether the frame is worth inference at all.
//! 2. The caller sends it to each of [`CameraAnalyzer::models`] (through their batchers).
//! 3. Each model's detections come back to [`CameraAnalyzer::on_detections`], which tracks
//!    them and evaluates that model's rules.
//!
//! The camera's task in [`crate::Analysis`] owns it; tests and benches drive it directly.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sharpeyes_config::{Camera, Config, Severity};

use crate::detection::{BBox, Detection};
use crate::error::Error;
use crate::image::RgbImage;
use crate::motion::{Gate, MotionConfig, MotionGate};
use crate::mute::MutedRegions;
use crate::rules::HazardRule;
use crate::track::{Tracker, TrackerConfig};

/// Tuning of the per-camera stages.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalysisSettings {
    pub motion: MotionConfig,
    pub tracker: TrackerConfig,
}

impl AnalysisSettings {
    /// What `[motion]` asks for. A disabled gate still runs (its cost is a 64-cell-wide grey
    /// copy) but lets every frame through.
    pub fn from_config(config: &Config) -> Self {
        let mut settings = Self::default();
        settings.motion.forced_interval = if config.motion.enabled {
            config.motion.forced_interval
        } else {
            Duration::ZERO
        };
        settings
    }
}

/// An object in a hazard event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventObject {
    pub track_id: u64,
    pub class: String,
    pub score: f32,
    /// In frame pixels.
    pub bbox: BBox,
}

/// A confirmed hazard on a camera, with the frame that confirmed it (for the snapshot).
#[derive(Debug, Clone)]
pub struct HazardEvent<F> {
    pub camera: String,
    pub grid: String,
    pub hazard: String,
    pub severity: Severity,
    pub confidence: f32,
    pub objects: Vec<EventObject>,
    pub zone: Option<String>,
    pub detected_at: SystemTime,
    pub frame: Arc<F>,
}

struct ModelWatch {
    model: String,
    classes: Vec<String>,
    tracker: Tracker,
    rules: Vec<HazardRule>,
}

/// See the module docs.
pub struct CameraAnalyzer {
    camera: String,
    grid: String,
    gate: MotionGate,
    models: Vec<ModelWatch>,
    /// The service's muted regions, when it has any to give.
    mutes: Option<tokio::sync::watch::Receiver<Arc<MutedRegions>>>,
}

impl CameraAnalyzer {
    /// Builds the rules of every hazard `camera` watches. `classes` gives the class names of
    /// each loaded model by name (the detectors', which may come from the ONNX metadata).
    pub fn new<'a>(
        config: &Config,
        camera: &Camera,
        classes: impl Fn(&str) -> Option<&'a [String]>,
        settings: AnalysisSettings,
    ) -> Result<Self, Error> {
        let mut models: Vec<ModelWatch> = Vec::new();
        for hazard in config.camera_hazards(camera) {
            let names = classes(&hazard.model).ok_or_else(|| Error::Rule {
                hazard: hazard.name.clone(),
                problem: format!(
                    "uses model `{}`, which is not loaded; models load at start-up only: restart the service to add one",
                    hazard.model
                ),
            })?;
            let rule = HazardRule::new(hazard, names, &camera.zones)?;
            match models.iter_mut().find(|m| m.model == hazard.model) {
                Some(m) => m.rules.push(rule),
                None => models.push(ModelWatch {
                    model: hazard.model.clone(),
                    classes: names.to_vec(),
                    tracker: Tracker::new(settings.tracker),
                    rules: vec![rule],
                }),
            }
        }
        Ok(Self {
            camera: camera.id.clone(),
            grid: camera.grid().to_owned(),
            gate: MotionGate::new(settings.motion),
            models,
            mutes: None,
        })
    }

    /// Follows the muted regions of `mutes`: those set now apply at once, later changes
    /// from the next detections on.
    pub(crate) fn follow_mutes(
        &mut self,
        mut mutes: tokio::sync::watch::Receiver<Arc<MutedRegions>>,
    ) {
        let regions = mutes.borrow_and_update().clone();
        self.set_mutes(&regions);
        self.mutes = Some(mutes);
    }

    /// Gives each rule the regions muted for its hazard on this camera.
    pub fn set_mutes(&mut self, regions: &MutedRegions) {
        for rule in self.models.iter_mut().flat_map(|m| m.rules.iter_mut()) {
            rule.set_muted(regions.of(&self.camera, &rule.hazard().name));
        }
    }

    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// The models this camera's frames go to.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.model.as_str())
    }

    /// Whether to run inference on `frame`: when it moved, when the scene has been still
    /// too long, or while a hazard waits for its confirming frames.
    pub fn gate(&mut self, frame: RgbImage<'_>, now: Instant) -> Gate {
        let pending = self.pending(now);
        self.gate.check_pending(frame, now, pending)
    }

    /// Whether a hazard waits for its confirming frames (or an object its dwell time).
    pub fn pending(&self, now: Instant) -> bool {
        self.models
            .iter()
            .any(|m| m.rules.iter().any(|r| r.pending(now)))
    }

    pub fn gate_counts(&self) -> crate::motion::GateCounts {
        self.gate.counts()
    }

    /// Tracks one model's detections on a frame and evaluates that model's rules.
    pub fn on_detections<F>(
        &mut self,
        model: &str,
        detections: &[Detection],
        frame: &Arc<F>,
        (width, height): (u32, u32),
        now: Instant,
        detected_at: SystemTime,
    ) -> Vec<HazardEvent<F>> {
        let changed = (self.mutes.as_mut())
            .filter(|m| m.has_changed().unwrap_or(false))
            .map(|m| m.borrow_and_update().clone());
        if let Some(regions) = changed {
            self.set_mutes(&regions);
        }
        let Some(watch) = self.models.iter_mut().find(|m| m.model == model) else {
            return Vec::new();
        };
        let tracks = watch.tracker.update(detections, now);
        let mut events = Vec::new();
        for rule in &mut watch.rules {
            if let Some(hit) = rule.evaluate(tracks, width, height, now) {
                events.push(HazardEvent {
                    camera: self.camera.clone(),
                    grid: self.grid.clone(),
                    hazard: hit.hazard,
                    severity: hit.severity,
                    confidence: hit.confidence,
                    objects: hit
                        .objects
                        .into_iter()
                        .map(|(track_id, class, score, bbox)| EventObject {
                            track_id,
                            class: watch.classes.get(class).cloned().unwrap_or_default(),
                            score,
                            bbox,
                        })
                        .collect(),
                    zone: hit.zone,
                    detected_at,
                    frame: frame.clone(),
                });
            }
        }
        events
    }
}
