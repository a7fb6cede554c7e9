"""Preparation stages: pairs per second with one process vs every core, in the same run.

Real images from ../shared/data, laid out as the stages expect:
- KAIST pairs (gray, 256x256): RoadScene's 221 aligned IR/visible pairs arranged as a KAIST
  tree (set00/V000..V009 by symlinks), since KAIST itself is not on these machines;
- synthetic multi-focus (Eq. 11, saliency masks): the 20 sharp-ish Lytro near-focus images
  as a `photos` source, 4 pairs each at 520 px;
- a test set: every Harvard MRI pair (567), copied with their manifest.

    python -m benchmarks.run prepare [--quick]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NAME = "prepare"


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def _kaist_tree(dest: Path, limit: int) -> Path:
    from fusion.data.sources import load_roadscene

    pairs = load_roadscene(SHARED / "data/irvis/RoadScene221")[:limit]
    for i, p in enumerate(pairs):
        seq = dest / "set00" / f"V{i % 10:03d}"
        for folder, src in zip(("lwir", "visible"), p.paths):
            (seq / folder).mkdir(parents=True, exist_ok=True)
            (seq / folder / f"I{i:05d}{src.suffix}").symlink_to(src)
    return dest


def _photos(dest: Path, limit: int) -> Path:
    (dest / "images").mkdir(parents=True)
    for src in sorted((SHARED / "data/mf/Lytro20").glob("*-A.jpg"))[:limit]:
        (dest / "images" / src.name).symlink_to(src)
    return dest


def run(quick: bool = False) -> list[dict]:
    from fusion.data.kaist_pairs import KaistParams, build_kaist_pairs
    from fusion.data.sources import load_harvard, load_kaist
    from fusion.data.synth_multifocus import SynthParams, build
    from fusion.data.test_sets import TestSetParams, build_test_set

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    rows = [_row("cores", cores, "cores")]
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-prepare-") as tmp:
        tmp = Path(tmp)
        frames = load_kaist(_kaist_tree(tmp / "kaist", 40 if quick else 221))
        photos = _photos(tmp / "photos", 4 if quick else 20)
        harvard = load_harvard(SHARED / "data/medical/Harvard")
        if quick:
            harvard = type(harvard)(harvard[:60], (), harvard.root)
        jobs = {
            "KAIST pairs 256x256 gray": (
                len(frames),
                lambda out, w: build_kaist_pairs(
                    frames, out, KaistParams(pairs=0, size=256), source={"name": "bench"}, workers=w
                ),
            ),
            "synthetic multi-focus (Eq. 11)": (
                len(list((photos / "images").iterdir())) * 4,
                lambda out, w: build(
                    photos, out, SynthParams(max_side=520, pairs_per_image=4, test_images=1), workers=w
                ),
            ),
            "test set copy (Harvard)": (
                len(harvard),
                lambda out, w: build_test_set(harvard, out, TestSetParams(), source={"name": "bench"}, workers=w),
            ),
        }
        for label, (count, fn) in jobs.items():
            seconds = {}
            for workers in (1, cores):
                start = time.perf_counter()
                fn(tmp / f"{len(seconds)}-{label[:5]}", workers)
                seconds[workers] = time.perf_counter() - start
                rows.append(_row(f"{label}: {workers} process(es)", count / seconds[workers], "pairs/s"))
            rows.append(_row(f"{label}: speed-up with {cores} processes", seconds[1] / seconds[cores], "x"))
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    main(["prepare"])
