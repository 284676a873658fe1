#!/usr/bin/env bash
# Builds the folder gpu_bench.py reads on a GPU machine that has no network: 1080p clips,
# the detectors with float16 weights (half the bytes to carry; restored to float32 there),
# PyNvVideoCodec without its samples and source, and onnx2torch. About 60 MB.
#
#   bench/gpu/prepare.sh DIR
#
# Needs gst-launch-1.0 with x264enc/x265enc (scripts/setup.sh installs them), the
# project's venv (.deps/venv, for onnx) and pip access to PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: prepare.sh DIR}
shared=${SHARPEYES_SHARED:-$here/../shared}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out"

# Clips: a moving ball under sensor-like grain, as the simulator's streams are.
# intra: every picture a keyframe of about the size a 4 Mbit/s camera's keyframe has.
clip() { # frames encoder file
    gst-launch-1.0 -q compositor name=c sink_1::alpha=0.12 \
        ! video/x-raw,width=1920,height=1080,framerate=25/1 ! videoconvert ! video/x-raw,format=I420 \
        ! $2 ! mp4mux ! filesink location="$3" \
        videotestsrc pattern=ball num-buffers="$1" ! video/x-raw,width=1920,height=1080,framerate=25/1 ! c. \
        videotestsrc pattern=snow num-buffers="$1" ! video/x-raw,width=1920,height=1080,framerate=25/1 ! c.
}
[ -s h264_gop50.mp4 ] || clip 250 "x264enc bitrate=4000 key-int-max=50 bframes=0 tune=zerolatency speed-preset=veryfast option-string=scenecut=0 ! h264parse" h264_gop50.mp4
[ -s h264_intra.mp4 ] || clip 30 "x264enc bitrate=21000 key-int-max=1 bframes=0 tune=zerolatency speed-preset=veryfast ! h264parse" h264_intra.mp4
[ -s h265_intra.mp4 ] || clip 30 "x265enc bitrate=15000 key-int-max=1 speed-preset=ultrafast tune=zerolatency ! h265parse" h265_intra.mp4

cp "$shared/fixtures/images/synthetic_fire.png" "$shared/fixtures/images/camera.png" .

for m in fire_smoke_yolov8 person_fall_yolov8s; do
    [ -s "$m.f16.onnx" ] || "$here/.deps/venv/bin/python" - "$shared/models/$m.onnx" "$m.f16.onnx" <<'EOF'
import sys, numpy as np, onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
for init in m.graph.initializer:
    if init.data_type == onnx.TensorProto.FLOAT:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
onnx.save(m, sys.argv[2])
EOF
done

if [ ! -s pynvvideocodec.tar.xz ]; then
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 -d "$tmp" PyNvVideoCodec==2.2.4 onnx2torch==1.5.15
    (cd "$tmp" && unzip -q pynvvideocodec-*.whl 'PyNvVideoCodec/*' 'pynvvideocodec./*' \
        -x 'PyNvVideoCodec/libavformat.so' 'PyNvVideoCodec/libavformat.so.63.1.101' \
           'PyNvVideoCodec/libavutil.so' 'PyNvVideoCodec/libavutil.so.61.1.101')
    tar -C "$tmp" -cJf pynvvideocodec.tar.xz PyNvVideoCodec pynvvideocodec.
    cp "$tmp"/onnx2torch-*.whl .
    rm -rf "$tmp"
fi
du -sh "$out"
