//! Writes the still picture of every simulator scene as `DIR/NAME.png` (1080p): calibration
//! frames for the INT8 models that `make setup` makes (scripts/quantize.py).
//!
//!     cargo run -p sharpeyes-ingest --example scene_pictures -- DIR

#![allow(clippy::print_stderr)] // a command-line tool's errors are its output

use std::path::PathBuf;
use std::process::ExitCode;

use sharpeyes_ingest::simulator::SceneKind;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: scene_pictures DIR");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for kind in SceneKind::ALL {
        let path = dir.join(format!("{}.png", kind.name()));
        let written = kind
            .picture(1920, 1080)
            .and_then(|p| p.save(&path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
