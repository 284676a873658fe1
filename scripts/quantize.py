"""Static INT8 quantization of the YOLOv8 detectors, run by `make setup`.

    quantize.py FLOAT.onnx INT8.onnx FIXTURE_DIR [SCENE_DIR]

QDQ format, per-channel weights (int8) and per-tensor activations (uint8), calibrated with
min/max ranges on the fixture images at both input sizes the service uses (320 and 640).
The calibration set is the fixtures as they are, flipped, cropped, darkened, blurred, and
pasted small onto a textured grey ground the way the simulator composes its scenes, plus
near-flat frames (a covered lens, night, fog): street-like frames with small objects are in
range as well as close-ups and pictures with nothing in them. SCENE_DIR adds the
simulator's scene pictures (`scene_pictures` example of sharpeyes-ingest), which is what
keeps the person model's scores within 0.05 on the crowd scene.

The detection head after the last convolutions (DFL softmax, box decoding, class sigmoid,
the final concat) stays in float: it mixes pixel coordinates with 0..1 scores in one
tensor, which a single uint8 scale cannot hold without moving boxes by several pixels.

Deterministic for a given model, fixtures and ONNX Runtime version: no random draws.
"""

import os
import re
import sys
import tempfile

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image, ImageFilter

SIZES = (320, 640)
IMAGES = ("astronaut.png", "camera.png", "coffee.png", "synthetic_fire.png")
PAD = 114


def letterbox(image, size):
    """Bilinear resize into a size x size square padded with 114, as the service does."""
    w, h = image.size
    scale = min(size / w, size / h)
    nw, nh = round(w * scale), round(h * scale)
    canvas = Image.new("RGB", (size, size), (PAD, PAD, PAD))
    canvas.paste(image.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    array = np.asarray(canvas, dtype=np.float32) / 255.0
    return array.transpose(2, 0, 1)[None]


def ground(width, height):
    """A textured grey ground, like the simulator's street, without randomness."""
    y, x = np.mgrid[0:height, 0:width]
    texture = 110 + 25 * np.sin(x / 7.0) * np.cos(y / 11.0) + 15 * np.sin((x + y) / 3.0)
    grey = np.clip(texture, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey, grey, grey], axis=-1)).filter(ImageFilter.SMOOTH)


def calibration_images(fixtures, scenes=None):
    out = []
    if scenes:
        for name in sorted(os.listdir(scenes)):
            if name.endswith(".png"):
                out.append(Image.open(os.path.join(scenes, name)).convert("RGB"))
    for name in IMAGES:
        image = Image.open(os.path.join(fixtures, name)).convert("RGB")
        w, h = image.size
        out.append(image)
        out.append(image.transpose(Image.FLIP_LEFT_RIGHT))
        out.append(image.crop((w // 4, h // 4, w, h)))
        out.append(image.crop((0, 0, 3 * w // 4, 3 * h // 4)))
        out.append(Image.eval(image, lambda v: v // 2))
        out.append(image.filter(ImageFilter.GaussianBlur(8)))
        for fraction, at in ((0.25, (0.1, 0.5)), (0.4, (0.55, 0.35))):
            scene = ground(1280, 720)
            small = image.resize((int(w * 720 * fraction / h), int(720 * fraction)))
            scene.paste(small, (int(1280 * at[0]), int(720 * at[1])))
            out.append(scene)
    # Pictures with nothing in them: a covered lens, a dark night, a dome in fog.
    for level, spread in ((30, 8), (114, 20), (200, 10)):
        y, x = np.mgrid[0:720, 0:1280]
        grey = np.clip(level + spread * np.sin(x / 200.0) * np.cos(y / 150.0), 0, 255)
        grey = grey.astype(np.uint8)
        out.append(Image.fromarray(np.stack([grey, grey, grey], axis=-1)))
    return out


class Frames(CalibrationDataReader):
    def __init__(self, input_name, fixtures, scenes):
        images = calibration_images(fixtures, scenes)
        self.feeds = [{input_name: letterbox(i, s)} for s in SIZES for i in images]

    def get_next(self):
        return self.feeds.pop() if self.feeds else None


# Layers that stay in float besides the head, per model (by file stem), found with the gate
# of tests/precision.rs: with its stem convolution and the head's last 1x1 convolutions in
# INT8, the person model moves scores by up to 0.06 on the crowd scene; with its first three
# blocks in INT8, the fire model moves them by up to 0.09 on keyframes of the simulator's
# noisy 4 Mbit/s streams (0.18 on their delta frames): sensor noise is what those blocks
# see most of. "first": the stem convolution (model.0); "early": the first three blocks
# (model.0 to model.2, the stem, the second convolution and the first C2f); "last": the
# head's last 1x1 convolutions.
SENSITIVE = {
    "fire_smoke_yolov8": ("early", "last"),
    "person_fall_yolov8s": ("first", "last"),
}


def sensitive(model, stem):
    """Nodes of `model` kept in float for the SENSITIVE entry of `stem`."""
    kinds = SENSITIVE.get(stem, ())
    out = []
    for n in model.graph.node:
        if "first" in kinds and n.name.startswith("/model.0/"):
            out.append(n.name)
        if "early" in kinds and re.match(r"/model\.[012]/", n.name):
            out.append(n.name)
        if "last" in kinds and re.match(r"/model\.\d+/cv[23]\.\d/cv[23]\.\d\.2/", n.name):
            out.append(n.name)
    return out


def head(model):
    """Nodes of the YOLOv8 detection head that stay in float (see the module doc)."""
    blocks = [
        n.name.split("/")[1].split(".")[1]
        for n in model.graph.node
        if n.name.startswith("/model.")
    ]
    numbered = [int(b) for b in blocks if b.isdigit()]
    if not numbered:
        return []
    last = max(numbered)
    prefix = f"/model.{last}/"
    kept_ops = {"Conv"}
    return [
        n.name
        for n in model.graph.node
        if n.name.startswith(prefix) and n.op_type not in kept_ops
    ]


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    source, target, fixtures = sys.argv[1:4]
    scenes = sys.argv[4] if len(sys.argv) == 5 else None
    model = onnx.load(source)
    excluded = head(model)
    if not excluded:
        sys.exit(f"{source}: no YOLOv8 detection head (/model.N/...) found; is it a yolov8 export?")
    stem = os.path.splitext(os.path.basename(source))[0]
    excluded += sensitive(model, stem)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            target,
            Frames(model.graph.input[0].name, fixtures, scenes),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
        )


if __name__ == "__main__":
    main()
