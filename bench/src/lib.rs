//! Benchmarks of the per-frame hot path (criterion, `cargo bench -p sharpeyes-bench`) and the
//! end-to-end throughput harness for SREs.
//!
//! Each bench measures a stage against a straightforward baseline in the same run and prints
//! the ratio: absolute times on shared machines are noisy, ratios are not.
//!
//! Status: the stage benches arrive with the stages they measure.

#![forbid(clippy::print_stdout, clippy::print_stderr)]
