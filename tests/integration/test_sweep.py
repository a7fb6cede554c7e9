"""Sweeps on real Ray: local, and a two-node cluster started on loopback with `ray start`.

- a sweep with a CrossFuse stage-1 dependency and a trial with an unknown variant: the bad
  trial fails alone with its error on its MLflow run, the rest completes, the parent run
  holds the trial table and the comparison report; running it again does nothing.
- on a two-node cluster, a trial's worker process is killed mid-training: Ray restarts
  the trial, it continues from its last checkpoint, and its weights and metric history
  equal an uninterrupted run of the same seed; MLflow has every step exactly once.
- a sweep interrupted with Ctrl-C is continued by the next run: same parent run, the
  trial resumes from its checkpoint (not from epoch 0) and ends with the same weights.
- a data-parallel trial (train.ray.num_workers: 2) trains on two Ray Train workers started
  from its Tune trial; one worker killed mid-training, Ray Train restarts the group, it
  continues from the trial's last.pt and ends bit-identical to two uninterrupted gloo
  processes; one whose workers the cluster can never place fails alone. (Slow where the
  cluster without a shared disk can be built: test_object_storage_cluster.py does the same there.)
- a budget spent before the trials start leaves them not_started (parent KILLED); the next
  run, without a budget, continues the same sweep and completes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, stop_ray_nodes, why_no_isolated_node

pytestmark = pytest.mark.integration

FUSION = str(Path(sys.executable).parent / "fusion")
RAY = str(Path(sys.executable).parent / "ray")
# long enough (about 1 s an epoch on one core) to be interrupted between two checkpoints
SLOW = ["train.epochs=6", "train.steps_per_epoch=12", "train.crop=48"]
DP = ["train.epochs=4", "train.steps_per_epoch=8", "train.crop=48"]  # two workers: killed after epoch 2
SWEEPS = {
    "mixed": {
        "profile": "tiny",
        "overrides": ["train.epochs=2", "train.steps_per_epoch=2"],
        "matrix": [
            {"model": "ufa", "variants": ["UFA", "NOPE"]},
            {"model": "crossfuse", "variants": ["s1-c1"]},
            # 2 workers of 2 CPUs + the trial's own CPU on a 2-CPU Ray: can never be placed, fails alone
            {"model": "ufa", "variants": ["UFA"], "grid": {"train.ray.num_workers": [2]}},
        ],
        "resources": {"cpus": 1},
    },
    "ft": {
        "profile": "tiny",
        "overrides": SLOW,
        "matrix": [{"model": "ufa", "variants": ["UFA", "NO-UFA"]}],
        "resources": {"cpus": 1},
        "max_failures": 2,
        "evaluate": False,
    },
    "resume": {
        "profile": "tiny",
        "overrides": SLOW,
        "matrix": [{"model": "ufa", "variants": ["UFA"]}],
        "resources": {"cpus": 1},
        "evaluate": False,
    },
    "dp": {  # a data-parallel trial: 2 Ray Train workers of half a CPU beside the trial's own CPU
        "profile": "tiny",
        "overrides": [*DP, "train.ray.num_workers=2", "train.ray.cpus_per_worker=0.5"],
        "matrix": [{"model": "ufa", "variants": ["UFA"]}],
        "resources": {"cpus": 1},
    },
    # two data-parallel trials that each fit (1 + 2 x 0.5 CPUs) but not together: started side
    # by side, both held a CPU and waited for their workers for good
    "pair": {
        "profile": "tiny",
        "overrides": ["train.epochs=1", "train.ray.num_workers=2", "train.ray.cpus_per_worker=0.5"],
        "matrix": [{"model": "ufa", "variants": ["NO-SA", "NO-CA"]}],
        "resources": {"cpus": 1},
        "budget_minutes": 5,  # a regression ends as out_of_time, not as a hung suite
        "evaluate": False,
    },
    "budget": {
        "profile": "tiny",
        "overrides": ["train.epochs=1"],
        "matrix": [{"model": "ufa", "variants": ["NO-SA", "NO-CA"]}],
        "evaluate": False,
    },
}
TRIAL = "ufa-UFA-multi-focus-s0"


@pytest.fixture(scope="module")
def sweep_ws(tmp_path_factory) -> Path:
    """One workspace with the test sweeps and its data prepared (DVC) once."""
    from fusion.config import load_config
    from fusion.pipeline import new_workspace, prepare

    ws = new_workspace(tmp_path_factory.mktemp("sweep") / "ws", REPO)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["sweeps"] = SWEEPS
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepare(ws, load_config(ws), push=False)
    return ws


@pytest.fixture(scope="module")
def reference(sweep_ws, tmp_path_factory):
    """TRIAL of the `ft`/`resume` sweeps trained without interruption, on one thread as the trials are."""
    import torch

    from fusion.checkpoint import load_checkpoint
    from fusion.config import Config, load_config
    from fusion.pipeline import current_data
    from fusion.sweep.runner import plan
    from fusion.train.loop import Trainer

    _, trials = plan(sweep_ws, "ft")
    cfg = Config.model_validate(next(t for t in trials if t.id == TRIAL).config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference")
        Trainer(cfg, current_data(sweep_ws, load_config(sweep_ws)).root).fit(out)
    finally:
        torch.set_num_threads(threads)
    return load_checkpoint(out / "last.pt")


def _trial_dir(ws: Path, sweep: str, trial: str) -> Path:
    found = sorted((ws / "runs" / "sweeps").glob(f"{sweep}-*/{trial}"))
    return found[-1] if found else ws / "missing"


def _wait_for_epoch(ws: Path, sweep: str, trial: str, epoch: int, proc, timeout: float = 240) -> Path:
    """Poll the trial's last.pt (written atomically) until it holds `epoch` epochs."""
    from fusion.checkpoint import load_checkpoint

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sweep exited early with {proc.returncode}"
        last = _trial_dir(ws, sweep, trial) / "checkpoints" / "last.pt"
        if last.is_file() and load_checkpoint(last)["epoch"] >= epoch:
            return last.parents[1]
        time.sleep(0.2)
    raise TimeoutError(f"{trial} did not reach epoch {epoch}")


