"""Model cost: parameters, FLOPs, training throughput and inference latency, per model and variant.

For every registered model and paper variant: parameter count, FLOPs of one forward pass on
a 256x256 pair (torch's FlopCounterMode; CADNIF in eval mode fuses 132x132 tiles, so its
count includes the tile overlap), training throughput (pairs/s over a few optimiser steps at
the model's training crop) and inference latency on a 520x520 pair (the Lytro size) through
`fusion.inference.fuse`, the path `fusion fuse` and `fusion evaluate` use.

UFA-Fuse is also compared, in the same run, with a re-implementation of how the authors'
released code runs the same graph (NCHW memory layout, each input through the backbone on
its own, autograd bookkeeping at inference). The authors' repository itself cannot be
fetched on these offline machines; the released graph (455,111 parameters) is
`build_model("ufa", "UFA", released=True)`.

    python -m benchmarks.run models            # all variants (tens of minutes on a 2-core CPU)
    python -m benchmarks.bench_models --quick  # default variants, small sizes
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

NAME = "models"
TRAIN_SETUP = {  # model -> (crop, batch) of the papers' training; CPU sizes in quick mode
    "ufa": (256, 8),
    "cadnif": (132, 16),
    "crossfuse": (256, 8),
}
QUICK_SETUP = {"ufa": (64, 2), "cadnif": (48, 2), "crossfuse": (64, 2)}


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def _flops(model: torch.nn.Module, side: int) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, model.in_channels, side, side)
    counter = FlopCounterMode(display=False)
    # SDPA on its math path: FlopCounterMode has no formula for the CPU flash kernel and would
    # count CADNIF's non-local attention as free. FLOPs belong to the computation, not the kernel.
    with counter, torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        model(x, x)
    return counter.get_total_flops()


def _trainer_step_time(
    model,
    loss_fn,
    crop: int,
    batch: int,
    steps: int,
    supervised: bool,
    channels_last: bool,
    amp: torch.dtype | None = None,
    compile: bool = False,
) -> float:
    """Seconds per optimiser step (median) on random crops of the model's channel count;
    amp: the model under CPU autocast to that dtype, the loss in float32 (as the trainer);
    compile: the model through torch.compile, as train.compile (the first, compiling step is
    not timed, like every first step)."""
    from fusion.train.compiled import CompiledForward

    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    forward = CompiledForward(model, "benchmark") if compile else model
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    c = model.in_channels
    times = []
    for i in range(steps + 1):
        a, b = (torch.rand(batch, c, crop, crop).contiguous(memory_format=fmt) for _ in range(2))
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            pred = forward(a, b)
        pred = pred.float()
        losses = loss_fn(pred, a) if supervised else loss_fn(pred, a, b)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if i:  # the first step pays for allocations
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _latency(fn, repeats: int) -> float:
    return _interleaved_latency([fn], repeats)[0]


def _interleaved_latency(fns, repeats: int) -> list[float]:
    """Median seconds of each fn, timed in turn within each repeat, so that the host's speed
    drifting during the run (it does on shared machines) hits every fn alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _released_style_forward(model, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How the released UFA-Fuse code runs: each input through the backbone separately."""
    feats = [model.features(a), model.features(b)]
    return model.reconstruct(model.ffb(torch.cat(model.ufa(feats), dim=1)))


def _ufa_against_released(quick: bool) -> list[dict]:
    from fusion.device import cpu_has_bfloat16
    from fusion.inference import fuse, prepare_for_inference
    from fusion.losses import L1SSIMLoss
    from fusion.models import build_model
    from fusion.train.compiled import CompiledForward

    rows = []
    side = 128 if quick else 520
    rng = np.random.default_rng(0)
    a8, b8 = (rng.integers(0, 255, (side, side, 3), dtype=np.uint8) for _ in range(2))
    torch.manual_seed(0)
    released = build_model("ufa", "UFA", released=True).eval()
    ours = prepare_for_inference(build_model("ufa", "UFA", released=True).eval())
    ours.load_state_dict(released.state_dict())
    at, bt = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 for x in (a8, b8))

    def ref():
        with torch.no_grad():
            return _released_style_forward(released, at, bt)

    with torch.no_grad():
        same = torch.allclose(ref(), ours(at, bt), atol=1e-5)
    gray_levels = np.abs(fuse(ours, [a8, b8]).astype(int) - fuse(ours, [a8, b8], precision="bfloat16")).max()
    compiled = CompiledForward(ours, "benchmark", inference=True)
    first = time.perf_counter()
    fused_compiled = fuse(compiled, [a8, b8])
    compile_s = time.perf_counter() - first
    t_ref, t_ours, t_bf16, t_compiled = _interleaved_latency(
        [
            ref,
            lambda: fuse(ours, [a8, b8]),
            lambda: fuse(ours, [a8, b8], precision="bfloat16"),
            lambda: fuse(compiled, [a8, b8]),
        ],
        1 if quick else 5,
    )
    compiled_levels = np.abs(fuse(ours, [a8, b8]).astype(int) - fused_compiled).max()
    rows += [
        _row(f"UFA-Fuse (released graph) {side}x{side} inference, released-code style", t_ref, "s"),
        _row(f"UFA-Fuse (released graph) {side}x{side} inference, fusionflow (fusion fuse)", t_ours, "s"),
        _row("UFA-Fuse inference speed-up over released-code style", t_ref / t_ours, "x"),
        _row("UFA-Fuse outputs agree (1 = yes)", float(same), "bool"),
        _row(f"UFA-Fuse (released graph) {side}x{side} inference, fusion fuse --precision bfloat16", t_bf16, "s"),
        _row("UFA-Fuse inference speed-up over released-code style, bfloat16", t_ref / t_bf16, "x"),
        _row("UFA-Fuse bfloat16 output, largest difference from float32", float(gray_levels), "gray levels"),
        _row(
            f"UFA-Fuse (released graph) {side}x{side} inference, float32, torch.compile (freezing), "
            "after its first call",
            t_compiled,
            "s",
        ),
        _row("UFA-Fuse inference speed-up over released-code style, float32 torch.compile", t_ref / t_compiled, "x"),
        _row("UFA-Fuse torch.compile first call (compile + run; inductor's disk cache warm or cold)", compile_s, "s"),
        _row("UFA-Fuse torch.compile output, largest difference from eager", float(compiled_levels), "gray levels"),
    ]
    crop, batch = QUICK_SETUP["ufa"] if quick else TRAIN_SETUP["ufa"]
    steps = 1 if quick else 2
    loss = L1SSIMLoss(0.2)
    torch.manual_seed(0)
    ref_model = build_model("ufa", "UFA", released=True)

    class Released(torch.nn.Module):  # the released forward as a module for the step timer
        def __init__(self, m):
            super().__init__()
            self.m, self.in_channels = m, 3

        def forward(self, x, y):
            return _released_style_forward(self.m, x, y)

    t_ref = _trainer_step_time(Released(ref_model), loss, crop, batch, steps, True, channels_last=False)
    t_ours = _trainer_step_time(
        build_model("ufa", "UFA", released=True), loss, crop, batch, steps, True, channels_last=True
    )
    t_bf16 = _trainer_step_time(
        build_model("ufa", "UFA", released=True), loss, crop, batch, steps, True, channels_last=True, amp=torch.bfloat16
    )
    t_compiled = _trainer_step_time(
        build_model("ufa", "UFA", released=True), loss, crop, batch, steps, True, channels_last=True, compile=True
    )
    rows += [
        _row(f"UFA-Fuse training step, batch {batch} at {crop}x{crop}, released-code style", t_ref, "s"),
        _row(f"UFA-Fuse training step, batch {batch} at {crop}x{crop}, fusionflow trainer layout", t_ours, "s"),
        _row("UFA-Fuse training step speed-up over released-code style", t_ref / t_ours, "x"),
        _row(
            f"UFA-Fuse training step, batch {batch} at {crop}x{crop}, fusionflow, train.compile (float32)",
            t_compiled,
            "s",
        ),
        _row(
            "UFA-Fuse training step speed-up over released-code style, train.compile (float32)", t_ref / t_compiled, "x"
        ),
        _row(
            f"UFA-Fuse training step, batch {batch} at {crop}x{crop}, fusionflow, train.amp (CPU bfloat16)", t_bf16, "s"
        ),
        _row("UFA-Fuse training step speed-up over released-code style, train.amp (CPU bfloat16)", t_ref / t_bf16, "x"),
        _row("CPU has bfloat16 instructions (AVX512-BF16 or AMX; 1 = yes)", float(cpu_has_bfloat16()), "bool"),
    ]
    return rows


def run(quick: bool = False, models: list[str] | None = None) -> list[dict]:
    from fusion.inference import fuse, prepare_for_inference
    from fusion.models import MODELS, build_loss, build_model, count_parameters

    rows = [
        _row("torch threads", torch.get_num_threads(), "threads"),
        _row("device", 1.0 if torch.cuda.is_available() else 0.0, "cuda available"),
    ]
    rng = np.random.default_rng(0)
    side = 128 if quick else 520
    pair = [rng.integers(0, 255, (side, side), dtype=np.uint8) for _ in range(2)]
    for name in models or sorted(MODELS):
        spec = MODELS[name]
        variants = list(spec.variants)[:1] if quick else list(spec.variants)
        if name == "crossfuse" and quick:
            variants = ["F_CNN"]
        if name == "cadnif" and quick:
            variants = ["CA-DRDB-AU-GRL-Net"]
        for variant in variants:
            label = f"{name} {spec.variants[variant]}"
            torch.manual_seed(0)
            model = build_model(name, variant).eval()
            rows.append(_row(f"{label}: parameters", count_parameters(model), "params"))
            rows.append(
                _row(
                    f"{label}: forward FLOPs per {'64' if quick else '256'}^2 pair",
                    _flops(model, 64 if quick else 256),
                    "FLOP",
                )
            )
            crop, batch = QUICK_SETUP[name] if quick else TRAIN_SETUP[name]
            if name == "cadnif" and not quick:
                batch = 2  # batch 16 of 132^2 windows is ~1 min a step on 2 cores; pairs/s is per pair anyway
            if name == "crossfuse" and not quick:
                batch = 2
            train_model = build_model(name, variant)
            stage = getattr(train_model, "stages", ("single",))[-1]
            loss_name = name
            if stage == "fusion":
                train_model.freeze_encoders()
            seconds = _trainer_step_time(
                train_model,
                build_loss(loss_name, _TrainCfg()),
                crop,
                batch,
                1 if quick else 2,
                spec.supervised,
                channels_last=getattr(train_model, "prefers_channels_last", False),
            )
            rows.append(
                _row(
                    f"{label}: training ({stage} stage) pairs/s at batch {batch}, {crop}x{crop}",
                    batch / seconds,
                    "pairs/s",
                )
            )
            infer = prepare_for_inference(model)
            srcs = pair if getattr(model, "in_channels", 3) == 1 else [np.repeat(p[..., None], 3, 2) for p in pair]
            latency = _latency(lambda infer=infer, srcs=srcs: fuse(infer, srcs), 1)
            rows.append(_row(f"{label}: inference latency, {side}x{side} pair", latency, "s"))
    if models is None or "ufa" in models:
        rows += _ufa_against_released(quick)
    return rows


class _TrainCfg:
    """The train config fields the losses read, at the models' defaults (CADNIF's paper-mode border)."""

    task = "ir-vis"
    released = False
    options = {"lambda_l1": 0.2, "loss_crop_border": 6}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="default variants, small sizes")
    parser.add_argument("--models", nargs="*", help="only these models (ufa, cadnif, crossfuse)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(quick=args.quick, models=args.models)
    width = max(len(r["measure"]) for r in rows)
    for r in rows:
        print(f"{r['measure']:<{width}}  {r['value']:>14.4g}  {r['unit']}")
    return rows


if __name__ == "__main__":
    main()
