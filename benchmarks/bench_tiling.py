"""Bounded-memory fusion: peak RSS and time of `fusion fuse` on a 12 MP pair under --max-memory 4GB.

The pair is a Lytro multi-focus pair scaled to 4000x3000 (the shared data), the model the
main job's UFA-Fuse (seeded random weights: memory and time do not depend on the weights).
Untiled, UFA-Fuse holds ~1.8 KB a pixel (~21 GB here); tiled under the budget it must stay
within it. Peak RSS is the fusing process's own (wait4), not a sampled guess.

    python -m benchmarks.run tiling           # 12 MP under 4 GB (minutes on a 2-core CPU)
    python -m benchmarks.run tiling --quick   # 1 MP under 1 GB
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

NAME = "tiling"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mf" / "Lytro20"


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def _pair(folder: Path, w: int, h: int) -> list[Path]:
    paths = []
    for k in "AB":
        src = SHARED / f"lytro-01-{k}.jpg"
        if src.is_file():
            img = cv2.resize(cv2.imread(str(src)), (w, h), interpolation=cv2.INTER_CUBIC)
        else:  # no shared data: a smooth synthetic pair (memory and time do not depend on content)
            img = (np.random.default_rng(ord(k)).random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        paths.append(folder / f"{k}.png")
        cv2.imwrite(str(paths[-1]), img)
    return paths


def peak_rss_of(cmd: list[str]) -> tuple[int, float, int, str]:
    """(peak RSS bytes, seconds, exit status, stderr) of one command."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return usage.ru_maxrss * 1024, time.perf_counter() - start, proc.returncode, err.read().decode()[-2000:]


def run(quick: bool = False) -> list[dict]:
    from fusion.checkpoint import untrained_checkpoint

    (w, h), budget = ((1200, 900), "1GB") if quick else ((4000, 3000), "4GB")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = untrained_checkpoint(folder / "ufa.pt", "ufa", "UFA")
        paths = _pair(folder, w, h)
        cmd = [
            sys.executable,
            "-m",
            "fusion",
            "fuse",
            *map(str, paths),
            "--model",
            str(ckpt),
            "--out",
            str(folder / "fused.png"),
            "--max-memory",
            budget,
            "--device",
            "cpu",
        ]
        rss, seconds, status, err = peak_rss_of(cmd)
        if status != 0:
            raise RuntimeError(f"fusion fuse failed ({status}): {err}")
    mp = w * h / 1e6
    return [
        _row(f"{mp:.1f} MP UFA-Fuse pair, --max-memory {budget}: peak RSS", rss / 2**30, "GiB"),
        _row(f"{mp:.1f} MP UFA-Fuse pair, --max-memory {budget}: wall time", seconds, "s"),
        _row(f"{mp:.1f} MP UFA-Fuse pair: peak RSS / budget", rss / (int(budget[:-2]) * 2**30), "ratio"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
