# The two commands of the README, and the setup step both run first.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup demo test bench

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
