"""The nightly flow's policies on Prefect's local API: transient failures retried and the
finished stages cached on a re-run, deterministic failures not retried and reported to a
webhook on loopback, parameters checked at the boundary, champion promotion, and each
stage runnable alone."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
import yaml

from fusion.errors import ConfigError, DataError

pytestmark = pytest.mark.integration


def set_params(ws, **sections):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    for name, values in sections.items():
        params[name] = {**params.get(name, {}), **values}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def receiver():
    """An HTTP server on loopback that records the JSON bodies POSTed to it."""
    posts: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # http.server's name
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", posts
    finally:
        server.shutdown()
        server.server_close()


def task_runs(name: str):
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + 30  # task-run states reach the API shortly after the flow returns
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)),
                sort=TaskRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
            if (runs and runs[0].state and runs[0].state.is_final()) or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def test_is_transient_tells_infrastructure_from_input_errors():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from flows.policy import is_transient

    assert is_transient(ConnectionError("tracking server went away"))
    assert is_transient(TimeoutError())
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST))
    from mlflow.exceptions import RestException

    assert not is_transient(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "run not found"}))
    assert is_transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"}))
    assert not is_transient(DataError("x.png: truncated PNG"))
    assert not is_transient(ConfigError("train.lr: must be > 0"))
    assert not is_transient(ValueError("a bug"))
    wrapped = RuntimeError("stage failed")
    wrapped.__cause__ = DataError("x.png: bad")
    assert not is_transient(wrapped)
    try:
        raise RuntimeError("retry me") from ConnectionError("reset")
    except RuntimeError as exc:
        assert is_transient(exc)


def test_deterministic_failure_is_not_retried_and_notifies_the_webhook(workspace, receiver, monkeypatch):
    from flows.nightly import nightly
    from fusion.config import load_config
    from fusion.data.embedded import export_embedded

    url, posts = receiver
    set_params(workspace, nightly={"retries": 2, "retry_delay_seconds": [0.1]})
    raw = export_embedded(workspace / load_config(workspace).data.embedded.out)
    (raw / "images" / "rocket.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    monkeypatch.setenv("FUSIONFLOW_NOTIFY_WEBHOOK", url)
    with pytest.raises(Exception, match="rocket.jpg: truncated JPEG"):
        nightly(profile="tiny", workspace=str(workspace), use_ray=False)
    assert len(posts) == 1 and posts[0]["state"] == "FAILED" and "rocket.jpg: truncated JPEG" in posts[0]["message"]
    assert posts[0]["flow"] == "fusionflow-nightly" and posts[0]["parameters"]["profile"] == "tiny"
    latest = max(task_runs("prepare-data"), key=lambda r: r.created)
    assert latest.run_count == 1 and latest.state.is_failed()  # no retry of a data error


def test_a_typo_fails_at_once_listing_the_valid_values(workspace):
    from flows.nightly import nightly

    with pytest.raises(ConfigError, match=r"profile 'smok' is not defined .* valid: \['paper', 'smoke', 'tiny'\]"):
        nightly(profile="smok", workspace=str(workspace))
    with pytest.raises(ConfigError, match=r"train\.variant: unknown variant 'UFAA' of ufa; valid: \["):
        nightly(profile="tiny", workspace=str(workspace), overrides=["train.variant=UFAA"])
    assert not (workspace / "prepared").exists() and not (workspace / ".dvc").exists()  # no work done


def test_transient_failure_retried_rerun_cached_and_champion_promoted(workspace, monkeypatch):
    from flows import nightly as flows
    from fusion import pipeline
    from mlflow import MlflowClient

    # the champion-against-champion mechanics; the baseline rule has a test of its own below
    set_params(
        workspace, nightly={"retries": 2, "retry_delay_seconds": [0.1]}, promote={"require_beat_baselines": False}
    )
    real, calls = pipeline.prepare, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("DVC remote unreachable for a moment")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare", flaky)
    first = flows.nightly(profile="tiny", workspace=str(workspace), use_ray=False)
    assert len(calls) == 2  # failed once, retried, then ran
    assert first["promotion"]["alias"] == "champion" and first["promotion"]["version"] == "1"
    assert first["promotion"]["reason"] == "no champion yet"

    # the same nightly again: data, config and code unchanged -> training and evaluation come from the cache
    again = flows.nightly(profile="tiny", workspace=str(workspace), use_ray=False)
    assert again["run_id"] == first["run_id"] and again["promotion"] == first["promotion"]
    client = MlflowClient(tracking_uri=first["tracking_uri"])
    exp = client.get_experiment_by_name("fusionflow")
    assert len(client.search_runs([exp.experiment_id])) == 1
    name = first["promotion"]["model"]
    assert name == "fusionflow-multi-focus-ufa"
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == ["1"]

    # a different training config: a new run, compared with the champion on the same test data
    second = flows.nightly(profile="tiny", workspace=str(workspace), use_ray=False, overrides=["train.lr=1e-9"])
    assert second["run_id"] != first["run_id"] and second["promotion"]["version"] == "2"
    decision = second["promotion"]
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(second["run_id"])
    assert run.data.tags["promote.alias"] == decision["alias"] and "champion v1" in decision["reason"]
    recorded = json.loads(open(client.download_artifacts(second["run_id"], "promote/decision.json")).read())
    better = recorded["candidate"] > recorded["champion"]
    assert decision["alias"] == ("champion" if better else "challenger")
    assert str(champion.version) == ("2" if better else "1")
    assert run.data.tags["eval.test_set"] == client.get_run(first["run_id"]).data.tags["eval.test_set"]

    # the champion serves as an MLflow model: two images of any size in, a fused PNG out
    import cv2
    import numpy as np
    import pandas as pd

    import mlflow

    mlflow.set_tracking_uri(first["tracking_uri"])
    try:
        served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    rng = np.random.default_rng(0)
    pngs = [cv2.imencode(".png", rng.integers(0, 256, (21, 30, 3), dtype=np.uint8))[1].tobytes() for _ in range(2)]
    fused = served.predict(pd.DataFrame({"image_0": [pngs[0]], "image_1": [pngs[1]]}))["fused"][0]
    assert cv2.imdecode(np.frombuffer(fused, np.uint8), cv2.IMREAD_COLOR).shape == (21, 30, 3)

    # the stages alone: evaluate and promote an existing run by id
    assert flows.promote(run_id=second["run_id"], workspace=str(workspace))["version"] == "2"  # idempotent
    scores = flows.evaluate(run_id=first["run_id"], workspace=str(workspace))
    assert scores["means"] == first["means"]  # cached: the same run, the same evaluation settings


def test_nightly_also_scores_every_prepared_test_set_of_its_task(workspace, shared_data, tmp_path):
    import cv2

    from flows.nightly import nightly
    from mlflow import MlflowClient

    lytro = tmp_path / "lytro-small"
    for scene in ("lytro-01", "lytro-02", "lytro-03"):
        for letter, folder in (("A", "near"), ("B", "far")):
            img = cv2.imread(str(shared_data / f"mf/Lytro20/{scene}-{letter}.jpg"))
            (lytro / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(lytro / folder / f"{scene}.png"), cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA))
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["sources"].update(
        {
            "lytro": {"layout": "folders", "path": str(lytro), "folders": ["near", "far"], "task": "multi-focus"},
            "tno": {"layout": "tno", "path": str(shared_data / "irvis/TNO42")},
        }
    )
    params["data"]["test_sets"] = {"lytro": {"source": "lytro"}, "tno": {"source": "tno"}}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    summary = nightly(profile="tiny", workspace=str(workspace), use_ray=False)
    assert sorted(summary["stages_ran"]) == ["synth_multifocus", "test_sets@lytro", "test_sets@tno"]
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    metrics = client.get_run(summary["run_id"]).data.metrics
    assert {"test_sets/lytro/Qabf", "test_sets/lytro/baseline/average/Qabf", "test/SSIM_gt"} <= set(metrics)
    assert not any(k.startswith("test_sets/tno") for k in metrics)  # an ir-vis set: not this model's task
    logged = {a.path for a in client.list_artifacts(summary["run_id"], "eval/lytro")}
    assert {"eval/lytro/table.md", "eval/lytro/grid.png"} <= logged


def test_each_stage_runs_alone_as_its_own_flow(workspace):
    from flows import nightly as flows

    with pytest.raises(DataError, match="no prepared data; run the prepare stage first"):
        flows.train(profile="tiny", workspace=str(workspace), use_ray=False)
    prepared = flows.prepare(profile="tiny", workspace=str(workspace))
    assert prepared["stages_ran"] == ["synth_multifocus"] and len(prepared["data_version"]) == 64
    run_id = flows.train(profile="tiny", workspace=str(workspace), use_ray=False)
    scores = flows.evaluate(run_id=run_id, workspace=str(workspace))
    assert "SSIM_gt" in scores["means"][next(iter(scores["means"]))]
    decision = flows.promote(run_id=run_id, workspace=str(workspace))
    # the first model is champion only if it also beats the best classical baseline of its run
    assert decision["metric"] == "SSIM_gt" and decision["best_baseline"] is not None
    beats = decision["candidate"] > decision["baseline_value"]
    assert decision["alias"] == ("champion" if beats else "challenger")
    if not beats:
        assert f"does not beat the best classical baseline {decision['best_baseline']}" in decision["reason"]
    with pytest.raises(ConfigError, match="run nope: no config/resolved.json"):
        flows.evaluate(run_id="nope", workspace=str(workspace))


def test_nightly_runs_the_configured_sweep_after_the_model(workspace):
    import ray

    from flows.nightly import nightly, sweep
    from mlflow import MlflowClient

    set_params(
        workspace,
        nightly={"sweep": "one"},
        sweeps={
            "one": {
                "profile": "tiny",
                "overrides": ["train.epochs=1"],
                "matrix": [{"model": "ufa", "variants": ["NO-SA"]}],
                "evaluate": False,
            }
        },
    )
    try:
        summary = nightly(profile="tiny", workspace=str(workspace), use_ray=False)
        again = sweep(name="one", workspace=str(workspace))  # the stage alone: the sweep is complete, nothing reruns
    finally:
        ray.shutdown()
    assert summary["sweep"]["counts"] == {"completed": 1} and summary["sweep"]["finished"]
    assert again["parent_run_id"] == summary["sweep"]["parent_run_id"] and again["counts"] == {"completed": 1}
    client = MlflowClient(summary["tracking_uri"])
    child = client.search_runs(
        [client.get_run(summary["run_id"]).info.experiment_id], f"tags.mlflow.parentRunId = '{again['parent_run_id']}'"
    )
    assert [r.data.tags["sweep.trial"] for r in child] == ["ufa-NO-SA-multi-focus-s0"]
    assert "pipeline/seconds_sweep" in client.get_run(summary["run_id"]).data.metrics