def _same_training(a: dict, b: dict, epochs: int = 6) -> None:
    import torch

    assert a["epoch"] == b["epoch"] == epochs
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [h["val/loss"] for h in a["history"]] == [h["val/loss"] for h in b["history"]]
    assert [h["train/epoch_loss"] for h in a["history"]] == [h["train/epoch_loss"] for h in b["history"]]


def _once_each(client, run_id: str, key: str, expected: list[int]) -> None:
    steps = sorted(m.step for m in client.get_metric_history(run_id, key))
    assert steps == expected, f"{key}: steps {steps}"


def test_sweep_failing_trial_dependency_and_report(sweep_ws):
    import ray

    from fusion import tracking
    from fusion.config import load_config
    from fusion.sweep.runner import run_sweep
    from mlflow import MlflowClient

    try:
        result = run_sweep(sweep_ws, "mixed")
        again = run_sweep(sweep_ws, "mixed")
    finally:
        ray.shutdown()
    status = {t["trial"]: t for t in result.trials}
    assert {k: v["status"] for k, v in status.items()} == {
        "crossfuse-stage1-multi-focus-s0": "completed",
        "ufa-UFA-multi-focus-s0": "completed",
        "ufa-NOPE-multi-focus-s0": "failed",
        "crossfuse-s1-c1-multi-focus-s0": "completed",
        "ufa-UFA-multi-focus-s0-num_workers=2": "failed",
    }
    assert "unknown variant 'NOPE'" in status["ufa-NOPE-multi-focus-s0"]["error"]
    assert (
        "train.ray.num_workers=2 x train.ray.cpus_per_worker=2.0 + the trial's own 1 but the Ray cluster has 2.0 CPUs"
        in status["ufa-UFA-multi-focus-s0-num_workers=2"]["error"]
    )
    assert result.finished and not result.resumed

    client = MlflowClient(tracking.target(load_config(sweep_ws), sweep_ws).uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.role"] == "parent"
    children = {
        r.data.tags["sweep.trial"]: r
        for r in client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    }
    assert set(children) == set(status)
    bad = children["ufa-NOPE-multi-focus-s0"]
    assert bad.info.status == "FAILED" and "unknown variant 'NOPE'" in bad.data.tags["sweep.error"]
    stage2 = children["crossfuse-s1-c1-multi-focus-s0"]
    assert stage2.data.tags["sweep.depends_on"] == "crossfuse-stage1-multi-focus-s0"
    assert stage2.data.tags["init_from"].endswith("crossfuse-stage1-multi-focus-s0/checkpoints/best.pt")
    assert stage2.data.params["train.stage"] == "fusion"
    ckpt = Path(client.download_artifacts(stage2.info.run_id, "checkpoints/best.pt", str(sweep_ws / "dl")))
    from fusion.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt)["init_from"] == stage2.data.tags["init_from"]
    for trial in ("ufa-UFA-multi-focus-s0", "crossfuse-s1-c1-multi-focus-s0"):
        run = children[trial]
        assert run.info.status == "FINISHED" and run.data.tags["train.executor"] == "ray-tune"
        assert run.data.params["train.epochs"] == "2" and "test/SSIM_gt" in run.data.metrics
    files = {f.path for f in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/trials.md", "sweep/trials.csv", "sweep/trials.json"} <= files
    table = Path(
        client.download_artifacts(result.parent_run_id, "report/multi-focus/report.md", str(sweep_ws / "dl"))
    ).read_text()
    assert "ufa-UFA-multi-focus-s0" in table and "crossfuse-s1-c1-multi-focus-s0" in table
    assert "NOPE" not in table and "stage1" not in table
    # the same sweep again: already complete, nothing new in MLflow
    assert again.resumed and again.parent_run_id == result.parent_run_id
    assert len(client.search_runs([parent.info.experiment_id], "tags.`sweep.name` = 'mixed'")) == 6


def _ray(*args: str, env: dict) -> None:
    subprocess.run([RAY, *args], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=180)


@pytest.fixture
def ray_cluster():
    """`ray start --head` plus a second node joining it, one CPU each, their temp dirs under
    one folder; both stopped after (only they: not with `ray stop`), this process's Ray first."""
    import shutil
    import tempfile

    import ray

    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    port = free_port()
    import secrets

    # token authentication, as a multi-node cluster should run (the README's cluster recipe)
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"
    try:
        _ray(
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--object-store-memory=150000000",
            f"--temp-dir={temp}",
            env=env,
        )
        _ray(
            "start",
            f"--address={address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--object-store-memory=150000000",
            f"--temp-dir={temp}/node2",
            env=env,
        )
        yield address, env
    finally:
        ray.shutdown()
        stop_ray_nodes(Path(temp))
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow  # CI runs the same on the two-node cluster without a shared disk (test_object_storage_cluster.py)
def test_killed_worker_on_two_node_cluster_resumes_exactly(sweep_ws, ray_cluster, mlflow_server, reference, tmp_path):
    from fusion.checkpoint import load_checkpoint
    from mlflow import MlflowClient

    address, env = ray_cluster
    env = {**env, "RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": mlflow_server}
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen([FUSION, "sweep", "ft", "-w", str(sweep_ws)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        tdir = _wait_for_epoch(sweep_ws, "ft", TRIAL, 2, proc)
        worker = json.loads((tdir / "worker.json").read_text())
        assert worker["attempt"] == 1
        os.kill(worker["pid"], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    record = json.loads((tdir / "status.json").read_text())
    assert record["status"] == "completed" and record["attempts"] == 2
    _same_training(load_checkpoint(tdir / "checkpoints" / "last.pt"), reference)
    other = json.loads((_trial_dir(sweep_ws, "ft", "ufa-NO-UFA-multi-focus-s0") / "status.json").read_text())
    assert other["status"] == "completed" and other["attempts"] == 1

    client = MlflowClient(mlflow_server)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["sweep.attempts"] == "2"
    _once_each(client, run.info.run_id, "train/loss", list(range(1, 6 * 12 + 1)))
    _once_each(client, run.info.run_id, "val/loss", list(range(1, 7)))
    files = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert files == {"checkpoints/best.pt", "checkpoints/last.pt"}


def test_interrupted_sweep_is_continued_by_the_next_run(sweep_ws, reference, tmp_path):
    from fusion import tracking
    from fusion.checkpoint import load_checkpoint
    from fusion.config import load_config
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(
        [FUSION, "sweep", "resume", "-w", str(sweep_ws)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        tdir = _wait_for_epoch(sweep_ws, "resume", TRIAL, 2, proc)
        proc.send_signal(signal.SIGTERM)  # a scheduler's stop: it takes Ctrl-C's path
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    said = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 143, said[-3000:]
    assert "interrupted: sweep resume stopped" in " ".join(said.split()), said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    first = json.loads((tdir / "status.json").read_text())
    assert first["status"] == "interrupted", first
    epochs_before = load_checkpoint(tdir / "checkpoints" / "last.pt")["epoch"]
    assert 2 <= epochs_before < 6
    client = MlflowClient(tracking.target(load_config(sweep_ws), sweep_ws).uri)
    assert client.get_run(first["run_id"]).info.status == "KILLED"

    out = subprocess.run(
        [FUSION, "sweep", "resume", "-w", str(sweep_ws)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resumed" in out.stdout
    record = json.loads((tdir / "status.json").read_text())
    assert record["status"] == "completed" and record["attempts"] == 2
    _same_training(load_checkpoint(tdir / "checkpoints" / "last.pt"), reference)
    parents = client.search_runs(
        [client.get_run(record["run_id"]).info.experiment_id],
        "tags.`sweep.name` = 'resume' and tags.`sweep.role` = 'parent'",
    )
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    _once_each(client, record["run_id"], "val/loss", list(range(1, 7)))
    _once_each(client, record["run_id"], "train/loss", list(range(1, 6 * 12 + 1)))


def test_a_spent_budget_leaves_trials_not_started_and_the_next_run_completes_them(sweep_ws):
    from fusion import tracking
    from fusion.config import load_config
    from fusion.sweep.runner import run_sweep
    from mlflow import MlflowClient

    first = run_sweep(sweep_ws, "budget", budget_minutes=1e-4, use_ray=False)  # spent while the data is checked
    assert {t["status"] for t in first.trials} == {"not_started"} and not first.finished
    client = MlflowClient(tracking.target(load_config(sweep_ws), sweep_ws).uri)
    assert client.get_run(first.parent_run_id).info.status == "KILLED"
    assert json.loads(client.get_run(first.parent_run_id).data.tags["sweep.counts"]) == {"not_started": 2}

    second = run_sweep(sweep_ws, "budget", budget_minutes=0, use_ray=False)  # 0: no limit
    assert second.resumed and second.parent_run_id == first.parent_run_id
    assert {t["status"] for t in second.trials} == {"completed"} and second.finished
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"
    children = client.search_runs(
        [client.get_run(first.parent_run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{first.parent_run_id}'"
    )
    assert sorted(r.data.tags["sweep.trial"] for r in children) == [
        "ufa-NO-CA-multi-focus-s0",
        "ufa-NO-SA-multi-focus-s0",
    ]
    assert all(r.data.tags["train.executor"] == "local" for r in children)


def _train_workers(since: float) -> list[int]:
    """This user's Ray Train worker processes started after `since`."""
    import psutil

    return [
        p.pid
        for p in psutil.process_iter(["uids", "cmdline", "create_time"])
        if p.info["uids"]
        and p.info["uids"].real == os.getuid()
        and p.info["create_time"] >= since
        and "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
    ]


# Where the two-node cluster without a shared disk can be built (root, unshare), CI kills a worker
# of a data-parallel sweep trial there (test_object_storage_cluster.py) and this local copy is
# slow; elsewhere it is the one that runs.
@(pytest.mark.slow if why_no_isolated_node() is None else pytest.mark.integration)
def test_a_data_parallel_trial_trains_on_two_workers_and_a_killed_worker_resumes_exactly(sweep_ws, tmp_path):
    from fusion import tracking
    from fusion.checkpoint import load_checkpoint
    from fusion.config import load_config
    from fusion.pipeline import current_data
    from fusion.reproduce import retrain
    from fusion.sweep.runner import plan
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = open(tmp_path / "sweep.log", "w")
    started = time.time()
    proc = subprocess.Popen([FUSION, "sweep", "dp", "-w", str(sweep_ws)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        tdir = _wait_for_epoch(sweep_ws, "dp", TRIAL, 2, proc)
        workers = _train_workers(started)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)  # Ray Train restarts its worker group; the trial goes on
        assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "sweep.log").read_text()
    assert "resumed from" in output, output[-3000:]
    record = json.loads((tdir / "status.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 4 and record["attempts"] == 1
    trained = load_checkpoint(tdir / "checkpoints" / "last.pt")
    assert trained["data_parallel_workers"] == 2

    # the same configuration trained without interruption by two gloo processes (fusion reproduce's way)
    _, trials = plan(sweep_ws, "dp")
    config = tmp_path / "trial.json"
    config.write_text(json.dumps(next(t for t in trials if t.id == TRIAL).config))
    data = current_data(sweep_ws, load_config(sweep_ws)).root
    assert retrain(config, data, tmp_path / "reference", "1", 2, REPO, {**env, "PYTHONPATH": str(REPO)}) is None
    _same_training(trained, load_checkpoint(tmp_path / "reference" / "last.pt"), epochs=4)

    client = MlflowClient(tracking.target(load_config(sweep_ws), sweep_ws).uri)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["train.executor"] == "ray-tune"
    assert run.data.params["train.ray.num_workers"] == "2" and "test/SSIM_gt" in run.data.metrics
    _once_each(client, run.info.run_id, "train/loss", list(range(1, 4 * 8 + 1)))
    _once_each(client, run.info.run_id, "val/loss", list(range(1, 5)))


def test_data_parallel_trials_that_fit_one_at_a_time_run_one_at_a_time(sweep_ws):
    import ray

    from fusion import tracking
    from fusion.config import load_config
    from fusion.sweep.runner import run_sweep
    from mlflow import MlflowClient

    try:
        result = run_sweep(sweep_ws, "pair")
    finally:
        ray.shutdown()
    assert {t["trial"]: t["status"] for t in result.trials} == {
        "ufa-NO-SA-multi-focus-s0": "completed",
        "ufa-NO-CA-multi-focus-s0": "completed",
    }
    # one after the other: the steps MLflow recorded for one trial all came before the other's
    client = MlflowClient(tracking.target(load_config(sweep_ws), sweep_ws).uri)
    spans = sorted(
        (min(stamps), max(stamps))
        for t in result.trials
        if (stamps := [m.timestamp for m in client.get_metric_history(t["run_id"], "train/loss")])
    )
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans


def test_without_ray_a_data_parallel_trial_is_recorded_as_failed_saying_why(sweep_ws):
    from fusion import tracking
    from fusion.config import load_config
    from fusion.sweep.runner import run_sweep
    from mlflow import MlflowClient

    result = run_sweep(sweep_ws, "dp", ["train.epochs=1"], use_ray=False)
    (row,) = result.trials
    assert row["status"] == "failed", row
    assert (
        "train.ray.num_workers=2: a data-parallel trial trains on Ray workers; run the sweep without --no-ray"
        in (row["error"])
    )
    run = MlflowClient(tracking.target(load_config(sweep_ws), sweep_ws).uri).get_run(row["run_id"])
    assert run.info.status == "FAILED" and "without --no-ray" in run.data.tags["sweep.error"]
