"""Tracking stores that are down, mistyped or corrupt get one clear line naming what is wrong,
quickly, and nothing is created that the user did not ask for. Real SQLite stores and the
real CLI; the unreachable server is a closed loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tests.conftest import free_port

RUN = "0123456789abcdef0123456789abcdef"


def _fusion(*args, env_extra=None, timeout=120):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "fusion", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def _pair(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (32, 32), dtype=np.uint8))
        paths.append(tmp_path / name)
    return paths


def test_fuse_from_an_unreachable_tracking_server_fails_within_seconds_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    a, b = _pair(tmp_path)
    start = time.monotonic()
    try:
        # MLflow's own retries would take about 4 minutes; the test gives up well before
        proc = _fusion(
            "fuse",
            a,
            b,
            "--model",
            f"runs:/{RUN}",
            "--out",
            tmp_path / "f.png",
            env_extra={"MLFLOW_TRACKING_URI": uri},
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"fusion fuse against the unreachable {uri} still waited after 60 s")
    elapsed = time.monotonic() - start
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert proc.returncode == 2, proc.stderr
    assert uri in proc.stderr and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "f.png").exists()


def test_a_mistyped_sqlite_store_is_refused_and_nothing_is_created(tmp_path):
    uri = f"sqlite:///{tmp_path}/missing/dir/x.db"
    a, b = _pair(tmp_path)
    proc = _fusion(
        "fuse", a, b, "--model", f"runs:/{RUN}", "--out", tmp_path / "f.png", env_extra={"MLFLOW_TRACKING_URI": uri}
    )
    assert proc.returncode == 2, proc.stderr
    assert uri in proc.stderr and f"{tmp_path}/missing/dir does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "missing").exists(), "a new, empty store was created"


def test_a_mistyped_file_store_is_refused_too(tmp_path, monkeypatch):
    from fusion import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "nowhere" / "mlruns").as_uri())
    with pytest.raises(tracking.TrackingError, match="nowhere does not exist"):
        tracking.current_uri()
    assert not (tmp_path / "nowhere").exists()


def test_a_new_sqlite_store_in_an_existing_folder_is_still_created(tmp_path, monkeypatch):
    """The user asked for it by naming it: only a missing folder means a typo."""
    from fusion import tracking
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/new.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.current_uri() == uri
    MlflowClient(uri).search_experiments()
    assert (tmp_path / "new.db").is_file()


def test_the_workspace_default_store_is_created_under_the_workspace(workspace):
    from fusion import tracking
    from fusion.config import load_config

    t = tracking.target(load_config(workspace), workspace)
    assert t.uri.startswith("sqlite:///") and str(workspace) in t.uri
    tracking.experiment_id(t)
    assert (workspace / "mlflow" / "store" / "mlflow.db").is_file()


# ---------------------------------------------------------------------- the offline spool


def _spool(workspace, lines):
    path = workspace / "runs" / "r1" / "mlflow-spool.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_sync_with_a_corrupt_spool_says_which_file_and_line_and_what_to_do(workspace):
    from fusion import tracking
    from fusion.config import load_config

    t = tracking.target(load_config(workspace), workspace)
    run_id = tracking.client(t).create_run(tracking.experiment_id(t)).info.run_id
    good = json.dumps({"run_id": run_id, "kind": "metrics", "metrics": {"train/loss": 0.5}, "step": 1, "ts": 1})
    path = _spool(workspace, [good, '{"run_id": "' + run_id + '", "kind": "metr'])  # cut by a crash mid-write
    before = path.read_text()
    proc = _fusion("sync", "--workspace", workspace)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{path}: line 2 is not a tracking record" in lines[0] and "fusion sync" in lines[0]
    # nothing replayed out of order, nothing deleted
    assert path.read_text() == before
    assert tracking.client(t).get_metric_history(run_id, "train/loss") == []


@pytest.mark.parametrize("line", ["[1, 2]", '{"run_id": "x", "kind": "bogus"}', '{"kind": "tags", "tags": {}}'])
def test_a_spool_line_that_is_valid_json_but_not_a_record_is_refused(tmp_path, line):
    from fusion import tracking
    from fusion.tracking import Spool, SpoolError

    path = tmp_path / "mlflow-spool.jsonl"
    path.write_text(line + "\n")
    spool = Spool(tracking.TrackingTarget(f"sqlite:///{tmp_path}/s.db", "e", None), "x", path)
    with pytest.raises(SpoolError, match=rf"{path}: line 1 is not a tracking record"):
        spool.flush(force=True)


# ---------------------------------------------------------------------- the MLflow UI's view


def test_the_project_experiment_opens_in_the_model_training_view(tmp_path):
    from fusion import tracking

    t = tracking.TrackingTarget(f"sqlite:///{tmp_path}/m.db", "fusionflow", (tmp_path / "a").as_uri())
    exp = tracking.client(t).get_experiment(tracking.experiment_id(t))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_experiment_made_before_gets_the_kind_and_a_chosen_kind_is_kept(tmp_path):
    from fusion import tracking
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    old = MlflowClient(uri).create_experiment("old")
    chosen = MlflowClient(uri).create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    for name, exp_id, kind in (("old", old, "custom_model_development"), ("chosen", chosen, "genai_development")):
        assert tracking.experiment_id(tracking.TrackingTarget(uri, name, None)) == exp_id
        assert MlflowClient(uri).get_experiment(exp_id).tags["mlflow.experimentKind"] == kind


# ---------------------------------------------------------------------- interrupts and --resume


def test_a_run_ended_as_failed_while_ctrl_c_propagates_is_killed_and_reported(tmp_path, monkeypatch):
    from fusion import tracking
    from fusion.config import load_config
    from fusion.tracking import store
    from mlflow import MlflowClient
    from tests.conftest import REPO

    monkeypatch.setattr(store, "_OPEN", {})  # only this test's runs
    monkeypatch.setattr(store, "_INTERRUPTED", {})

    t = tracking.TrackingTarget(f"sqlite:///{tmp_path}/m.db", "e", (tmp_path / "a").as_uri())
    cfg = load_config(REPO, "tiny")
    stopped, running, done = (tracking.start_run(t, n, cfg, {}) for n in ("stopped", "running", "done"))
    tracking.end_run(t, done)
    try:
        raise KeyboardInterrupt
    except BaseException:  # what flows/nightly.py's train task does on any exception
        tracking.end_run(t, stopped, "FAILED")
    assert tracking.kill_open_runs() == [stopped, running]
    status = {r: MlflowClient(t.uri).get_run(r).info.status for r in (stopped, running, done)}
    assert status == {stopped: "KILLED", running: "KILLED", done: "FINISHED"}
    assert tracking.kill_open_runs() == []


def test_resume_refuses_a_finished_run_an_unknown_one_and_a_changed_config(workspace):
    from fusion import tracking
    from fusion.config import load_config

    cfg = load_config(workspace, "tiny")
    t = tracking.target(cfg, workspace)
    done = tracking.start_run(t, "done", cfg, {})
    tracking.end_run(t, done)
    proc = _fusion("train", "--resume", done, "--workspace", workspace)
    assert proc.returncode == 2 and f"--resume {done}: that run is FINISHED" in proc.stderr, proc.stderr
    proc = _fusion("train", "--resume", RUN, "--workspace", workspace)
    assert proc.returncode == 2 and f"--resume {RUN}: no such run" in proc.stderr, proc.stderr
    proc = _fusion("train", "--resume", "not-a-run", "--workspace", workspace)
    assert proc.returncode == 2 and "neither a checkpoint file nor an MLflow run id" in proc.stderr, proc.stderr
    proc = _fusion("train", "--resume", done, "--set", "train.lr=1", "--workspace", workspace)
    assert proc.returncode == 2 and "keeps the configuration it was started with" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
