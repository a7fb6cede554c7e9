"""Data-parallel scaling: one model trained on 1 and on 2 Ray Train workers, same global batch.

Both arms train UFA-Fuse (smoke profile settings; tiny with --quick) on the embedded synthetic
multi-focus set through `fusion.train.distributed.train_with_ray`, one CPU per worker, so the
2-worker arm uses two cores where the 1-worker arm uses one: on a 2-core machine the ratio is
the best case of adding a second machine's worth of cores without the network. Measured:
training throughput (pairs per second of the epochs after the first, which holds start-up),
and the communication share of a 2-worker step (time in the gradient all-reduce, which on
gloo includes waiting for the slower worker). Object-storage checkpoints are not measured
here: `storage.uri` is not built yet (issue 20).

    python -m benchmarks.run scaling [--quick]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

NAME = "scaling"
REPO = Path(__file__).resolve().parents[1]


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def run(quick: bool = False) -> list[dict]:
    import ray

    from fusion.checkpoint import LAST, load_checkpoint
    from fusion.config import load_config
    from fusion.data.embedded import export_embedded
    from fusion.data.synth_multifocus import SynthParams, build
    from fusion.train.distributed import train_with_ray

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        raw = export_embedded(tmp / "raw" / "embedded")
        data = tmp / "mf"
        build(raw, data, SynthParams(max_side=64 if quick else 256, pairs_per_image=1, test_images=3))
        shutil.copy2(REPO / "params.yaml", tmp / "params.yaml")
        steps, epochs, batch, crop = (4, 3, 4, 32) if quick else (8, 4, 8, 128)
        settings = [
            f"train.epochs={epochs}",
            f"train.steps_per_epoch={steps}",
            f"train.batch_size={batch}",
            f"train.crop={crop}",
            "train.ray.cpus_per_worker=1",
        ]
        seconds: dict[int, float] = {}
        try:
            for workers in (1, 2):
                cfg = load_config(tmp, "tiny", [*settings, f"train.ray.num_workers={workers}"])
                out = train_with_ray(cfg, data, tmp / "ray", f"scaling-{workers}", tmp / f"out{workers}")
                history = load_checkpoint(out / LAST)["history"][1:]  # the first epoch holds start-up
                seconds[workers] = sum(h["train/epoch_seconds"] for h in history)
                pairs = len(history) * steps * batch
                rows.append(
                    _row(
                        f"{workers} worker(s): training throughput, batch {batch} at {crop}x{crop}",
                        pairs / seconds[workers],
                        "pairs/s",
                    )
                )
                if workers > 1:
                    comm = sum(h["train/epoch_comm_seconds"] for h in history)
                    rows.append(
                        _row(
                            f"{workers} workers: gradient all-reduce share of training time",
                            100 * comm / seconds[workers],
                            "%",
                        )
                    )
        finally:
            ray.shutdown()
        rows.append(_row("2 workers vs 1: throughput ratio", seconds[1] / seconds[2], "x"))
    return rows
