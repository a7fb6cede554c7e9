"""Paper-style reports across MLflow runs: one table with the best marked, a figure, logged back."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import cv2
import pytest

from fusion import evaluate as ev
from fusion.report import runs_report, select_runs


def _fake_model(gain):
    # a stand-in "model": a blend that favours the near source by `gain`
    return lambda srcs: (gain * srcs[0].astype(float) + (1 - gain) * srcs[1].astype(float)).round().astype("uint8")


@pytest.fixture
def store(tmp_path, tiny_prepared):
    """An MLflow SQLite store with three evaluated runs of one ablation family."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("ablation", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep").info.run_id
    test_set = ev.prepared_test_set(tiny_prepared)
    ids = {}
    for name, gain, data in (("NO-UFA", 0.5, "aaa"), ("UFA", 0.8, "aaa"), ("NO-SA", 0.6, "aaa")):
        run = client.create_run(
            exp, run_name=name, tags={"mlflow.parentRunId": parent, "data.dvc_md5": data}
        ).info.run_id
        methods = {"model": _fake_model(gain), **ev.baseline_methods(["average", "choose_max_gradient"])}
        result, samples = ev.evaluate_methods(test_set, methods, ["EN", "SSIM_gt", "L1_gt"], keep_images=2)
        out = tmp_path / name
        for p in ev.write_reports(result, out / "eval").values():
            client.log_artifact(run, str(p), "eval")
        ev.save_samples(samples, out / "samples", ["near", "far"])
        client.log_artifacts(run, str(out / "samples"), "eval/samples")
        client.set_terminated(run)
        ids[name] = run
    return client, exp, parent, ids, uri


def test_report_over_a_sweep_marks_the_best_and_logs_table_and_figure(store, tmp_path):
    client, exp, parent, ids, _ = store
    runs = select_runs(client, parent=parent)
    assert [r.info.run_name for r in runs] == ["NO-UFA", "UFA", "NO-SA"]
    report = runs_report(client, runs, tmp_path / "report", log_to=parent)
    assert list(report.means) == ["NO-UFA", "UFA", "NO-SA", "average", "choose_max_gradient"]
    assert report.runs["UFA"] == ids["UFA"] and report.runs["average"] == ""
    assert not report.warnings
    assert report.means["UFA"]["L1_gt"] != report.means["NO-UFA"]["L1_gt"]
    md = report.paths["table"].read_text()
    best_l1 = min(report.means, key=lambda m: report.means[m]["L1_gt"])
    assert "L1_gt ↓" in md and f"**{report.means[best_l1]['L1_gt']:.4f}**" in md
    assert ids["UFA"] in md  # legend links rows to runs
    rows = list(csv.reader(report.paths["table_csv"].open()))
    assert rows[0][:4] == ["method", "EN", "SSIM_gt", "L1_gt"] and rows[-1][0] == "best"
    assert best_l1 in rows[-1][3]
    fig = cv2.imread(str(report.paths["figure"]))
    assert fig is not None and fig.shape[1] > fig.shape[0]
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {"report/report.md", "report/report.csv", "report/comparison.png"}
    assert client.get_run(parent).data.metrics["report/UFA/SSIM_gt"] == pytest.approx(report.means["UFA"]["SSIM_gt"])


def test_report_warns_when_runs_read_different_data(store, tmp_path):
    client, exp, parent, ids, _ = store
    client.set_tag(ids["NO-SA"], "data.dvc_md5", "bbb")
    report = runs_report(client, select_runs(client, run_ids=[ids["UFA"], ids["NO-SA"]]), tmp_path / "r")
    assert any("different data versions" in w for w in report.warnings)
    assert "warning" in report.paths["table"].read_text()
    made = client.get_run(report.report_run_id)
    assert made.data.tags["fusionflow.report"] == "true" and made.info.status == "FINISHED"
    # report runs are not picked up as members of later reports
    assert report.report_run_id not in {r.info.run_id for r in select_runs(client, experiment="ablation")}


def test_report_cli_and_its_errors(store, tmp_path):
    client, exp, parent, ids, uri = store
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "report",
            "--experiment",
            "ablation",
            "--filter",
            "tags.`data.dvc_md5` = 'aaa'",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert {"report.md", "report.csv", "comparison.png"} <= {p.name for p in out.iterdir()}
    bad = subprocess.run(
        [sys.executable, "-m", "fusion", "report", "0" * 32, "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert bad.returncode == 2 and "not found" in bad.stderr
    none = subprocess.run(
        [sys.executable, "-m", "fusion", "report", "--experiment", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert none.returncode == 2 and "--experiment nope: no such experiment" in none.stderr
