//! `sharpeyes demo`: as much of the mission as is built, on embedded defaults.
//!
//! Today: the demo configuration is loaded and checked, every demo model is loaded into
//! ONNX Runtime (with its start-up checks), and each demo camera's hazard rules run on a
//! fixture still fed as a stream of frames, printing the hazard events they confirm. The
//! live path (simulated RTSP cameras, MQTT alerts) replaces the stills as it lands.

#![allow(clippy::print_stdout)] // the demo's output is for the person running it

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sharpeyes_analytics::{
    AnalysisSettings, CameraAnalyzer, Detector, NmsConfig, RgbImage, Runtime,
};
use sharpeyes_config::{Config, Install};

use crate::commands::{NOT_BUILT, print_loaded, print_problems, report_error};

/// The still each demo camera sees, by position in `config/demo.toml`: the shop camera a
/// fire, the river-bank camera a person standing on the bank, the square a person, and the
/// gate a quiet scene.
const SCENES: [&str; 4] = [
    "synthetic_fire.png",
    "camera.png",
    "astronaut.png",
    "coffee.png",
];

/// Frames per camera, and the time between them: enough for k-of-n and dwell rules.
const FRAMES: u32 = 6;
const FRAME_INTERVAL: Duration = Duration::from_secs(2);

pub fn run() -> ExitCode {
    let install = Install::discover();
    println!("sharpeyes demo: embedded defaults (config/demo.toml built into the binary)");
    let origin = install.home.as_ref().map_or_else(
        || Path::new("config/demo.toml").to_owned(),
        |h| h.join("config/demo.toml"),
    );
    let config = match Config::parse(sharpeyes_config::DEMO_TOML, &origin, &install.model_dirs()) {
        Ok(loaded) => {
            print_loaded(&loaded);
            loaded.config
        }
        Err(problems) => {
            print_problems(&problems);
            report_error("the demo configuration does not load here; run `make setup` first");
            return ExitCode::from(2);
        }
    };
    match analyse_stills(&config, &install) {
        Ok(events) => println!("\n{events} hazard event(s) confirmed on the fixture stills."),
        Err(e) => {
            report_error(&e);
            return ExitCode::from(2);
        }
    }
    println!("\nNot built yet, so the demo stops here:");
    for (part, what) in NOT_BUILT {
        println!("  - {part}: {what}");
    }
    ExitCode::SUCCESS
}

/// Loads the models and runs every camera's rules on its still; returns the events seen.
fn analyse_stills(config: &Config, install: &Install) -> Result<usize, String> {
    let lib = install
        .onnxruntime
        .as_ref()
        .ok_or("ONNX Runtime not found: run `make setup`")?;
    let runtime = Runtime::load(lib)?;
    println!("\nONNX Runtime: {}", lib.display());
    let mut detectors = HashMap::new();
    for spec in &config.models {
        let started = Instant::now();
        let d = Detector::load(runtime, spec, NmsConfig::default()).map_err(|e| e.to_string())?;
        println!(
            "model {:<12} loaded in {:>4} ms, classes {:?}",
            spec.name,
            started.elapsed().as_millis(),
            d.classes()
        );
        let batch = d.new_batch();
        detectors.insert(spec.name.clone(), (d, batch));
    }
    let images = install
        .home
        .as_ref()
        .map(|h| h.join("fixtures/images"))
        .ok_or("fixtures/images not found")?;

    println!(
        "\nAnalytics on fixture stills, {FRAMES} frames {}s apart per camera (stills do not move, so the motion gate is bypassed):",
        FRAME_INTERVAL.as_secs()
    );
    let start = Instant::now();
    let mut events = 0;
    // One frame at a time: a single detection list, reused.
    let mut out = vec![Vec::new()];
    for (camera, scene) in config.cameras.iter().zip(SCENES.iter().cycle()) {
        let img = image::open(images.join(scene))
            .map_err(|e| format!("{scene}: {e}"))?
            .to_rgb8();
        let (w, h) = img.dimensions();
        let frame = Arc::new(img.into_raw());
        let mut analyzer = CameraAnalyzer::new(
            config,
            camera,
            |m| detectors.get(m).map(|(d, _)| d.classes()),
            AnalysisSettings::default(),
        )
        .map_err(|e| format!("camera {}: {e}", camera.id))?;
        let models: Vec<String> = analyzer.models().map(str::to_owned).collect();
        println!(
            "  camera {} {} sees {scene}; models {models:?}",
            camera.id, camera.name
        );
        for step in 0..FRAMES {
            let now = start + FRAME_INTERVAL * step;
            for model in &models {
                let (det, batch) = detectors
                    .get_mut(model)
                    .ok_or_else(|| format!("model {model} not loaded"))?;
                batch.clear();
                batch
                    .push(RgbImage::new(w, h, &frame).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                det.detect(batch, &mut out).map_err(|e| e.to_string())?;
                for e in
                    analyzer.on_detections(model, &out[0], &frame, (w, h), now, SystemTime::now())
                {
                    events += 1;
                    let grid: Vec<&str> = config
                        .grid_path(&e.grid)
                        .iter()
                        .map(|g| g.name.as_str())
                        .collect();
                    let boxes: Vec<String> = e
                        .objects
                        .iter()
                        .map(|o| {
                            format!(
                                "#{} {} {:.2} [{:.0},{:.0},{:.0},{:.0}]",
                                o.track_id,
                                o.class,
                                o.score,
                                o.bbox.x1,
                                o.bbox.y1,
                                o.bbox.x2,
                                o.bbox.y2
                            )
                        })
                        .collect();
                    println!(
                        "    t=+{:>2}s HAZARD {} ({}) confidence {:.2}{} in {}: {}",
                        (FRAME_INTERVAL * step).as_secs(),
                        e.hazard,
                        e.severity.as_str(),
                        e.confidence,
                        e.zone
                            .as_ref()
                            .map_or(String::new(), |z| format!(" in zone {z}")),
                        grid.join(" / "),
                        boxes.join(", ")
                    );
                }
            }
        }
    }
    Ok(events)
}
