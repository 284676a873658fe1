//! The one error of this crate: a model, a rule or the runtime that cannot be used, named
//! with what it is and what was expected.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// ONNX Runtime cannot be loaded or started.
    Runtime { lib: PathBuf, reason: String },
    /// A `[[models]]` entry cannot be used (at start-up), or its inference failed.
    Model {
        model: String,
        path: PathBuf,
        reason: String,
    },
    /// A hazard cannot be watched on a camera: what it asks for that the model or the camera
    /// lacks.
    Rule { hazard: String, problem: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Runtime { lib, reason } => {
                write!(f, "ONNX Runtime ({}): {reason}", lib.display())
            }
            Self::Model {
                model,
                path,
                reason,
            } => write!(f, "model `{model}` ({}): {reason}", path.display()),
            Self::Rule { hazard, problem } => write!(f, "hazard `{hazard}` {problem}"),
        }
    }
}

impl std::error::Error for Error {}
