"""The main job end to end: the Prefect flow on the tiny profile in a fresh workspace,
with its own DVC repo and MLflow store and a real local Ray instance."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cleanup():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_nightly_flow_end_to_end_then_reads_back_the_mlflow_run(workspace, ray_cleanup, capfd):
    from flows.nightly import nightly
    from mlflow import MlflowClient

    summary = nightly(profile="tiny", workspace=str(workspace))
    out = "".join(capfd.readouterr())
    # Ray Train's placement-group cleaner warned once a second without a dashboard, and each
    # epoch's report printed two more lines beside the trainer's own
    assert "Failed to query Ray Train Controller" not in out
    assert "Reporting training result" not in out and "Checkpoint successfully created" not in out
    assert "epoch 2/2 train/epoch_loss=" in out

    # DVC: raw data tracked, stage output locked, snapshot pushed to the local remote
    data_dvc = yaml.safe_load((workspace / "data.dvc").read_text())
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    out_md5 = lock["stages"]["synth_multifocus"]["outs"][0]["md5"]
    assert summary["data_hash"] == out_md5
    # a fresh workspace rebuilds exactly the data version committed in the project's dvc.lock
    from tests.conftest import REPO

    committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["synth_multifocus"]["outs"][0]["md5"]
    assert out_md5 == committed
    assert summary["stages_ran"] == ["synth_multifocus"]
    assert any((workspace / ".dvc-remote").rglob("*")), "snapshot was not pushed"

    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    assert summary["tracking_uri"].startswith("sqlite:///") and str(workspace) in summary["tracking_uri"]
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"

    p = run.data.params
    assert p["train.model"] == "ufa" and p["train.options.lambda_l1"] == "0.2" and p["profile"] == "tiny"
    assert p["data.synth_multifocus.pairs_per_image"] == "2"

    t = run.data.tags
    assert t["data.dvc_md5"] == out_md5 and t["data.raw_md5"] == data_dvc["outs"][0]["md5"]
    assert t["data.synthetic"] == "true"
    from fusion.data.manifest import data_version

    assert t["data.version"] == data_version(workspace / "prepared/multifocus_synthetic")  # manifest sha256
    assert len(t["git.commit"]) == 40 or t["git.commit"] == "unknown"
    assert t["git.dirty"] in ("true", "false", "unknown")

    m = run.data.metrics
    for method in ("test", "baseline/average", "baseline/choose_max_gradient"):
        for metric in ("EN", "SD", "AG", "SSIM_gt", "PSNR_gt"):
            value = m[f"{method}/{metric}"]
            assert value == value and value != float("inf"), f"{method}/{metric} = {value}"
    assert 0 < m["test/SSIM_gt"] <= 1
    assert m["baseline/choose_max_gradient/PSNR_gt"] > m["baseline/average/PSNR_gt"]  # sanity of the baselines
    steps = client.get_metric_history(run.info.run_id, "train/loss")
    assert [s.step for s in steps] == [1, 2, 3, 4]  # 2 epochs x 2 steps, per step, no duplicates
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2

    artifacts = {
        a.path
        for folder in ("checkpoints", "eval", "data", "config")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "eval/grid.png",
        "eval/table.md",
        "eval/table.csv",
        "eval/summary.json",
        "eval/per_pair.csv",
        "eval/samples",
        "data/dvc.lock",
        "config/resolved.json",
    } <= artifacts
    # the run's evaluation feeds a cross-run report (the sweep issue's parent runs use this)
    from fusion.report import runs_report

    report = runs_report(client, [run], workspace / "report", log_to=run.info.run_id)
    assert list(report.means) == [run.info.run_name, "average", "choose_max_gradient"] and "figure" in report.paths
    local = client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(workspace / "dl"))
    from fusion.checkpoint import model_from_checkpoint

    model, payload = model_from_checkpoint(local)
    assert payload["epoch"] == 2 and payload["config"]["profile"] == "tiny"

    # A second run with nothing changed does no data work
    from fusion.config import load_config
    from fusion.pipeline import prepare

    again = prepare(workspace, load_config(workspace, "tiny"))
    assert again.stages_ran == [] and again.data_hash == out_md5


def test_cli_run_reports_a_bad_parameter_before_any_work(workspace):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "run",
            "--workspace",
            str(workspace),
            "--profile",
            "tiny",
            "--set",
            "train.lamda_l1=0.3",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "train.lamda_l1: unknown parameter" in proc.stderr
    assert not (workspace / "data").exists() and not (workspace / ".dvc").exists()


def test_corrupt_raw_image_fails_the_data_stage_naming_the_file(workspace):
    from fusion.config import load_config
    from fusion.data.embedded import export_embedded
    from fusion.errors import FusionError
    from fusion.pipeline import prepare

    cfg = load_config(workspace, "tiny")
    raw = export_embedded(workspace / cfg.data.embedded.out)
    (raw / "images" / "rocket.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(FusionError, match="rocket.jpg: truncated JPEG"):
        prepare(workspace, cfg, push=False)
    out = workspace / cfg.data.synth_multifocus.out
    assert not out.exists()
    assert not out.parent.exists() or not [p for p in out.parent.iterdir() if "partial" in p.name]


def test_flow_logs_to_a_tracking_server_when_mlflow_tracking_uri_is_set(
    workspace, mlflow_server, monkeypatch, ray_cleanup
):
    from flows.nightly import nightly
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    summary = nightly(profile="tiny", workspace=str(workspace), overrides=["train.epochs=1"])
    assert summary["tracking_uri"] == mlflow_server
    assert not (workspace / "mlflow" / "store").exists()  # nothing went to the embedded store
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["data.synthetic"] == "true"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # logged from the Ray worker
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval")} >= {"eval/grid.png", "eval/table.md"}
    assert summary["run_url"].startswith(mlflow_server)
