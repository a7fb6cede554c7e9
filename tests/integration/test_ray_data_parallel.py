"""Data-parallel training on real Ray Train workers (gloo on CPU): `train.ray.num_workers: 2`
trains one model on two processes that each take half of every global batch, and ends where
one worker with the same global batch ends, to float32 reduction noise."""

from __future__ import annotations

import shutil

import pytest
import torch

from fusion.checkpoint import LAST, load_checkpoint
from fusion.config import load_config
from fusion.errors import ConfigError
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SETTINGS = ["train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=4", "train.ray.cpus_per_worker=1"]


@pytest.fixture
def ray_local():
    import ray

    yield
    ray.shutdown()


def _cfg(tmp_path, *extra: str):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    return load_config(tmp_path, "tiny", [*SETTINGS, *extra])


def test_two_data_parallel_workers_end_where_one_worker_ends(tmp_path, tiny_prepared, ray_local):
    from fusion.train.distributed import train_with_ray

    one = train_with_ray(_cfg(tmp_path), tiny_prepared, tmp_path / "ray", "dp-one", tmp_path / "one")
    two = train_with_ray(
        _cfg(tmp_path, "train.ray.num_workers=2"), tiny_prepared, tmp_path / "ray", "dp-two", tmp_path / "two"
    )
    a, b = load_checkpoint(one / LAST), load_checkpoint(two / LAST)
    assert (a["data_parallel_workers"], b["data_parallel_workers"]) == (1, 2)
    assert a["global_step"] == b["global_step"] == 4
    # the logged losses are the global batch's (the workers' shares averaged), not one share's
    for h1, h2 in zip(a["history"], b["history"], strict=True):
        assert h2["train/epoch_loss"] == pytest.approx(h1["train/epoch_loss"], rel=1e-6)
        assert h2["val/loss"] == pytest.approx(h1["val/loss"], rel=1e-6)
    diff = torch.cat([(b["state_dict"][k] - w).abs().reshape(-1) for k, w in a["state_dict"].items()])
    # Reduction noise in the gradients, and where a gradient is nearly zero Adam's normalised
    # step (up to train.lr each) turns that noise into a visible move: measured on 2 cores,
    # median 1.6e-8, 99% of the weights within 3e-6, the largest 1e-4 after 4 steps at lr 1e-3.
    lr = load_config(REPO, "tiny").train.lr
    assert float(diff.median()) < 1e-6 and float(diff.quantile(0.99)) < 1e-4 and float(diff.max()) < 0.5 * lr

    # `fusion reproduce` trains a data-parallel run again without Ray, as two processes in a
    # gloo group: the same arithmetic, so the same weights to the bit
    import os

    from fusion.reproduce import retrain

    config = tmp_path / "resolved.json"
    config.write_text(_cfg(tmp_path, "train.ray.num_workers=2").model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert retrain(config, tiny_prepared, tmp_path / "again", "1", 2, REPO, env) is None
    c = load_checkpoint(tmp_path / "again" / LAST)
    assert c["data_parallel_workers"] == 2
    assert all(torch.equal(w, c["state_dict"][k]) for k, w in b["state_dict"].items())
    assert [h["val/loss"] for h in c["history"]] == [h["val/loss"] for h in b["history"]]


def test_a_batch_that_does_not_split_and_more_workers_than_the_cluster_are_refused_up_front(
    tmp_path, tiny_prepared, ray_local
):
    from fusion.train.distributed import train_with_ray

    with pytest.raises(ConfigError, match=r"train\.batch_size=4: not a multiple of train\.ray\.num_workers=3"):
        _cfg(tmp_path, "train.ray.num_workers=3")
    with pytest.raises(ConfigError, match=r"train\.ray\.num_workers=4 x train\.ray\.cpus_per_worker=1\.0 but the Ray"):
        train_with_ray(
            _cfg(tmp_path, "train.ray.num_workers=4"), tiny_prepared, tmp_path / "ray", "dp-4", tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()
