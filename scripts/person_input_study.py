"""Which input keeps the person model's answers at less than 640's cost (#20).

    person_input_study.py MODEL.onnx IMAGE...

At 320 the person model calls standing people "Fall". This compares ways of feeding it a
smaller input against the 640 square letterbox the demo runs, on the same pictures:

- a square letterbox at 320 and 416 (pad 114, centred: the service's own letterbox);
- the 16:9 rectangle without bars (`input_height`): 320x192, 416x256, 640x384;
- two overlapping square tiles of a wide picture, each letterboxed to 320 (two inferences
  of 320x320 cost half of one at 640x640), merged by NMS.

For each, on every detection of the 640 square that a demo rule counts (score >= 0.5): the
same class with IoU >= 0.5 (matched), the other class (flipped), or nothing (missed); and
detections >= 0.5 the 640 square does not have (extra). CPU is the process' CPU time per
picture, one ONNX Runtime thread.

The pictures: the simulator's scenes (`cargo run -p sharpeyes-ingest --example
scene_pictures -- DIR`) and `fixtures/images`. Run with the Python of `.deps/venv`.
"""

import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

NAMES = ("Normal", "Fall")
FLOOR = 0.5  # the lowest min_confidence of the demo's person rules
PAD = 114


def letterbox(image, width, height):
    w, h = image.size
    scale = min(width / w, height / h)
    nw, nh = round(w * scale), round(h * scale)
    canvas = Image.new("RGB", (width, height), (PAD, PAD, PAD))
    px, py = (width - nw) // 2, (height - nh) // 2
    canvas.paste(image.resize((nw, nh), Image.BILINEAR), (px, py))
    tensor = np.asarray(canvas, np.float32).transpose(2, 0, 1)[None] / 255.0
    return tensor, scale, px, py


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(found, threshold=0.45):
    kept = []
    for d in sorted(found, key=lambda d: -d[1]):
        if all(k[0] != d[0] or iou(k[2], d[2]) < threshold for k in kept):
            kept.append(d)
    return kept


class Study:
    def __init__(self, model):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def detect(self, image, width, height, offset_x=0):
        tensor, scale, px, py = letterbox(image, width, height)
        start = time.process_time()
        out = self.session.run(None, {"images": tensor})[0][0]
        cpu = time.process_time() - start
        found = []
        for a in range(out.shape[1]):
            cls = int(np.argmax(out[4:, a]))
            score = float(out[4 + cls, a])
            if score < 0.25:
                continue
            cx, cy, w, h = out[:4, a]
            box = [
                (cx - w / 2 - px) / scale + offset_x,
                (cy - h / 2 - py) / scale,
                (cx + w / 2 - px) / scale + offset_x,
                (cy + h / 2 - py) / scale,
            ]
            found.append((cls, score, box))
        return nms(found), cpu

    def tiles(self, image, side):
        w, h = image.size
        if w <= h * 1.2:
            return self.detect(image, side, side)
        found, cpu = [], 0.0
        for x0 in (0, w - h):
            d, c = self.detect(image.crop((x0, 0, x0 + h, h)), side, side, offset_x=x0)
            found += d
            cpu += c
        return nms(found, 0.5), cpu


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    study = Study(sys.argv[1])
    paths = sys.argv[2:]
    variants = {
        "640x640 (reference)": lambda s, im: s.detect(im, 640, 640),
        "640x384": lambda s, im: s.detect(im, 640, 384),
        "416x416": lambda s, im: s.detect(im, 416, 416),
        "416x256": lambda s, im: s.detect(im, 416, 256),
        "320x320": lambda s, im: s.detect(im, 320, 320),
        "320x192": lambda s, im: s.detect(im, 320, 192),
        "2 tiles of 320x320": lambda s, im: s.tiles(im, 320),
    }
    answers = {name: {} for name in variants}
    for path in paths:
        image = Image.open(path).convert("RGB")
        for name, run in variants.items():
            answers[name][path] = run(study, image)
    reference = answers["640x640 (reference)"]
    counted = sum(len([d for d in reference[p][0] if d[1] >= FLOOR]) for p in paths)
    print(f"{len(paths)} pictures, {counted} detections >= {FLOOR} at 640x640")
    print("| input | CPU ms a picture | matched | flipped | missed | extra |")
    print("|---|---|---|---|---|---|")
    for name in variants:
        matched = flipped = missed = extra = 0
        cpu = 0.0
        for p in paths:
            found, c = answers[name][p]
            cpu += c
            want = [d for d in reference[p][0] if d[1] >= FLOOR]
            got = [d for d in found if d[1] >= FLOOR]
            used = set()
            for w in want:
                best = max(
                    ((iou(w[2], g[2]), i) for i, g in enumerate(got) if i not in used),
                    default=(0.0, -1),
                )
                if best[0] < 0.5:
                    missed += 1
                    continue
                used.add(best[1])
                if got[best[1]][0] == w[0]:
                    matched += 1
                else:
                    flipped += 1
            extra += len(got) - len(used)
        print(
            f"| {name} | {1000 * cpu / len(paths):.0f} | {matched} | {flipped} | {missed} | {extra} |"
        )
    print()
    for p in paths:
        shown = {
            name: [f"{NAMES[d[0]]} {d[1]:.2f}" for d in answers[name][p][0] if d[1] >= FLOOR]
            for name in variants
        }
        print(p.rsplit("/", 1)[-1], shown)


if __name__ == "__main__":
    main()
