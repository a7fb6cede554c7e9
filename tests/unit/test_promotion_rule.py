"""The champion rule: a model worse than a classical baseline on the same test data is never @champion."""

from __future__ import annotations

import pytest

from fusion import tracking
from fusion.config import load_config
from fusion.promotion import promote
from mlflow import MlflowClient


def _run(t, metrics: dict[str, float]) -> str:
    c = tracking.client(t)
    run = c.create_run(tracking.experiment_id(t), tags={"data.synthetic": "true", "eval.test_set": "abc"})
    for k, v in metrics.items():
        c.log_metric(run.info.run_id, k, v)
    c.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def store(workspace):
    cfg = load_config(workspace)
    return cfg, tracking.target(cfg, workspace)


def test_a_model_that_loses_to_a_baseline_is_challenger_with_the_numbers(store):
    cfg, t = store
    rid = _run(
        t,
        {
            "test/SSIM_gt": 0.915,
            "baseline/average/SSIM_gt": 0.962,
            "baseline/choose_max_gradient/SSIM_gt": 0.996,
            "test_sets/x/baseline/dwt/SSIM_gt": 0.999,
        },
    )
    d = promote(t, rid, cfg)
    assert d.alias == "challenger" and d.best_baseline == "choose_max_gradient" and d.baseline_value == 0.996
    assert d.reason == (
        "SSIM_gt 0.915 does not beat the best classical baseline choose_max_gradient 0.996 on the "
        "same test data (promote.require_beat_baselines)"
    )
    c = MlflowClient(tracking_uri=t.uri)
    assert c.get_run(rid).data.tags["promote.alias"] == "challenger"
    assert c.get_model_version(d.model_name, d.version).tags["promote.reason"] == d.reason


def test_a_model_that_beats_every_baseline_becomes_the_first_champion(store):
    cfg, t = store
    rid = _run(
        t, {"test/SSIM_gt": 0.998, "baseline/average/SSIM_gt": 0.962, "baseline/choose_max_gradient/SSIM_gt": 0.996}
    )
    d = promote(t, rid, cfg)
    assert d.alias == "champion" and "beats the best baseline choose_max_gradient 0.996" in d.reason


def test_without_baselines_the_rule_cannot_be_met_unless_switched_off(store, workspace):
    cfg, t = store
    rid = _run(t, {"test/SSIM_gt": 0.9})
    assert promote(t, rid, cfg).alias == "challenger"
    off = load_config(workspace, overrides=["promote.require_beat_baselines=false"])
    rid2 = _run(t, {"test/SSIM_gt": 0.9})
    assert promote(t, rid2, off).alias == "champion"
