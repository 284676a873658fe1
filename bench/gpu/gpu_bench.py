#!/usr/bin/env python3
"""What one GPU gives sharpeyes: NVDEC keyframe decodes and detector batches a second.

Run on the GPU machine from the folder `prepare.sh` made (see README "On a GPU"):

    python3 gpu_bench.py DIR OUT.json

DIR holds the clips (1080p, the simulator's kind of grain), the detectors with their
weights shipped as float16 (restored to float32 here: the transfer is half the size) and
PyNvVideoCodec. Each part runs on its own and reports what failed, so one missing
library does not lose the other figures.

Decode: N processes, each with its own NVDEC session, decode an intra-only clip (every
picture a keyframe, ~100 KB like a 4 Mbit/s camera's) for a few seconds; keyframes a
second over all of them, and host CPU per keyframe. The same on a GOP-50 clip decoding
every frame is the full-decoding baseline (what DeepStream does).

Inference: the ONNX detectors converted to PyTorch (onnx2torch) on cuDNN, float32
(TF32 convolutions) and float16 autocast, batches of 1-32. The output is checked against
ONNX Runtime on the CPU first. This is not ONNX Runtime's CUDA provider: its library
(272 MB) does not fit in what a call to the GPU machine can carry.
"""

import json
import os
import sys
import time
import traceback

RESULTS = {}


def log(*args):
    print(*args, flush=True)


def section(name):
    def wrap(fn):
        def run(*a):
            t0 = time.perf_counter()
            try:
                RESULTS[name] = fn(*a)
            except Exception as e:  # noqa: BLE001 - report and go on to the next part
                RESULTS[name] = {"error": f"{type(e).__name__}: {e}"}
                traceback.print_exc()
            log(f"## {name}: {time.perf_counter() - t0:.1f} s")

        return run

    return wrap


@section("machine")
def machine():
    import subprocess

    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    libs = []
    for d in ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib"):
        if os.path.isdir(d):
            libs += [f"{d}/{f}" for f in os.listdir(d) if "nvcuvid" in f]
    out = {"gpu": smi, "nvcuvid": libs, "cpus": os.cpu_count()}
    try:
        import onnxruntime

        out["onnxruntime"] = [onnxruntime.__version__, onnxruntime.get_available_providers()]
    except Exception as e:  # noqa: BLE001
        out["onnxruntime"] = str(e)
    log(json.dumps(out))
    return out


def _guarded(loop, args, barrier, queue):
    try:
        queue.put(loop(*args, barrier))
    except Exception as e:  # noqa: BLE001 - let the other processes stop at once
        barrier.abort()
        queue.put({"error": f"{type(e).__name__}: {e}"})


