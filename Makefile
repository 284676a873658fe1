# The two commands of the README, and the setup step both run first.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup demo test bench bench-e2e

## Install system packages, ONNX Runtime and the models (idempotent).
setup:
	@bash scripts/setup.sh

## Run the demo on embedded defaults.
demo: setup
	cargo run --release --locked -- demo

## Run every check CI runs: formatting, lints, and the whole test suite.
test: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked

## Criterion benches of the per-frame hot path; prints figures and ratios at the end.
bench: setup
	cargo bench -p sharpeyes-bench --locked

## The end-to-end harness: simulated 1080p25 cameras through the real service to a real
## broker, N = 4..48, beside a full-decode baseline. Options: make bench-e2e E2E="--help".
bench-e2e: setup
	cargo build --release --locked --bin sharpeyes
	cargo run --release --locked -p sharpeyes-bench --bin e2e -- $(E2E)
