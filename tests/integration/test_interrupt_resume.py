"""Ctrl-C in a tracked `fusion train` / `fusion run`, then `fusion train --resume RUN_ID`.

Real processes and a real tracking store (the workspace's embedded SQLite store): the command
is started in a session of its own and the whole group gets SIGINT after the first checkpoint,
as a terminal's Ctrl-C does. The run must be KILLED with one line saying how to continue; the
resumed run is the same MLflow run, finishes every epoch with each step logged once, and its
weights equal an uninterrupted run's bit for bit (the trainer is deterministic on CPU).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.integration

EPOCHS, STEPS = 8, 3
SETTINGS = [
    "--profile",
    "tiny",
    "--set",
    f"train.epochs={EPOCHS}",
    "--set",
    f"train.steps_per_epoch={STEPS}",
    "--set",
    "train.ray.cpus_per_worker=1",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the Ray worker uses: same arithmetic


def _fusion(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusion", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        cwd=REPO,
    )


def _client(ws: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{ws / 'mlflow' / 'store' / 'mlflow.db'}")


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A workspace with its data prepared, and an uninterrupted run's final checkpoint."""
    from fusion.pipeline import new_workspace

    ws = new_workspace(tmp_path_factory.mktemp("interrupt") / "ws", REPO)
    done = _fusion("train", "--no-ray", "--workspace", ws, *SETTINGS)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (ws / "runs").iterdir()
    return ws, _weights(run_dir)


