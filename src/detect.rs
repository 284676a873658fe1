//! `sharpeyes detect`: run one detector on image files and print what it finds, one JSON
//! line per image. Integrators use it to try a model; it also makes the reference check easy
//! to repeat by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use sharpeyes_analytics::stages::RgbImage;
use sharpeyes_analytics::{Detector, NmsConfig, Runtime};
use sharpeyes_config::{Config, Install, Model, ModelLayout, Precision};

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// A model of the demo config (`fire_smoke`, `person`), a file in models/, or a path.
    #[arg(long)]
    model: String,
    /// Input side in pixels (default: the model's configured size, else 640).
    #[arg(long)]
    size: Option<u32>,
    /// `float` or `int8` (the quantized sibling `make setup` makes). Default: what the demo
    /// config runs for its models, the file as given otherwise.
    #[arg(long, value_parser = ["float", "int8"])]
    precision: Option<String>,
    /// Output layout when the model is given as a file.
    #[arg(long, value_parser = ["yolov8", "ssd"], default_value = "yolov8")]
    layout: String,
    /// Minimum score of a detection.
    #[arg(long, default_value_t = NmsConfig::default().score_threshold)]
    threshold: f32,
    /// Images (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct ImageLine<'a> {
    image: String,
    model: &'a str,
    width: u32,
    height: u32,
    detections: Vec<DetectionJson<'a>>,
}

#[derive(Serialize)]
struct DetectionJson<'a> {
    class: &'a str,
    score: f32,
    /// x1, y1, x2, y2 in image pixels.
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

pub fn run(args: DetectArgs) -> Result<ExitCode, String> {
    let install = Install::discover();
    let lib = install
        .onnxruntime
        .clone()
        .ok_or("ONNX Runtime not found: run `make setup`")?;
    let spec = resolve_model(&args, &install)?;
    let runtime = Runtime::load(&lib).map_err(|e| e.to_string())?;
    let nms = NmsConfig {
        score_threshold: args.threshold,
        ..NmsConfig::default()
    };
    let mut detector = Detector::load(runtime, &spec, nms).map_err(|e| e.to_string())?;
    let mut batch = detector.new_batch();
    let mut out = vec![Vec::new()];
    let mut failed = false;
    for path in &args.images {
        let img = match image::open(path) {
            Ok(i) => i.to_rgb8(),
            Err(e) => {
                crate::commands::report_error(&format!(
                    "{}: cannot read the image: {e}",
                    path.display()
                ));
                failed = true;
                continue;
            }
        };
        batch.clear();
        let frame =
            RgbImage::new(img.width(), img.height(), img.as_raw()).map_err(|e| e.to_string())?;
        batch.push(frame).map_err(|e| e.to_string())?;
        detector
            .detect(&batch, &mut out)
            .map_err(|e| e.to_string())?;
        let line = ImageLine {
            image: path.display().to_string(),
            model: detector.name(),
            width: img.width(),
            height: img.height(),
            detections: out[0]
                .iter()
                .map(|d| DetectionJson {
                    class: detector.classes().get(d.class).map_or("?", String::as_str),
                    score: round(d.score, 3),
                    bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2].map(|v| round(v, 1)),
                })
                .collect(),
        };
        #[allow(clippy::print_stdout)] // the JSON lines are the command's output
        {
            println!(
                "{}",
                serde_json::to_string(&line).map_err(|e| e.to_string())?
            );
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `model` switched to the file of `precision` (`float`, `int8`), if one is asked for.
fn with_precision(mut model: Model, precision: Option<&str>) -> Result<Model, String> {
    let Some(precision) = precision else {
        return Ok(model);
    };
    let wanted = match precision {
        "int8" => Precision::Int8,
        _ => Precision::Float,
    };
    let float = model.precision.float_of(&model.path);
    let path = wanted.file_for(&float);
    if !path.is_file() {
        return Err(format!(
            "no {precision} version of model `{}`: {} does not exist; `make setup` makes the int8 versions of the yolov8 models in models/",
            model.name,
            path.display()
        ));
    }
    model.path = path;
    model.precision = wanted;
    Ok(model)
}

fn round(v: f32, digits: i32) -> f32 {
    let f = 10f32.powi(digits);
    (v * f).round() / f
}

/// A name of the demo config's models, else a file (in models/ or as given).
fn resolve_model(args: &DetectArgs, install: &Install) -> Result<Model, String> {
    let demo = Config::parse(
        sharpeyes_config::DEMO_TOML,
        Path::new("demo.toml"),
        &install.model_dirs(),
    )
    .ok();
    if let Some(mut m) =
        demo.and_then(|l| l.config.models.into_iter().find(|m| m.name == args.model))
    {
        m.input_size = args.size.unwrap_or(m.input_size);
        // Stills come in any shape and the models' reference detections (MODELS.md) are at
        // a square input: a still runs square, whatever the demo's 16:9 cameras use.
        m.input_height = None;
        m.max_batch = 1;
        return with_precision(m, args.precision.as_deref());
    }
    let given = PathBuf::from(&args.model);
    let path = [
        Some(given.clone()),
        install.model_dir.as_ref().map(|d| d.join(&given)),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .ok_or_else(|| {
        format!(
            "no model `{}`: not a demo model (fire_smoke, person), nor a file here or in models/",
            args.model
        )
    })?;
    let layout = if args.layout == "ssd" {
        ModelLayout::Ssd
    } else {
        ModelLayout::Yolov8
    };
    with_precision(
        Model {
            name: path
                .file_stem()
                .map_or_else(|| args.model.clone(), |s| s.to_string_lossy().into_owned()),
            path,
            layout,
            input_size: args
                .size
                .unwrap_or(if layout == ModelLayout::Ssd { 300 } else { 640 }),
            input_height: None,
            precision: Precision::Float,
            classes: Vec::new(),
            threads: 2,
            max_batch: 1,
            max_wait: std::time::Duration::ZERO,
        },
        args.precision.as_deref(),
    )
}
