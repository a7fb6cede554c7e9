"""Metric suite speed: fusion.metrics (batched torch; FMI's per-window core compiled with
numba on CPU) vs the plain numpy version, same values.

On the TNO pairs of ../shared/data (quick: the first 5 SeAFusion pairs; full: all 42 pairs
x 2 methods), each metric is timed alone with both implementations on the same pairs in
the same run, then the whole fusion suite (one compute() call, intermediates shared). The
numpy suite time is the sum of its per-metric times (it shares nothing). Suite rows are
also given without the three FMI metrics, and the FMI metrics are timed a third way, with
the eager torch core instead of the compiled one (fmi.CPU_KERNEL = False).

    python -m benchmarks.bench_metrics [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fusion import metrics
from fusion.metrics import _numpy_ref, fmi

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TNO = SHARED / "data" / "irvis" / "TNO42"
FUSED = SHARED / "data" / "irvis" / "TNO42_fused"
NAME = "metrics"
FMI = ("FMI_pixel", "FMI_dct", "FMI_w")


def _gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read {path}")
    return metrics.to_gray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _pairs(quick: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if not TNO.is_dir() or not FUSED.is_dir():
        raise FileNotFoundError(f"TNO pairs not found under {SHARED / 'data'} (expected ../shared beside the repo)")
    names = sorted(p.name for p in (TNO / "ir").glob("*.png"))
    methods = ["SeAFusion"] if quick else ["SeAFusion", "DenseFuse"]
    names = names[:5] if quick else names
    return [(_gray(TNO / "ir" / n), _gray(TNO / "vi" / n), _gray(FUSED / m / n)) for m in methods for n in names]


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-300)


def _row(measure: str, value: float, unit: str, pairs: int) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit, "pairs": pairs}


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    pairs = _pairs(quick)
    names = metrics.select_metrics(None, has_gt=False).names
    n = len(pairs)
    metrics.compute(*pairs[0], names=names, device=device)  # warm-up: allocator, kernels

    t_np = dict.fromkeys(names, 0.0)
    t_torch = dict.fromkeys(names, 0.0)
    worst = dict.fromkeys(names, 0.0)
    t_suite = 0.0
    t_eager = dict.fromkeys(FMI, 0.0)
    for a, b, f in pairs:
        want = {}
        for name in names:
            start = time.perf_counter()
            want[name] = _numpy_ref.compute(a, b, f, names=[name])[name]
            t_np[name] += time.perf_counter() - start
            start = time.perf_counter()
            got = metrics.compute(a, b, f, names=[name], device=device)[name]
            t_torch[name] += time.perf_counter() - start
            worst[name] = max(worst[name], _rel(got, want[name]))
            if name in FMI and device == "cpu":
                fmi.CPU_KERNEL = False
                try:
                    start = time.perf_counter()
                    got = metrics.compute(a, b, f, names=[name])[name]
                    t_eager[name] += time.perf_counter() - start
                finally:
                    fmi.CPU_KERNEL = True
                worst[name] = max(worst[name], _rel(got, want[name]))
        start = time.perf_counter()
        suite = metrics.compute(a, b, f, names=names, device=device)
        t_suite += time.perf_counter() - start
        for name in names:  # the suite shares intermediates; its values must agree too
            worst[name] = max(worst[name], _rel(suite[name], want[name]))

    rows = [
        _row("pairs", n, "pairs", n),
        _row(f"torch threads (device {device})", torch.get_num_threads(), "threads", n),
        _row("cpu cores", os.cpu_count() or 0, "cores", n),
    ]
    for name in names:
        rows.append(_row(f"{name} numpy s/pair", t_np[name] / n, "s", n))
        rows.append(_row(f"{name} fusion s/pair", t_torch[name] / n, "s", n))
        rows.append(_row(f"{name} speed-up", t_np[name] / t_torch[name], "x", n))
        if t_eager.get(name):
            rows.append(_row(f"{name} eager-torch core s/pair", t_eager[name] / n, "s", n))
            rows.append(_row(f"{name} compiled core speed-up over eager torch", t_eager[name] / t_torch[name], "x", n))
    np_suite = sum(t_np.values())
    np_no_fmi = sum(v for k, v in t_np.items() if k not in FMI)
    torch_no_fmi = sum(v for k, v in t_torch.items() if k not in FMI)
    rows += [
        _row("suite numpy s/pair", np_suite / n, "s", n),
        _row("suite fusion s/pair", t_suite / n, "s", n),
        _row("suite speed-up", np_suite / t_suite, "x", n),
        _row("suite without FMI numpy s/pair", np_no_fmi / n, "s", n),
        _row("suite without FMI fusion s/pair (sum of single metrics)", torch_no_fmi / n, "s", n),
        _row("suite without FMI speed-up", np_no_fmi / torch_no_fmi, "x", n),
        _row("max rel diff fusion vs numpy (all metrics)", max(worst.values()), "rel", n),
        _row("max rel diff fusion vs numpy (all but Qabf)", max(v for k, v in worst.items() if k != "Qabf"), "rel", n),
    ]
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="first 5 SeAFusion pairs only")
    parser.add_argument("--device", default="cpu", help="torch device for the torch suite (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(quick=args.quick, device=args.device)
    width = max(len(r["measure"]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>12}  unit")
    for r in rows:
        print(f"{r['measure']:<{width}}  {r['value']:>12.4g}  {r['unit']}")
    return rows


if __name__ == "__main__":
    main()
