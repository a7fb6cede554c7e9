"""GPU rows (issue 18): training throughput, inference latency, memory, metrics, achieved TFLOP/s.

Per model and variant, at the paper's batch and crop (benchmarks/bench_models.TRAIN_SETUP):
training steps in float32, float16 with GradScaler and bfloat16, as the trainer runs them
(autocast around the model, the loss in float32, the trainer's memory layout: channels-last
for UFA-Fuse; a forced channels-last row for the others says whether that would help), the
step's FLOPs counted once (torch's FlopCounterMode over forward and backward, attention on its
math path, at batch 1 times the batch) and the achieved TFLOP/s against the device's dense
bfloat16 peak (PEAK_BF16_TFLOPS, by device name; GPU_PEAK_BF16_TFLOPS overrides); the peak
GPU memory of each; `fusion.inference.fuse` on a 520x520 pair (the path `fusion fuse` takes,
transfers and colour handling included) and the model's own forward on device tensors; the
metric suite per 768x576 pair on the device. Jobs (--jobs, comma-separated):

  speed    the rows above
  compile  UFA-Fuse through torch.compile (training step and inference), bfloat16
  quality  short training runs scored against the baselines (benchmarks/gpu_quality.py)

    python -m benchmarks.run gpu                                   # all three
    python -m benchmarks.run gpu --jobs speed --out r.json
    python -m benchmarks.run gpu --jobs speed --quick --device cpu  # CPU-sized check of this file

Measured, never asserted: the issue's targets (UFA-Fuse 520x520 under 10 ms in bfloat16,
40% of the dense bfloat16 peak for the convolutional models, the suite under 20 ms a pair)
are compared in the Markdown summary (benchmarks/gpu_summary.py). GPU_BENCH_DEADLINE (a
time.time() value) makes a job stop starting new measurements when it is near; each row is
also appended to GPU_BENCH_PARTIAL (JSON lines) as it is measured, so a step killed by its
time limit keeps what it had.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time

import numpy as np
import torch

NAME = "gpu"
OPTIONS = ("minutes", "device", "test_pairs", "jobs")
JOBS = ("speed", "compile", "quality")
PRECISIONS = ("float32", "float16", "bfloat16")
# dense (no structured sparsity) bfloat16 tensor-core peaks, TFLOP/s, from the vendors' datasheets;
# first match wins, so the more specific names come first
PEAK_BF16_TFLOPS = [
    (r"GH200|H200", 989.0),
    (r"H100.*NVL", 835.0),
    (r"H100.*PCIe", 756.0),
    (r"H100|H800", 989.0),
    (r"B200", 2250.0),
    (r"B100", 1750.0),
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"A10G", 70.0),
    (r"\bA10\b", 125.0),
    (r"RTX 4090", 165.0),
    (r"RTX 6000 Ada", 364.0),
]


def peak_bf16_tflops(device_name: str) -> float | None:
    if os.environ.get("GPU_PEAK_BF16_TFLOPS"):
        return float(os.environ["GPU_PEAK_BF16_TFLOPS"])
    for pattern, peak in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return peak
    return None


class _Rows(list):
    """Rows of this run; each also goes to GPU_BENCH_PARTIAL at once."""

    def add(self, measure: str, value: float, unit: str, **extra) -> None:
        row = {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit, **extra}
        self.append(row)
        partial = os.environ.get("GPU_BENCH_PARTIAL")
        if partial:
            with open(partial, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def _time_left() -> float:
    deadline = os.environ.get("GPU_BENCH_DEADLINE")
    return float(deadline) - time.time() if deadline else float("inf")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _precisions(device: torch.device) -> list[str]:
    if device.type == "cpu":
        return ["float32", "bfloat16"]
    return [p for p in PRECISIONS if p != "bfloat16" or torch.cuda.is_bf16_supported()]


def _training_precision(precision: str, device: torch.device) -> str:
    """A training row's precision as the trainer runs it: on CUDA its float32 (train.amp=false)
    keeps PyTorch's default of TF32 cuDNN convolutions (fusion.device.ieee_float32)."""
    return "float32 (TF32 convolutions)" if precision == "float32" and device.type == "cuda" else precision