def _interrupt(ws: Path, log: Path, *command: str, ray: bool, sigterm: bool = False) -> tuple[int, str, float]:
    """Start `fusion COMMAND` in its own process group, Ctrl-C it (the whole group, as a terminal
    does) or send it SIGTERM (the process alone, as `kill` and schedulers do) once its run has a
    checkpoint; (exit status, stderr, seconds from the signal to the exit)."""
    before = set((ws / "runs").iterdir())
    with open(log, "w") as err:  # a file, not a pipe: Ray's log lines would fill a pipe nobody reads
        # SIGINT back to its default first: a suite started in the background (`make test &`, nohup)
        # hands its children SIGINT ignored, and a Python started so never sees Ctrl-C; a terminal's does
        proc = subprocess.Popen(
            [sys.executable, "-m", "fusion", *command],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=ENV,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 400
        while proc.poll() is None and time.monotonic() < deadline:
            new = [d for d in (ws / "runs").iterdir() if d not in before]
            if new and any(new[0].glob("ray/*/checkpoint_*" if ray else "checkpoints/last.pt")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"finished before the interrupt: {log.read_text()[-2000:]}"
        if sigterm:
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"still running 120 s after the signal: {log.read_text()[-2000:]}")
    return proc.returncode, log.read_text(), time.monotonic() - sent


def _killed_run(ws: Path, rc: int, err: str, status: int = 130) -> str:
    assert rc == status, err[-3000:]
    found = re.findall(
        r"interrupted: MLflow run ([0-9a-f]{32}) marked KILLED; continue it with "
        r"`fusion train --resume ([0-9a-f]{32}) --workspace (\S+)`",
        err,
    )
    assert len(found) == 1, err[-3000:]
    run_id, resume_id, where = found[0]
    assert resume_id == run_id and where == str(ws)
    run = _client(ws).get_run(run_id)
    assert run.info.status == "KILLED"
    epochs = _client(ws).get_metric_history(run_id, "val/loss")
    assert 1 <= len(epochs) < EPOCHS, "the interrupt came too late to test anything"
    return run_id


def _resume_and_check(ws: Path, run_id: str, expected: dict) -> None:
    client = _client(ws)
    exp = client.get_run(run_id).info.experiment_id
    runs_before = len(client.search_runs([exp]))
    done = _fusion("train", "--resume", run_id, "--workspace", ws)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"MLflow run {run_id} (resumed)" in " ".join(done.stdout.split())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([exp])) == runs_before, "resuming started another run"
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(steps) == list(range(1, EPOCHS * STEPS + 1)), "a step is missing or logged twice"
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/loss")) == list(range(1, EPOCHS + 1))
    resumed = _weights(ws / "runs" / run.info.run_name)
    assert resumed["epoch"] == EPOCHS
    a, b = resumed["state_dict"], expected["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ from the uninterrupted run"


def test_ctrl_c_in_train_kills_the_run_and_resume_finishes_the_same_run(reference, tmp_path):
    ws, expected = reference
    rc, err, _ = _interrupt(
        ws, tmp_path / "train.log", "train", "--no-ray", "--workspace", str(ws), *SETTINGS, ray=False
    )
    assert "Traceback" not in err
    _resume_and_check(ws, _killed_run(ws, rc, err), expected)


def test_sigterm_in_train_kills_the_run_exits_143_and_says_how_to_resume(reference, tmp_path):
    """A scheduler's stop or `kill PID`: as Ctrl-C, not a silent death that leaves the run RUNNING."""
    ws, _ = reference
    rc, err, seconds = _interrupt(
        ws, tmp_path / "term.log", "train", "--no-ray", "--workspace", str(ws), *SETTINGS, ray=False, sigterm=True
    )
    assert "Traceback" not in err
    _killed_run(ws, rc, err, status=143)
    assert seconds < 30, f"exited {seconds:.0f} s after SIGTERM"


@pytest.mark.slow  # ~2 min on 2 cores each: `make test-slow`; the in-process variants above run in every suite
@pytest.mark.parametrize("sigterm", [False, True], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_in_ray_training_kills_the_run_and_ray_resumes_from_its_checkpoint(reference, tmp_path, sigterm):
    """SIGTERM meets Ray Train's Ctrl-C handler here (ray.init replaced ours: put back)."""
    ws, expected = reference
    rc, err, _ = _interrupt(
        ws, tmp_path / "ray.log", "train", "--workspace", str(ws), *SETTINGS, ray=True, sigterm=sigterm
    )
    run_id = _killed_run(ws, rc, err, status=143 if sigterm else 130)
    assert _client(ws).get_run(run_id).data.tags["train.executor"] == "ray"
    _resume_and_check(ws, run_id, expected)  # through Ray again: it restores its own latest checkpoint


def test_ctrl_c_in_the_prefect_flow_kills_the_run_and_exits_promptly(reference, tmp_path):
    """The terminal's Ctrl-C reaches Prefect's ephemeral API server too; the flow must still end
    at once (not after minutes of retries against a stopped server)."""
    ws, expected = reference
    rc, err, seconds = _interrupt(
        ws, tmp_path / "run.log", "run", "--no-ray", "--workspace", str(ws), *SETTINGS, ray=False
    )
    run_id = _killed_run(ws, rc, err)
    assert seconds < 30, f"exited {seconds:.0f} s after Ctrl-C"
    _resume_and_check(ws, run_id, expected)


def test_sigterm_in_the_prefect_flow_kills_the_run_and_exits_143(reference, tmp_path):
    """A nightly stopped by its scheduler: Prefect's flow engine takes SIGTERM first (its own
    handler, the flow run Crashed) and hands it on; the MLflow run is KILLED, not FAILED, so
    `--resume` continues it as after Ctrl-C (tested above)."""
    ws, _ = reference
    rc, err, seconds = _interrupt(
        ws, tmp_path / "run.log", "run", "--no-ray", "--workspace", str(ws), *SETTINGS, ray=False, sigterm=True
    )
    _killed_run(ws, rc, err, status=143)
    assert seconds < 30, f"exited {seconds:.0f} s after SIGTERM"


@pytest.mark.slow  # ~4 min on 2 cores: `make test-slow`
def test_sigterm_in_the_prefect_flow_training_through_ray_kills_the_run_and_resume_finishes_it(reference, tmp_path):
    """SIGTERM while Ray trains inside the flow: the handler put back after ray.init routes it
    through Ray Train's Ctrl-C handler (Prefect's TerminationSignal raised into ray.get came
    out as a SystemError, exit 1)."""
    ws, expected = reference
    rc, err, _ = _interrupt(ws, tmp_path / "run.log", "run", "--workspace", str(ws), *SETTINGS, ray=True, sigterm=True)
    _resume_and_check(ws, _killed_run(ws, rc, err, status=143), expected)
