"""The nightly deployment on a real Prefect server on loopback: `fusion schedule serve`
registers it with the schedule and concurrency limit of params.yaml, a run triggered
through the API completes and leaves its MLflow run and champion, and a second trigger
while the first runs is cancelled instead of running beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.integration.conftest import PREFECT, stop_process

pytestmark = pytest.mark.integration


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the serving process exited with {proc.returncode}")
        time.sleep(1)
    raise TimeoutError(f"{what} within {timeout}s")


def test_served_deployment_runs_on_trigger_and_refuses_a_second_concurrent_run(prefect_server, workspace, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from mlflow import MlflowClient

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["nightly"].update(
        {
            "profile": "tiny",
            "use_ray": False,
            "cron": "30 3 * * 1-5",
            "timezone": "Europe/Berlin",
            "retries": 0,
            "on_collision": "cancel_new",
        }
    )
    params["promote"]["require_beat_baselines"] = False  # the tiny model must take @champion here
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "fusion", "schedule", "serve", "--workspace", str(workspace)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with get_client(sync_client=True) as client:

            def deployment():
                try:
                    return client.read_deployment_by_name("fusionflow-nightly/nightly")
                except Exception:  # not registered yet
                    return None

            dep = _wait(deployment, 120, "deployment registered", serve)
            sched = dep.schedules[0].schedule
            assert (sched.cron, sched.timezone) == ("30 3 * * 1-5", "Europe/Berlin") and dep.schedules[0].active
            assert dep.parameters == {"profile": "tiny", "overrides": [], "workspace": str(workspace), "use_ray": False}
            assert dep.global_concurrency_limit.limit == 1
            assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"

            first = run_deployment("fusionflow-nightly/nightly", timeout=0)
            _wait(lambda: client.read_flow_run(first.id).state.is_running(), 120, "first run started", serve)
            second = run_deployment("fusionflow-nightly/nightly", timeout=0)  # while the first runs
            done = lambda r: client.read_flow_run(r.id).state.is_final()  # noqa: E731
            _wait(lambda: done(first) and done(second), 300, "both runs final", serve)
            a, b = client.read_flow_run(first.id), client.read_flow_run(second.id)
        assert a.state.is_completed(), a.state
        assert b.state.is_cancelled(), b.state  # never ran beside the first
    finally:
        stop_process(serve)
        log.close()

    store = f"sqlite:///{workspace / 'mlflow/store/mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("fusionflow").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.params["profile"] == "tiny"
    assert runs[0].data.tags["promote.alias"] == "champion"
    assert client.get_model_version_by_alias("fusionflow-multi-focus-ufa", "champion").run_id == runs[0].info.run_id

    # the work-pool way: `fusion schedule deploy`, then a worker executes a triggered run
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "schedule",
            "deploy",
            "--pool",
            "fusionflow-test",
            "--workspace",
            str(workspace),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "prefect worker start --pool fusionflow-test" in deployed.stdout
    with get_client(sync_client=True) as pc:
        dep = pc.read_deployment_by_name("fusionflow-nightly/nightly")
        assert dep.work_pool_name == "fusionflow-test" and dep.entrypoint == "flows.nightly.nightly"
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(workspace)}}]
        assert dep.schedules[0].schedule.cron == "30 3 * * 1-5"
        third = run_deployment("fusionflow-nightly/nightly", timeout=0)
        worker = subprocess.run(
            [PREFECT, "worker", "start", "--pool", "fusionflow-test", "--run-once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        state = pc.read_flow_run(third.id).state
    assert state.is_completed(), (state, worker.stdout[-2000:], worker.stderr[-2000:])
    assert (
        len(client.search_runs([client.get_experiment_by_name("fusionflow").experiment_id])) == 1
    )  # cached: same code and data