def _training_model(name: str, variant: str, device: torch.device):
    from fusion.models import build_model

    torch.manual_seed(0)
    model = build_model(name, variant)
    stage = getattr(model, "stages", ("single",))[-1]
    if stage == "fusion":
        model.freeze_encoders()
    return model.to(device), stage


def _step(model, loss_fn, supervised: bool, a, b, dtype, forward=None):
    with torch.autocast(a.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        pred = (forward or model)(a, b)
    pred = pred.float()
    return loss_fn(pred, a) if supervised else loss_fn(pred, a, b)


def step_flops(model, loss_fn, supervised: bool, crop: int, device: torch.device) -> float:
    """FLOPs of one training step (forward and backward) on one pair; linear in the batch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    a, b = (torch.rand(1, model.in_channels, crop, crop, device=device) for _ in range(2))
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel([SDPBackend.MATH]):
        _step(model, loss_fn, supervised, a, b, None)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def train_step_seconds(
    model,
    loss_fn,
    supervised: bool,
    crop: int,
    batch: int,
    precision: str,
    device: torch.device,
    channels_last: bool,
    steps: int,
    warmup: int,
    forward=None,
) -> float:
    """Median seconds per optimiser step, GradScaler for float16, as the trainer steps."""
    dtype = None if precision == "float32" else getattr(torch, precision)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "float16")
    a, b = (
        torch.rand(batch, model.in_channels, crop, crop, device=device).contiguous(memory_format=fmt) for _ in range(2)
    )
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        losses = _step(model, loss_fn, supervised, a, b, dtype, forward)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"loss {float(losses['loss'])} in {precision}")
    return statistics.median(times)


def _setup(quick: bool) -> dict[str, tuple[int, int]]:
    from benchmarks.bench_models import QUICK_SETUP, TRAIN_SETUP

    return QUICK_SETUP if quick else TRAIN_SETUP


def _variants(quick: bool) -> list[tuple[str, str]]:
    from fusion.models import MODELS

    out = [(m, v) for m, spec in sorted(MODELS.items()) for v in spec.variants if v not in spec.aliases]
    if quick:  # the proposed variant of each model
        proposed = {"ufa": "UFA", "cadnif": "CA-DRDB-AU-GRL-Net", "crossfuse": "s1-c1"}
        out = [(m, v) for m, v in out if proposed.get(m) == v]
    return out


def _training_rows(rows: _Rows, device: torch.device, quick: bool, peak: float | None) -> None:
    from benchmarks.bench_models import _TrainCfg
    from fusion.models import MODELS, build_loss

    steps, warmup = (1, 1) if quick else (5, 2)
    for name, variant in _variants(quick):
        if _time_left() < 20:
            rows.add("training rows stopped early (GPU_BENCH_DEADLINE)", 1, "bool")
            return
        spec = MODELS[name]
        crop, batch = _setup(quick)[name]
        model, stage = _training_model(name, variant, device)
        loss_fn = build_loss(name, _TrainCfg())
        flops = step_flops(model, loss_fn, spec.supervised, crop, device) * batch
        label = f"{name} {variant} training ({stage} stage), batch {batch} at {crop}x{crop}"
        rows.add(f"{label}: FLOPs per step", flops, "FLOP")
        layouts = [bool(getattr(model, "prefers_channels_last", False))]
        if not layouts[0]:
            layouts.append(True)  # would channels-last help this model on this device?
        for precision in _precisions(device):
            for channels_last in layouts:
                if channels_last != layouts[0] and precision != "bfloat16":
                    continue
                _reset_peak(device)
                model, _ = _training_model(name, variant, device)
                tag = f"{label}, {_training_precision(precision, device)}"
                tag += ", channels-last (forced)" if channels_last != layouts[0] else ""
                try:
                    seconds = train_step_seconds(
                        model, loss_fn, spec.supervised, crop, batch, precision, device, channels_last, steps, warmup
                    )
                except (FloatingPointError, torch.cuda.OutOfMemoryError) as exc:  # a row, not the end of the job
                    rows.add(f"{tag}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", 1, "error")
                    continue
                rows.add(f"{tag}: pairs/s", batch / seconds, "pairs/s")
                rows.add(f"{tag}: step time", seconds * 1e3, "ms")
                rows.add(f"{tag}: achieved", flops / seconds / 1e12, "TFLOP/s")
                if peak:
                    rows.add(f"{tag}: of the dense bf16 peak", 100 * flops / seconds / 1e12 / peak, "%")
                if device.type == "cuda":
                    rows.add(f"{tag}: peak GPU memory", _peak_mb(device), "MiB")
        del model
        _reset_peak(device)


def _pair(side_hw: tuple[int, int], channels: int) -> list[np.ndarray]:
    """A real photograph (scikit-image's) as a near/far-focus pair of that size."""
    import cv2
    from skimage import data

    h, w = side_hw
    sharp = cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    near, far = sharp.copy(), blurred.copy()
    near[:, w // 2 :], far[:, w // 2 :] = blurred[:, w // 2 :], sharp[:, w // 2 :]
    if channels == 1:
        return [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (near, far)]
    return [near, far]


def _median_seconds(fn, repeats: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):  # kernel selection, allocator
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inference_rows(rows: _Rows, device: torch.device, quick: bool) -> None:
    from fusion.device import inference_precision, memory_format
    from fusion.errors import DataError
    from fusion.inference import fuse, prepare_for_inference
    from fusion.models import build_model

    side = 64 if quick else 520
    repeats, warmup = (1, 1) if quick else (10, 2)
    for name, variant in _variants(quick):
        if _time_left() < 10:
            rows.add("inference rows stopped early (GPU_BENCH_DEADLINE)", 1, "bool")
            return
        torch.manual_seed(0)
        model = prepare_for_inference(build_model(name, variant)).to(device)
        pair = _pair((side, side), model.in_channels)
        x, y = (
            torch.rand(1, model.in_channels, side, side, device=device).contiguous(memory_format=memory_format(model))
            for _ in range(2)
        )
        for precision in _precisions(device):
            dtype = None if precision == "float32" else getattr(torch, precision)
            _reset_peak(device)
            label = f"{name} {variant} inference {side}x{side}, {precision}"
            try:
                seconds = _median_seconds(
                    lambda model=model, pair=pair, precision=precision: fuse(model, pair, device, precision),
                    repeats,
                    device,
                    warmup,
                )
            except (DataError, torch.cuda.OutOfMemoryError) as exc:  # e.g. NaN out of a reduced precision
                rows.add(f"{label}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", 1, "error")
                continue
            rows.add(f"{label}: fusion.inference.fuse (fusion fuse)", seconds * 1e3, "ms")

            def forward(model=model, x=x, y=y, dtype=dtype):  # this row's, bound now; as fuse runs it
                with torch.inference_mode(), inference_precision(device, dtype):
                    model(x, y)

            rows.add(
                f"{label}: model forward on device tensors",
                _median_seconds(forward, repeats, device, warmup) * 1e3,
                "ms",
            )
            if device.type == "cuda":
                rows.add(f"{label}: peak GPU memory", _peak_mb(device), "MiB")
        del model
        _reset_peak(device)


def _metric_rows(rows: _Rows, device: torch.device, quick: bool) -> None:
    from fusion import metrics
    from fusion.baselines import BASELINES, fuse_baseline
    from fusion.evaluate import score_batch

    hw = (96, 128) if quick else (576, 768)
    a, b = _pair(hw, 1)
    fused = fuse_baseline("laplacian_pyramid", [a, b])
    names = metrics.select_metrics(None, has_gt=False).names
    repeats = 1 if quick else 10
    suite = _median_seconds(lambda: metrics.compute(a, b, fused, names=names, device=device), repeats, device)
    rows.add(f"metric suite ({len(names)} metrics), one {hw[1]}x{hw[0]} pair on {device.type}", suite * 1e3, "ms")
    outputs = [fuse_baseline(n, [a, b]) for n in BASELINES]
    batched = _median_seconds(lambda: score_batch([a, b], outputs, None, names, device), repeats, device)
    rows.add(
        f"metric suite, {len(outputs)} fused images of one {hw[1]}x{hw[0]} pair batched (fusion evaluate), per image",
        batched / len(outputs) * 1e3,
        "ms",
    )


def _compile_rows(rows: _Rows, device: torch.device, quick: bool, peak: float | None) -> None:
    """UFA-Fuse, bfloat16 (float32 on a CPU without bf16), through torch.compile as train.compile and
    `CompiledForward(..., inference=True)` run it; eager beside it in the same run."""
    from benchmarks.bench_models import _TrainCfg
    from fusion.inference import fuse, prepare_for_inference
    from fusion.models import build_loss, build_model
    from fusion.train.compiled import CompiledForward

    precision = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    crop, batch = _setup(quick)["ufa"]
    steps, warmup = (1, 1) if quick else (5, 2)
    loss_fn = build_loss("ufa", _TrainCfg())
    model, _ = _training_model("ufa", "UFA", device)
    flops = step_flops(model, loss_fn, True, crop, device) * batch
    eager = train_step_seconds(model, loss_fn, True, crop, batch, precision, device, True, steps, warmup)
    model, _ = _training_model("ufa", "UFA", device)
    compiled = CompiledForward(model, "benchmark")
    start = time.perf_counter()
    seconds = train_step_seconds(model, loss_fn, True, crop, batch, precision, device, True, steps, 1, forward=compiled)
    label = f"ufa UFA training, batch {batch} at {crop}x{crop}, {precision}, torch.compile"
    rows.add(f"{label}: compiled (1 = yes, 0 = fell back to eager)", float(compiled.failed is None), "bool")
    rows.add(f"{label}: first steps (compile + run)", time.perf_counter() - start, "s")
    rows.add(f"{label}: step time", seconds * 1e3, "ms")
    rows.add(f"{label}: speed-up over eager", eager / seconds, "x")
    rows.add(f"{label}: achieved", flops / seconds / 1e12, "TFLOP/s")
    if peak:
        rows.add(f"{label}: of the dense bf16 peak", 100 * flops / seconds / 1e12 / peak, "%")
    side = 128 if quick else 520
    net = prepare_for_inference(build_model("ufa", "UFA")).to(device)
    pair = _pair((side, side), 3)
    fast = CompiledForward(net, "benchmark", inference=True)
    start = time.perf_counter()
    fuse(fast, pair, device, precision)
    rows.add(
        f"ufa UFA inference {side}x{side}, {precision}, torch.compile: first call (compile + run)",
        time.perf_counter() - start,
        "s",
    )
    repeats = 2 if quick else 10
    rows.add(
        f"ufa UFA inference {side}x{side}, {precision}, torch.compile: fusion.inference.fuse",
        _median_seconds(lambda: fuse(fast, pair, device, precision), repeats, device) * 1e3,
        "ms",
    )
    levels = np.abs(fuse(fast, pair, device, precision).astype(int) - fuse(net, pair, device, precision)).max()
    rows.add(
        f"ufa UFA inference {side}x{side}, {precision}, torch.compile: largest difference from eager",
        float(levels),
        "gray levels",
    )


def run(
    quick: bool = False,
    minutes: float | None = None,
    device: str = "auto",
    test_pairs: int | None = None,
    jobs: list[str] | None = None,
) -> list[dict]:
    from fusion.device import pick_device

    jobs = list(jobs or JOBS)
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise SystemExit(f"gpu benchmark: unknown job(s) {unknown}; jobs: {list(JOBS)}")
    dev = pick_device(device)
    if dev.type != "cuda" and not quick:
        raise SystemExit("gpu benchmark: no CUDA device here; --quick --device cpu checks the benchmark on a CPU")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = peak_bf16_tflops(name) if dev.type == "cuda" else None
    rows = _Rows()
    rows.add(f"device: {name}", 1, "")
    if peak:
        rows.add(f"dense bf16 peak of {name}", peak, "TFLOP/s")
    if "speed" in jobs:
        _training_rows(rows, dev, quick, peak)
        _inference_rows(rows, dev, quick)
        _metric_rows(rows, dev, quick)
    if "compile" in jobs and _time_left() > 30:
        _compile_rows(rows, dev, quick, peak)
    if "quality" in jobs:
        from benchmarks import gpu_quality

        for row in gpu_quality.run(dev, minutes=minutes, test_pairs=test_pairs, quick=quick):
            rows.add(**{k: row[k] for k in ("measure", "value", "unit")})
    return list(rows)
