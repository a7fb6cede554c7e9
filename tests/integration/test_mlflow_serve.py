"""`mlflow models serve` of a registered fusion model: a good request gets the fused PNG, a bad
one a 400 whose message says what is wrong, with no traceback and no server paths."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from fusion.checkpoint import untrained_checkpoint
from fusion.inference import fuse, load_model
from fusion.tracking import model_flavor as mlflow_model
from tests.conftest import free_port, terminate, wait_http

pytestmark = pytest.mark.integration
MODEL = "fusionflow-serve-test"


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _b64png(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


@pytest.fixture
def served(tmp_path):
    """A checkpoint saved as the pipeline saves it, registered as MODEL@champion in a SQLite
    store and served by `mlflow models serve` from the registry."""
    from mlflow import MlflowClient

    ckpt = untrained_checkpoint(tmp_path / "best.pt", "ufa", "UFA")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    exp = client.create_experiment("serve", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, str(mlflow_model.save(ckpt, tmp_path / "model")), mlflow_model.ARTIFACT_PATH)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"runs:/{run_id}/{mlflow_model.ARTIFACT_PATH}", run_id=run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [
            f"{bin_dir}/mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc)
        yield f"http://127.0.0.1:{port}/invocations", ckpt
    finally:
        terminate(proc)
        log.close()


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _split(columns: list[str], row: list) -> dict:
    return {"dataframe_split": {"columns": columns, "data": [row]}}


def test_served_model_fuses_and_answers_bad_requests_with_400_and_a_reason(served, tmp_path):
    url, ckpt = served
    a, b = _rgb(20, 30, 1), _rgb(20, 30, 2)
    status, body = _post(url, _split(["image_0", "image_1"], [_b64png(a), _b64png(b)]))
    assert status == 200, body
    png = base64.b64decode(body["predictions"][0]["fused"])
    fused = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    model, _ = load_model(ckpt)
    assert np.array_equal(fused, fuse(model, [a, b], "cpu"))

    bad = {
        "wrong column": (_split(["img_a", "img_b"], [_b64png(a), _b64png(b)]), "missing inputs ['image_0', 'image_1']"),
        "undecodable": (
            _split(["image_0", "image_1"], [_b64png(a), base64.b64encode(b"junk").decode()]),
            "row 0, image_1: cannot decode the image bytes",
        ),
        "sizes": (
            _split(["image_0", "image_1"], [_b64png(a), _b64png(_rgb(21, 30, 3))]),
            "row 0: the images differ in size (image_0 30x20, image_1 30x21",
        ),
        "single": (_split(["image_0"], [_b64png(a)]), "missing inputs ['image_1']"),
    }
    for case, (payload, reason) in bad.items():
        status, body = _post(url, payload)
        assert status == 400, (case, body)
        assert reason in body["message"], (case, body["message"])
        text = json.dumps(body)
        assert "stack_trace" not in body and "Traceback" not in text, (case, body)
        assert str(tmp_path) not in text and "site-packages" not in text and sys.prefix not in text, (case, body)
