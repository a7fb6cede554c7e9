"""Patch augmentation throughput: one process vs every core, on the real TNO pairs.

Cuts CADNIF's released windows (132x132 at stride 14, a seeded sample per pair so the
output stays small) from ../shared/data/irvis/TNO42 with `fusion.data.patches.build_patches`,
once with one process and once with a process per core, in the same run.

    python -m benchmarks.run patches [--quick]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NAME = "patches"


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def run(quick: bool = False) -> list[dict]:
    from fusion.data.patches import PatchParams, build_patches
    from fusion.data.sources import load_source

    pairs = list(load_source({"layout": "tno", "path": str(SHARED / "data/irvis/TNO42")}))
    if quick:
        pairs = pairs[:8]
    params = PatchParams(window=132, stride=14, flips=True, max_per_pair=16 if quick else 256)
    cores = os.cpu_count() or 1
    rows = [_row("pairs", len(pairs), "pairs"), _row("cores", cores, "cores")]
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-patches-") as tmp:
        for workers in (1, cores):
            start = time.perf_counter()
            manifest = build_patches(pairs, Path(tmp) / f"w{workers}", params, workers=workers)
            seconds[workers] = time.perf_counter() - start
            rows += [
                _row(f"{workers} process(es): pairs/s", len(pairs) / seconds[workers], "pairs/s"),
                _row(f"{workers} process(es): windows/s", manifest["count"] / seconds[workers], "windows/s"),
            ]
    rows.append(_row(f"speed-up with {cores} processes", seconds[1] / seconds[cores], "x"))
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    main(["patches"])
