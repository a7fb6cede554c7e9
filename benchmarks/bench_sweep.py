"""Sweeps: the same trials called directly vs through Ray Tune + MLflow, 1 vs 2 workers.

The trials are UFA-Fuse's four Table II variants at the smoke profile (tiny with --quick)
on the embedded synthetic multi-focus set, evaluation off so every arm does the same work:
- direct: `Trainer.fit` for each trial in this process, one after another, one thread each
  (what a trial gets), no Ray, no MLflow;
- Ray 1 worker: `fusion sweep` with max_concurrent 1 (Ray start, parent and child runs,
  per-step metrics and checkpoints to MLflow included);
- Ray 2 workers: the same sweep with two trials at a time (one CPU each).
Each Ray arm starts its own local Ray, so start-up is counted where a user pays it. With a
GPU, also: trials per hour packed 4 to a GPU (gpus 0.25 each) vs one trial at a time.

    python -m benchmarks.run sweep [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

NAME = "sweep"
REPO = Path(__file__).resolve().parents[1]


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def _workspace(tmp: Path, quick: bool) -> Path:
    from fusion.pipeline import new_workspace

    ws = new_workspace(tmp / "ws", REPO)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["sweeps"] = {
        "bench": {
            "profile": "tiny" if quick else "smoke",
            "overrides": ["train.epochs=2", "train.steps_per_epoch=4"] if quick else [],
            "matrix": [{"model": "ufa", "variants": ["UFA", "NO-UFA"] if quick else "all"}],
            "resources": {"cpus": 1, "gpus": 0},
            "evaluate": False,
        }
    }
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


def _sweep(ws: Path, **kw) -> float:
    import ray

    from fusion.sweep.runner import run_sweep

    start = time.perf_counter()
    result = run_sweep(ws, "bench", new=True, **kw)
    seconds = time.perf_counter() - start
    ray.shutdown()
    bad = [t["trial"] for t in result.trials if t["status"] != "completed"]
    if bad:
        raise RuntimeError(f"benchmark sweep trials did not complete: {bad}")
    return seconds


def run(quick: bool = False) -> list[dict]:
    import torch

    from fusion.config import Config, load_config
    from fusion.pipeline import prepare
    from fusion.sweep.runner import plan
    from fusion.train.loop import Trainer

    rows = []
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-sweep-") as tmp:
        tmp = Path(tmp)
        ws = _workspace(tmp, quick)
        prepared = prepare(ws, load_config(ws), push=False)
        _, trials = plan(ws, "bench")
        n = len(trials)
        rows.append(_row("trials per sweep", n, "trials"))

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            for t in trials:
                Trainer(Config.model_validate(t.config), prepared.root).fit(tmp / "direct" / t.id)
            direct = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
        one = _sweep(ws, max_concurrent=1)
        two = _sweep(ws, max_concurrent=2)
        rows += [
            _row("direct Trainer.fit, one at a time", direct, "s"),
            _row("Ray Tune + MLflow, 1 worker", one, "s"),
            _row("Ray Tune + MLflow, 2 workers", two, "s"),
            _row("overhead of Ray + MLflow (1 worker vs direct)", 100 * (one - direct) / one, "% of wall"),
            _row("throughput, 1 worker", 3600 * n / one, "trials/h"),
            _row("throughput, 2 workers", 3600 * n / two, "trials/h"),
            _row("speed-up, 2 workers vs 1", one / two, "x"),
        ]
        if torch.cuda.is_available():
            params = yaml.safe_load((ws / "params.yaml").read_text())
            for gpus, label in ((1, "one trial per GPU"), (0.25, "four trials per GPU (gpus 0.25)")):
                params["sweeps"]["bench"]["resources"] = {"cpus": 1, "gpus": gpus}
                params["sweeps"]["bench"]["overrides"] = ["train.device=cuda"]
                (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                seconds = _sweep(ws)
                rows.append(_row(f"GPU throughput, {label}", 3600 * n / seconds, "trials/h"))
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    main(["sweep"])