def run_together(loop, args, procs, timeout):
    """`procs` processes each run `loop(*args, barrier)` and start measuring together at
    the barrier; returns their results, or raises the first one's error."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    ps = [
        ctx.Process(target=_guarded, args=(loop, args, barrier, queue)) for _ in range(procs)
    ]
    for p in ps:
        p.start()
    got = [queue.get(timeout=timeout) for _ in ps]
    for p in ps:
        p.join(timeout=30)
    errors = [g["error"] for g in got if "error" in g]
    if errors:
        raise RuntimeError(errors[0])
    return got


def decode_loop(path, seconds, latency_zero, barrier):
    import PyNvVideoCodec as nvc

    kwargs = {"gpuid": 0, "usedevicememory": True}
    dmx = nvc.CreateDemuxer(filename=path)
    kwargs["codec"] = dmx.GetNvCodecId()
    dec = None
    if latency_zero:
        try:  # frames out in decode order at once, as a keyframe-only reader wants
            dec = nvc.CreateDecoder(**kwargs, latency=nvc.DisplayDecodeLatencyType.ZERO)
        except (TypeError, AttributeError) as e:
            print("zero-latency decoder refused:", e, flush=True)
    if dec is None:
        dec = nvc.CreateDecoder(**kwargs)
    warm = 0
    for pkt in dmx:  # one pass to warm the session up
        warm += len(dec.Decode(pkt))
    barrier.wait(timeout=60)
    frames, calls = 0, []
    cpu0, t0 = os.times(), time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        dmx = nvc.CreateDemuxer(filename=path)
        for pkt in dmx:
            c0 = time.perf_counter()
            got = len(dec.Decode(pkt))
            if got:
                calls.append(time.perf_counter() - c0)
            frames += got
            if time.perf_counter() >= deadline:
                break
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    calls.sort()
    return {
        "frames": frames,
        "wall": wall,
        "cpu": cpu,
        "warm_frames": warm,
        "call_p50_ms": 1000 * calls[len(calls) // 2] if calls else None,
    }


def decode_run(path, procs, seconds, latency_zero):
    got = run_together(decode_loop, (path, seconds, latency_zero), procs, seconds + 90)
    frames = sum(g["frames"] for g in got)
    wall = max(g["wall"] for g in got)
    cpu = sum(g["cpu"] for g in got)
    row = {
        "clip": os.path.basename(path),
        "sessions": procs,
        "frames_per_s": round(frames / wall, 1),
        "host_cpu_ms_per_frame": round(1000 * cpu / max(frames, 1), 3),
        "decode_call_p50_ms": got[0]["call_p50_ms"],
    }
    log(json.dumps(row))
    return row


@section("nvdec")
def nvdec(d):
    rows = []
    plan = [
        ("h264_intra.mp4", [1, 4, 8, 16], True),
        ("h265_intra.mp4", [1, 8, 16], True),
        ("h264_gop50.mp4", [1, 8, 16], False),
    ]
    for clip, sessions, zero in plan:
        for n in sessions:
            try:
                rows.append(decode_run(os.path.join(d, clip), n, 5.0, zero))
            except Exception as e:  # noqa: BLE001
                rows.append({"clip": clip, "sessions": n, "error": f"{type(e).__name__}: {e}"})
                log(rows[-1])
                if n == 1:
                    break  # one session fails: more will not do better
    return rows


def load_detector(path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT16:
            arr = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return model


def letterbox(image_path, side):
    import numpy as np
    from PIL import Image

    img = Image.open(image_path).convert("RGB")
    scale = side / max(img.size)
    w, h = round(img.size[0] * scale), round(img.size[1] * scale)
    canvas = Image.new("RGB", (side, side), (114, 114, 114))
    canvas.paste(img.resize((w, h), Image.BILINEAR), ((side - w) // 2, (side - h) // 2))
    return (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]


@section("inference")
def inference(d):
    import numpy as np
    import onnx2torch
    import onnxruntime
    import torch

    torch.backends.cudnn.benchmark = True
    rows = []
    plan = [("fire_smoke_yolov8", [320, 640]), ("person_fall_yolov8s", [640])]
    for name, sides in plan:
        path = os.path.join(d, f"{name}.f16.onnx")
        if not os.path.exists(path):
            rows.append({"model": name, "error": "not carried"})
            continue
        proto = load_detector(path)
        ort = onnxruntime.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        net = onnx2torch.convert(proto).cuda().eval()
        image = os.path.join(d, "synthetic_fire.png" if "fire" in name else "camera.png")
        for side in sides:
            x = letterbox(image, side)
            want = ort.run(None, {ort.get_inputs()[0].name: x})[0]
            with torch.inference_mode():
                got32 = net(torch.from_numpy(x).cuda()).float().cpu().numpy()
                with torch.autocast("cuda", dtype=torch.float16):
                    got16 = net(torch.from_numpy(x).cuda()).float().cpu().numpy()
            check = {
                "model": name,
                "side": side,
                "cpu_best_score": round(float(want[0, 4:].max()), 3),
                "gpu_fp32_best_score": round(float(got32[0, 4:].max()), 3),
                "gpu_fp16_best_score": round(float(got16[0, 4:].max()), 3),
                "fp32_max_score_diff": round(float(np.abs(want[0, 4:] - got32[0, 4:]).max()), 4),
                "fp16_max_score_diff": round(float(np.abs(want[0, 4:] - got16[0, 4:]).max()), 4),
            }
            log(json.dumps(check))
            rows.append(check)
            for half in (False, True):
                for batch in (1, 8, 16, 32):
                    xb = torch.rand(batch, 3, side, side, device="cuda")
                    with torch.inference_mode(), torch.autocast(
                        "cuda", dtype=torch.float16, enabled=half
                    ):
                        for _ in range(5):
                            net(xb)
                        torch.cuda.synchronize()
                        n = max(10, 160 // batch)
                        cpu0, t0 = time.process_time(), time.perf_counter()
                        for _ in range(n):
                            net(xb)
                        torch.cuda.synchronize()
                        wall = time.perf_counter() - t0
                        cpu = time.process_time() - cpu0
                    row = {
                        "model": name,
                        "side": side,
                        "precision": "fp16" if half else "fp32(tf32)",
                        "batch": batch,
                        "ms_per_batch": round(1000 * wall / n, 2),
                        "frames_per_s": round(batch * n / wall, 1),
                        "host_cpu_ms_per_frame": round(1000 * cpu / (batch * n), 3),
                    }
                    log(json.dumps(row))
                    rows.append(row)
    return rows


def infer_loop(path, side, batch, seconds, barrier):
    import onnx2torch
    import torch

    torch.backends.cudnn.benchmark = True
    net = onnx2torch.convert(load_detector(path)).cuda().eval()
    xb = torch.rand(batch, 3, side, side, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        for _ in range(5):
            net(xb)
        torch.cuda.synchronize()
        barrier.wait(timeout=120)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            net(xb)
            n += 1
        torch.cuda.synchronize()
        return {"frames": n * batch, "wall": time.perf_counter() - t0}


@section("inference_processes")
def inference_processes(d):
    """Eager PyTorch launches each layer from Python, so one process keeps the GPU
    waiting (a batch of 16 took as long as a batch of 1). Several processes, as several
    inference workers would, show what the GPU itself gives. (CUDA graphs would too,
    but onnx2torch's layers copy from host memory inside the graph and capture fails.)"""
    rows = []
    path = os.path.join(d, "fire_smoke_yolov8.f16.onnx")
    for procs in (2, 4, 8):
        try:
            got = run_together(infer_loop, (path, 320, 32, 5.0), procs, 240)
        except RuntimeError as e:
            rows.append({"processes": procs, "error": str(e)})
            log(json.dumps(rows[-1]))
            break
        row = {
            "model": "fire_smoke_yolov8",
            "side": 320,
            "precision": "fp16",
            "batch": 32,
            "processes": procs,
            "frames_per_s": round(sum(g["frames"] for g in got) / max(g["wall"] for g in got), 1),
        }
        log(json.dumps(row))
        rows.append(row)
    return rows


def main():
    d, out = sys.argv[1], sys.argv[2]
    machine()
    inference(d)
    inference_processes(d)
    nvdec(d)
    with open(out, "w") as f:
        json.dump(RESULTS, f, indent=1)
    log("wrote", out)


if __name__ == "__main__":
    main()
