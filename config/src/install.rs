//! Where the setup step put ONNX Runtime and the models, found without environment variables.
//!
//! `make setup` fills `<project>/.deps/onnxruntime/` and `<project>/models/`. The binary looks
//! for that project directory above its own executable (so `target/release/sharpeyes` finds
//! it), then at the directory it was built from. `SHARPEYES_HOME`, `SHARPEYES_MODEL_DIR` and
//! `ORT_DYLIB_PATH` override the search for installs laid out differently.

use std::path::{Path, PathBuf};

/// File name of the ONNX Runtime library the setup step installs.
pub const ONNXRUNTIME_LIB: &str = "libonnxruntime.so.1";

/// The directories of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The project directory, if one was found.
    pub home: Option<PathBuf>,
    pub model_dir: Option<PathBuf>,
    pub onnxruntime: Option<PathBuf>,
}

impl Install {
    /// Looks the installation up from the environment, the executable's location and the
    /// build directory, in that order.
    pub fn discover() -> Self {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        let exe = std::env::current_exe().ok();
        let built_at = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf);
        Self::discover_from(
            env("SHARPEYES_HOME"),
            exe.as_deref(),
            built_at.as_deref(),
            env("SHARPEYES_MODEL_DIR"),
            env("ORT_DYLIB_PATH"),
        )
    }

    fn discover_from(
        home: Option<PathBuf>,
        exe: Option<&Path>,
        built_at: Option<&Path>,
        model_dir: Option<PathBuf>,
        ort: Option<PathBuf>,
    ) -> Self {
        let home = home.or_else(|| {
            exe.into_iter()
                .flat_map(Path::ancestors)
                .chain(built_at)
                .find(|d| is_home(d))
                .map(Path::to_path_buf)
        });
        let model_dir = model_dir.or_else(|| {
            home.as_ref()
                .map(|h| h.join("models"))
                .filter(|d| d.is_dir())
        });
        let onnxruntime = ort.or_else(|| {
            home.as_ref()
                .map(|h| h.join(".deps/onnxruntime").join(ONNXRUNTIME_LIB))
                .filter(|p| p.is_file())
        });
        Self {
            home,
            model_dir,
            onnxruntime,
        }
    }

    /// Directories where relative model paths are looked up.
    pub fn model_dirs(&self) -> Vec<PathBuf> {
        self.model_dir.iter().cloned().collect()
    }
}

/// A project directory holds what the setup step made.
fn is_home(dir: &Path) -> bool {
    dir.join(".deps/onnxruntime").is_dir()
        || dir.join("models").is_dir() && dir.join("Cargo.toml").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_project_above_the_executable() {
        let root = tempfile::tempdir().unwrap();
        let ort = root.path().join(".deps/onnxruntime");
        std::fs::create_dir_all(&ort).unwrap();
        std::fs::write(ort.join(ONNXRUNTIME_LIB), b"").unwrap();
        std::fs::create_dir_all(root.path().join("models")).unwrap();
        let exe = root.path().join("target/release/sharpeyes");

        let found = Install::discover_from(None, Some(&exe), None, None, None);
        assert_eq!(found.home.as_deref(), Some(root.path()));
        assert_eq!(found.model_dir, Some(root.path().join("models")));
        assert_eq!(found.onnxruntime, Some(ort.join(ONNXRUNTIME_LIB)));
    }

    #[test]
    fn environment_overrides_and_missing_pieces_stay_none() {
        let empty = tempfile::tempdir().unwrap();
        let exe = empty.path().join("bin/sharpeyes");
        let found = Install::discover_from(None, Some(&exe), None, Some("/m".into()), None);
        assert_eq!(found.home, None);
        assert_eq!(found.model_dir, Some(PathBuf::from("/m")));
        assert_eq!(found.onnxruntime, None);
    }
}
