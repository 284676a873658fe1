//! ONNX detectors: loaded and checked once at start-up, then run on whole batches.
//!
//! Lifecycle:
//! 1. [`Runtime::load`] loads the ONNX Runtime library (once per process; later calls get
//!    the same runtime).
//! 2. [`Detector::load`] opens a `[[models]]` entry and checks that the file's inputs and
//!    outputs match the declared layout and size, and its class names the configured ones:
//!    a wrong model fails here, naming the model and what was expected, not at the first frame.
//! 3. [`Detector::detect`] runs a filled [`Batch`] and decodes each frame's detections.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use sharpeyes_config::{Model, ModelLayout};

use crate::detection::Detection;
use crate::error::Error;
use crate::postprocess::{Decoder, NmsConfig};
use crate::preprocess::{Batch, InputShape};

/// Output names of TF object-detection (SSD) graphs.
const SSD_OUTPUTS: [&str; 4] = [
    "detection_boxes:0",
    "detection_scores:0",
    "detection_classes:0",
    "num_detections:0",
];

/// The loaded ONNX Runtime library.
pub struct Runtime {
    env: Environment,
}

static RUNTIME: OnceLock<Result<Runtime, Error>> = OnceLock::new();

impl Runtime {
    /// Loads ONNX Runtime from `lib` (e.g. `.deps/onnxruntime/libonnxruntime.so.1`).
    /// The library can be loaded once per process: later calls return the first result,
    /// whatever path they name.
    pub fn load(lib: &Path) -> Result<&'static Runtime, Error> {
        RUNTIME
            .get_or_init(|| {
                let fail = |reason: String| Error::Runtime {
                    lib: lib.to_owned(),
                    reason,
                };
                let builder = ort::init_from(lib)
                    .map_err(|e| fail(format!("cannot load it: {e} (run `make setup`)")))?;
                let env = builder
                    .with_name("sharpeyes")
                    .build()
                    .map_err(|e| fail(format!("cannot start it: {e}")))?;
                Ok(Runtime { env })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// ONNX Runtime session settings beyond the model's own (`threads`). The default is what
/// the service runs, chosen by the `hot_path` bench's `session_settings` group.
#[derive(Debug, Clone, Copy)]
pub struct SessionTuning {
    /// Graph optimisation level, 0 (none) to 3 (everything ONNX Runtime has, layout
    /// changes to NCHWc included).
    pub optimization: u8,
    /// Subnormal floats as zero in the session's threads.
    pub flush_to_zero: bool,
    /// Worker threads spin while waiting for work: lower latency with `threads` > 1, CPU
    /// burnt while idle.
    pub spinning: bool,
}

impl Default for SessionTuning {
    fn default() -> Self {
        Self {
            optimization: 3,
            flush_to_zero: false,
            spinning: false,
        }
    }
}

/// Where the outputs are found, by layout.
enum Outputs {
    /// `[batch, 4 + classes, anchors]`.
    Yolov8,
    /// boxes, scores, classes, count (indices into the session outputs).
    Ssd([usize; 4]),
}

/// An ONNX detector of one `[[models]]` entry.
pub struct Detector {
    name: String,
    path: PathBuf,
    layout: ModelLayout,
    shape: InputShape,
    classes: Vec<String>,
    /// `Some(n)` when the model's batch axis is fixed: batches run in chunks of `n`.
    fixed_batch: Option<usize>,
    max_batch: usize,
    outputs: Outputs,
    session: Session,
    decoder: Decoder,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("name", &self.name)
            .field("layout", &self.layout)
            .field("shape", &self.shape)
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Opens and checks a model; see the module docs.
    pub fn load(runtime: &Runtime, spec: &Model, nms: NmsConfig) -> Result<Self, Error> {
        Self::load_tuned(runtime, spec, nms, SessionTuning::default())
    }

    /// [`Self::load`] with ONNX Runtime session settings other than the service's, for
    /// measuring them (the `hot_path` bench).
    pub fn load_tuned(
        runtime: &Runtime,
        spec: &Model,
        nms: NmsConfig,
        tuning: SessionTuning,
    ) -> Result<Self, Error> {
        let fail = |reason: String| Error::Model {
            model: spec.name.clone(),
            path: spec.path.clone(),
            reason,
        };
        if !spec.path.is_file() {
            return Err(fail(
                "the file does not exist (run `make setup`, or fix `path`)".into(),
            ));
        }
        let session = Session::builder(&runtime.env)
            .and_then(|b| {
                b.with_optimization_level(match tuning.optimization {
                    0 => GraphOptimizationLevel::Disable,
                    1 => GraphOptimizationLevel::Level1,
                    2 => GraphOptimizationLevel::Level2,
                    _ => GraphOptimizationLevel::Level3,
                })
                .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(spec.threads).map_err(Into::into))
            .and_then(|b| {
                b.with_intra_op_spinning(tuning.spinning)
                    .map_err(Into::into)
            })
            .and_then(|b| {
                if tuning.flush_to_zero {
                    b.with_flush_to_zero().map_err(Into::into)
                } else {
                    Ok(b)
                }
            })
            .and_then(|mut b| b.commit_from_file(&spec.path))
            .map_err(|e| fail(format!("not a loadable ONNX model: {e}")))?;

        let (fixed_batch, outputs) = match spec.layout {
            ModelLayout::Yolov8 => check_yolov8(&session, spec).map_err(fail)?,
            ModelLayout::Ssd => check_ssd(&session, spec).map_err(fail)?,
        };
        let classes = class_names(&session, spec, &outputs).map_err(fail)?;
        let max_batch = spec.max_batch;
        Ok(Self {
            name: spec.name.clone(),
            path: spec.path.clone(),
            layout: spec.layout,
            shape: {
                let (width, height) = spec.input_shape();
                InputShape { width, height }
            },
            classes,
            fixed_batch,
            max_batch,
            outputs,
            session,
            decoder: Decoder::new(nms),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Class names by index: from the model's metadata when it has them, else the config.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn input_shape(&self) -> InputShape {
        self.shape
    }

    pub fn layout(&self) -> ModelLayout {
        self.layout
    }

    /// A batch sized for this model.
    pub fn new_batch(&self) -> Batch {
        Batch::new(self.layout, self.shape, self.max_batch)
    }

    /// Runs inference on every frame of `batch`; `out[i]` gets frame `i`'s detections
    /// (cleared first). `out` must have at least `batch.len()` entries.
    pub fn detect(&mut self, batch: &Batch, out: &mut [Vec<Detection>]) -> Result<(), Error> {
        let n = batch.len();
        if n == 0 {
            return Ok(());
        }
        let out = &mut out[..n];
        out.iter_mut().for_each(Vec::clear);
        let chunk = self.fixed_batch.unwrap_or(n).max(1);
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            self.run_chunk(batch, start, len, &mut out[start..start + len])
                .map_err(|reason| Error::Model {
                    model: self.name.clone(),
                    path: self.path.clone(),
                    reason,
                })?;
            start += len;
        }
        Ok(())
    }

    fn run_chunk(
        &mut self,
        batch: &Batch,
        start: usize,
        len: usize,
        out: &mut [Vec<Detection>],
    ) -> Result<(), String> {
        let (w, h) = (self.shape.width as usize, self.shape.height as usize);
        let per = 3 * w * h;
        let err = |e: ort::Error| format!("inference failed: {e}");
        let outputs = match self.layout {
            ModelLayout::Yolov8 => {
                let data = &batch.planar()[start * per..(start + len) * per];
                let input = TensorRef::from_array_view(([len, 3, h, w], data)).map_err(err)?;
                self.session.run(ort::inputs![input]).map_err(err)?
            }
            ModelLayout::Ssd => {
                let data = &batch.packed()[start * per..(start + len) * per];
                let input = TensorRef::from_array_view(([len, h, w, 3], data)).map_err(err)?;
                self.session.run(ort::inputs![input]).map_err(err)?
            }
        };
        let placements = &batch.placements()[start..start + len];
        match self.outputs {
            Outputs::Yolov8 => {
                let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
                let anchors = *shape.last().unwrap_or(&0) as usize;
                let per_image = data.len() / len;
                for (i, (p, o)) in placements.iter().zip(out.iter_mut()).enumerate() {
                    self.decoder
                        .yolov8(&data[i * per_image..(i + 1) * per_image], anchors, p, o);
                }
            }
            Outputs::Ssd([bi, si, ci, ni]) => {
                let (_, boxes) = outputs[bi].try_extract_tensor::<f32>().map_err(err)?;
                let (_, scores) = outputs[si].try_extract_tensor::<f32>().map_err(err)?;
                let (_, classes) = outputs[ci].try_extract_tensor::<f32>().map_err(err)?;
                let (_, counts) = outputs[ni].try_extract_tensor::<f32>().map_err(err)?;
                let max = scores.len() / len;
                for (i, (p, o)) in placements.iter().zip(out.iter_mut()).enumerate() {
                    let count = counts.get(i).map_or(0, |c| *c as usize);
                    self.decoder.ssd(
                        &boxes[i * max * 4..(i + 1) * max * 4],
                        &scores[i * max..(i + 1) * max],
                        &classes[i * max..(i + 1) * max],
                        count,
                        p,
                        o,
                    );
                }
            }
        }
        Ok(())
    }
}

/// `(element type, dims)` of a tensor outlet; dynamic dims are -1.
fn tensor(v: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    Some((v.tensor_type()?, v.tensor_shape()?.to_vec()))
}

fn fixed(d: i64) -> Option<usize> {
    (d > 0).then_some(d as usize)
}

fn check_yolov8(session: &Session, spec: &Model) -> Result<(Option<usize>, Outputs), String> {
    let [input] = session.inputs() else {
        return Err(format!(
            "yolov8 models take one input, this one takes {}",
            session.inputs().len()
        ));
    };
    let (width, height) = spec.input_shape();
    match tensor(input.dtype()) {
        Some((TensorElementType::Float32, dims)) if dims.len() == 4 && dims[1] == 3 => {
            let height_key = match spec.input_height {
                Some(_) => "input_height",
                None => "input_size",
            };
            for (axis, key, want) in [(2, height_key, height), (3, "input_size", width)] {
                let d = dims[axis];
                if d > 0 && d != i64::from(want) {
                    return Err(format!(
                        "input `{}` is fixed at {d} on axis {axis}, but {key} = {want}; set {key} = {d}",
                        input.name(),
                    ));
                }
            }
            let [output] = session.outputs() else {
                return Err(format!(
                    "yolov8 models have one output [batch, 4 + classes, anchors], this one has {}",
                    session.outputs().len()
                ));
            };
            match tensor(output.dtype()) {
                Some((TensorElementType::Float32, o)) if o.len() == 3 => {
                    if let Some(rows) = fixed(o[1])
                        && rows <= 4
                    {
                        return Err(format!(
                            "output `{}` has {rows} rows; yolov8 needs 4 box rows plus one per class",
                            output.name()
                        ));
                    }
                    Ok((fixed(dims[0]), Outputs::Yolov8))
                }
                other => Err(format!(
                    "output `{}` is {other:?}; yolov8 needs float32 [batch, 4 + classes, anchors]",
                    output.name()
                )),
            }
        }
        other => Err(format!(
            "input `{}` is {other:?}; yolov8 needs float32 [batch, 3, height, width] (RGB 0..1)",
            input.name()
        )),
    }
}

fn check_ssd(session: &Session, spec: &Model) -> Result<(Option<usize>, Outputs), String> {
    let [input] = session.inputs() else {
        return Err(format!(
            "ssd models take one input, this one takes {}",
            session.inputs().len()
        ));
    };
    let dims = match tensor(input.dtype()) {
        Some((TensorElementType::Uint8, dims)) if dims.len() == 4 && dims[3] == 3 => dims,
        other => {
            return Err(format!(
                "input `{}` is {other:?}; ssd needs uint8 [batch, height, width, 3] (RGB)",
                input.name()
            ));
        }
    };
    let size = i64::from(spec.input_size);
    if (dims[1] > 0 && dims[1] != size) || (dims[2] > 0 && dims[2] != size) {
        return Err(format!(
            "input is fixed at {}x{}, but input_size = {}",
            dims[2], dims[1], spec.input_size
        ));
    }
    let mut idx = [0; 4];
    for (slot, name) in idx.iter_mut().zip(SSD_OUTPUTS) {
        let base = name.trim_end_matches(":0");
        *slot = session
            .outputs()
            .iter()
            .position(|o| o.name() == name || o.name() == base)
            .ok_or_else(|| {
                format!("ssd models have outputs {SSD_OUTPUTS:?}; `{name}` is missing")
            })?;
    }
    Ok((fixed(dims[0]), Outputs::Ssd(idx)))
}

/// Class names: the ONNX metadata `names` (Ultralytics writes `{0: 'smoke', 1: 'fire'}`)
/// when present, which must then agree with the config's list if one is given.
fn class_names(session: &Session, spec: &Model, outputs: &Outputs) -> Result<Vec<String>, String> {
    let from_meta = session
        .metadata()
        .ok()
        .and_then(|m| m.custom("names"))
        .and_then(|s| parse_names(&s));
    let names = match (from_meta, spec.classes.is_empty()) {
        (Some(meta), true) => meta,
        (Some(meta), false) if meta == spec.classes => meta,
        (Some(meta), false) => {
            return Err(format!(
                "the config lists classes {:?}, the model's metadata says {meta:?}; fix `classes` (or remove it to use the model's)",
                spec.classes
            ));
        }
        (None, false) => spec.classes.clone(),
        (None, true) => {
            return Err("the model has no `names` metadata: list its classes in `classes`".into());
        }
    };
    if let Outputs::Yolov8 = outputs
        && let Some(rows) = session.outputs()[0]
            .dtype()
            .tensor_shape()
            .and_then(|s| fixed(s[1]))
        && rows - 4 != names.len()
    {
        return Err(format!(
            "the model scores {} classes, but {} class names are given: {names:?}",
            rows - 4,
            names.len()
        ));
    }
    Ok(names)
}

/// Parses `{0: 'smoke', 1: 'fire'}` into `["smoke", "fire"]` (in index order).
fn parse_names(s: &str) -> Option<Vec<String>> {
    let body = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut pairs: Vec<(usize, String)> = Vec::new();
    for item in body.split(',').filter(|i| !i.trim().is_empty()) {
        let (k, v) = item.split_once(':')?;
        let name = v.trim().trim_matches(|c| c == '\'' || c == '"').to_owned();
        pairs.push((k.trim().parse().ok()?, name));
    }
    pairs.sort_by_key(|(k, _)| *k);
    pairs
        .iter()
        .enumerate()
        .all(|(i, (k, _))| i == *k)
        .then(|| pairs.into_iter().map(|(_, n)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ultralytics_names_metadata() {
        assert_eq!(
            parse_names("{0: 'smoke', 1: 'fire'}"),
            Some(vec!["smoke".into(), "fire".into()])
        );
        assert_eq!(
            parse_names("{1: 'Fall', 0: 'Normal'}"),
            Some(vec!["Normal".into(), "Fall".into()])
        );
        assert_eq!(parse_names("{0: 'a', 2: 'c'}"), None);
        assert_eq!(parse_names("smoke,fire"), None);
    }
}
