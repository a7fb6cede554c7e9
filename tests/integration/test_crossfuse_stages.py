"""CrossFuse's stage 2 starts from a stage-1 run that the tracker records and links."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_stage_two_starts_from_the_stage_one_mlflow_run(workspace, shared_data, monkeypatch):
    from fusion import pipeline, tracking
    from fusion.config import load_config
    from fusion.io import sha256_file
    from mlflow import MlflowClient

    source = {"layout": "tno", "path": str(shared_data / "irvis/TNO42"), "test_fraction": 0.1}
    common = {
        "model": "crossfuse",
        "variant": "full",
        "task": "ir-vis",
        "source": source,
        "device": "cpu",
        "crop": 32,
        "batch_size": 2,
        "steps_per_epoch": 2,
        "epochs": 1,
    }
    cfg1 = load_config(workspace, "tiny", {"train": {**common, "lr": 1e-4}})
    prepared = pipeline.prepare(workspace, cfg1, push=False)
    run1 = pipeline.start(workspace, cfg1, prepared)
    ckpt1 = pipeline.train(cfg1, prepared, run1, use_ray=False)
    assert pipeline.evaluate(cfg1, prepared, run1, ckpt1) is None  # auto-encoders do not fuse
    tracking.end_run(run1.target, run1.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run1.target.uri)

    cfg2 = load_config(
        workspace, "tiny", {"train": {**common, "variant": "no-shift", "lr": 1e-3, "init_from": f"runs:/{run1.run_id}"}}
    )
    run2 = pipeline.start(workspace, cfg2, prepared)
    ckpt2 = pipeline.train(cfg2, prepared, run2, use_ray=False)
    result = pipeline.evaluate(cfg2, prepared, run2, ckpt2)
    assert result.test_set.startswith("tno:TNO42/test") and result.methods[0] == "CrossFuse (w/o shift)"
    assert "Qabf" in result.metric_names and "SSIM_gt" not in result.metric_names  # no ground truth here

    client = MlflowClient(run1.target.uri)
    tags = client.get_run(run2.run_id).data.tags
    assert tags["init_from"] == f"runs:/{run1.run_id}" and tags["data.source"].startswith("tno:")
    from fusion.checkpoint import load_checkpoint

    payload = load_checkpoint(ckpt2 / "last.pt")
    assert payload["init_sha256"] == sha256_file(ckpt1 / "best.pt") and payload["stage"] == "fusion"
