"""Fractional GPUs per sweep trial (`resources: {gpus: 0.25}`) on real Ray, without a GPU.

A local Ray instance is started with one GPU it is told about (`ray.init(num_gpus=1)`), the
way Ray counts GPUs it cannot use: the plumbing (the request reaching Tune, Ray packing four
0.25 trials onto the one GPU at once, none over-subscribing it) is Ray's and ours alike,
whether or not a CUDA device is behind it. The trials themselves train on the CPU
(train.device=auto finds no CUDA). What only a real GPU shows, the four processes sharing its
memory and compute, is checked on a cluster as the README's "On a GPU" section says.
"""

from __future__ import annotations

import threading
import time

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SWEEPS = {
    "quarters": {
        "profile": "tiny",
        "overrides": ["train.epochs=1", "train.steps_per_epoch=2"],
        "matrix": [{"model": "ufa", "variants": ["UFA", "NO-UFA", "NO-SA", "NO-CA"]}],
        "resources": {"cpus": 0.5, "gpus": 0.25},
        "evaluate": False,
    },
}


@pytest.fixture
def fraction_ws(tmp_path):
    from fusion.config import load_config
    from fusion.pipeline import new_workspace, prepare

    ws = new_workspace(tmp_path / "ws", REPO)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["sweeps"] = SWEEPS
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepare(ws, load_config(ws), push=False)
    return ws


class _Held:
    """Samples what Ray has handed out while a sweep runs: (CPUs, GPUs) held at each instant."""

    def __init__(self):
        import ray

        self.ray = ray
        self.total = ray.cluster_resources()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            free = self.ray.available_resources()
            self.samples.append(tuple(round(self.total[k] - free.get(k, 0.0), 6) for k in ("CPU", "GPU")))
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def test_quarter_gpu_trials_pack_four_to_a_gpu_and_a_cluster_without_gpus_is_refused(fraction_ws):
    import ray

    from fusion.errors import ConfigError
    from fusion.sweep.runner import run_sweep
    from fusion.train.distributed import OBJECT_STORE_BYTES, quiet_ray_workers

    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        runtime_env={"worker_process_setup_hook": quiet_ray_workers},
    )
    try:
        assert ray.cluster_resources()["GPU"] == 1
        with _Held() as held:
            result = run_sweep(fraction_ws, "quarters")
    finally:
        ray.shutdown()
    assert {t["status"] for t in result.trials} == {"completed"} and len(result.trials) == 4
    # at some instant all four trials ran (4 x 0.5 CPU) holding a quarter of the one GPU each,
    # and no instant had more GPU out than the cluster has
    assert (2.0, 1.0) in held.samples, sorted(set(held.samples))
    assert max(gpu for _, gpu in held.samples) <= 1.0

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES)
    try:
        with pytest.raises(
            ConfigError, match=r"sweeps\.quarters\.resources\.gpus=0\.25 but the Ray cluster has 0 GPUs"
        ):
            run_sweep(fraction_ws, "quarters", new=True)
    finally:
        ray.shutdown()
