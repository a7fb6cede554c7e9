"""Run the benchmarks, print one table, write benchmarks/results/<machine>.json.

    python -m benchmarks.run                 # everything
    python -m benchmarks.run pipeline        # one benchmark (module benchmarks/bench_<name>.py)
    python -m benchmarks.run --quick         # small inputs: checks the benchmarks themselves run
    python -m benchmarks.run quality --minutes 5 --device cuda   # options of benchmarks that take them
    python -m benchmarks.run gpu --jobs speed,compile            # the GPU rows (bench_gpu.py; make gpu-check)

Each benchmark module exposes `run(quick) -> list[dict]` rows with keys
benchmark, measure, value, unit. Comparisons are measured side by side in one run and
reported as ratios, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.machine import describe, slug

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# Run only when named: the quality benchmark trains each model for 20 minutes; the GPU one
# (bench_gpu.py, `make gpu-check`) needs a CUDA device.
ON_REQUEST = {"quality", "gpu", "tiling"}  # tiling: a 12 MP pair under 4 GB, ~10 min on 2 cores


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {available()} but {sorted(ON_REQUEST)})"
    )
    parser.add_argument("--quick", action="store_true", help="small inputs (a smoke test of the benchmarks)")
    parser.add_argument("--out", type=Path, help="results file (default: benchmarks/results/<machine>.json)")
    parser.add_argument("--minutes", type=float, help="quality: training minutes per job (default 20)")
    parser.add_argument("--device", default="auto", help="quality: auto | cpu | cuda")
    parser.add_argument("--test-pairs", type=int, help="quality: score only the first N pairs of each test set")
    parser.add_argument(
        "--jobs",
        type=lambda v: [j for j in v.split(",") if j],
        help="quality: only these jobs, e.g. ufa/multi-focus,cadnif/ir-vis",
    )
    args = parser.parse_args(argv)
    names = args.names or [n for n in available() if n not in ON_REQUEST]
    if args.minutes is not None and args.minutes <= 0:
        parser.error(f"--minutes must be positive, got {args.minutes}")
    if args.test_pairs is not None and args.test_pairs < 1:
        parser.error(f"--test-pairs must be at least 1, got {args.test_pairs}")
    if args.device not in ("auto", "cpu", "cuda"):
        parser.error(f"--device must be auto, cpu or cuda, got {args.device!r}")
    unknown = set(names) - set(available())
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {available()}")

    machine = describe()
    rows: list[dict] = []
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        # a benchmark that takes options lists them in OPTIONS (names of run()'s keyword arguments)
        options = {k: getattr(args, k) for k in getattr(module, "OPTIONS", ())}
        rows += module.run(quick=args.quick, **options)
        rows.append(
            {"benchmark": name, "measure": "benchmark wall time", "value": time.perf_counter() - start, "unit": "s"}
        )

    table = Table(title=f"fusionflow benchmarks on {machine['cpu']} ({machine['cores']} cores, GPU: {machine['gpu']})")
    for col, justify in (("benchmark", "left"), ("measure", "left"), ("value", "right"), ("unit", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["benchmark"], r["measure"], f"{r['value']:.4g}", r["unit"])
    Console().print(table)

    out = args.out or RESULTS / f"{slug(machine)}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    # Keep other benchmarks' latest rows when only some are re-run.
    kept = [r for r in previous.get("rows", []) if r["benchmark"] not in names]
    payload = {"machine": machine, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "rows": kept + rows}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    Console().print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
