"""`fusion import-weights`: the authors' files become a checkpoint that fuses, or one clear error.

UFA-Fuse's layout stands in for the shared machinery (CADNIF's TensorFlow reader and
CrossFuse's three files have tests of their own): layout checks, data-only loading, the
sha256 record, atomic writes, the CLI's exit status, and `--register` into a real MLflow store.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from fusion.checkpoint import load_checkpoint, model_from_checkpoint
from fusion.errors import DataError
from fusion.io import sha256_file
from fusion.weights import import_weights
from tests.conftest import SHARED

KEYS = SHARED / "reference" / "official" / "official_state_dict_keys.json"


@pytest.fixture
def authors_ufa(tmp_path):
    if not KEYS.is_file():
        pytest.skip(f"{KEYS} not found")
    layout = json.loads(KEYS.read_text())["ufa_AF_state_dict"]
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v, generator=g) * 0.05 for k, v in layout.items()}
    path = tmp_path / "AF_epoch_600.pth"
    torch.save(state, path)
    return path, state


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fusion", "import-weights", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_every_authors_tensor_lands_in_the_released_model(authors_ufa, tmp_path):
    src, state = authors_ufa
    out, result = import_weights("ufa", [src], tmp_path / "ufa.pt")
    model, payload = model_from_checkpoint(out)
    assert payload["model_options"] == {"released": True} and payload["variant"] == "UFA"
    assert payload["source"] == "authors" and payload["task"] == "multi-focus"
    assert payload["source_files"] == [{"file": src.name, "sha256": sha256_file(src)}]
    got = model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key
    assert result.ignored == []


def test_imported_checkpoint_fuses_through_the_cli(authors_ufa, tmp_path, shared_data):
    src, _ = authors_ufa
    proc = _cli("ufa", src, "--out", tmp_path / "ufa.pt")
    assert proc.returncode == 0, proc.stderr
    a, b = (shared_data / f"mf/Lytro20/lytro-01-{k}.jpg" for k in "AB")
    fuse = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "fuse",
            str(a),
            str(b),
            "--model",
            str(tmp_path / "ufa.pt"),
            "--out",
            str(tmp_path / "f.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fuse.returncode == 0, fuse.stderr
    assert "released" in fuse.stdout


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda s: s.pop("sc4.att_sp.att2.conv.weight"), "missing 1 UFA-Fuse .* key.*sc4.att_sp.att2.conv.weight"),
        (
            lambda s: s.__setitem__("sc4.att_sp.att3.conv.weight", torch.zeros(1, 2, 7, 7)),
            ".*does not have: sc4.att_sp.att3",
        ),
        (
            lambda s: s.__setitem__("fusion.weight", torch.zeros(64, 64, 1, 1)),
            r"wrong shape: fusion.weight \[64, 64, 1, 1\]",
        ),
    ],
)
def test_bad_layouts_are_refused_by_name_and_nothing_is_written(authors_ufa, tmp_path, damage, message):
    src, state = authors_ufa
    state = dict(state)
    damage(state)
    torch.save(state, src)
    with pytest.raises(DataError, match=f"{src.name}: {message}"):
        import_weights("ufa", [src], tmp_path / "ufa.pt")
    assert not (tmp_path / "ufa.pt").exists()


def test_a_file_of_another_model_is_named_as_such(tmp_path):
    layout = json.loads(KEYS.read_text())["crossfuse_autoencoder_state_dict (one file per modality: ir, vi)"]
    path = tmp_path / "auto_encoder_epoch_4_ir.model"
    torch.save({k: torch.zeros(v) for k, v in layout.items()}, path)
    with pytest.raises(DataError, match="none of the UFA-Fuse .* keys found .*another model.*fea_encoder1"):
        import_weights("ufa", [path], tmp_path / "x.pt")


def test_truncated_file_and_code_running_pickle_are_refused(authors_ufa, tmp_path):
    src, _ = authors_ufa
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.pth: not a readable PyTorch state dict"):
        import_weights("ufa", [cut], tmp_path / "x.pt")

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv1.0.weight": Evil()}, f)
    with pytest.raises(DataError, match="evil.pth: not a readable PyTorch state dict"):
        import_weights("ufa", [evil], tmp_path / "x.pt")
    assert not marker.exists()
    assert not (tmp_path / "x.pt").exists()


def test_cli_errors_are_one_line_with_exit_2(authors_ufa, tmp_path):
    src, _ = authors_ufa
    (tmp_path / "taken.pt").write_bytes(b"user data")
    taken = _cli("ufa", src, "--out", tmp_path / "taken.pt")
    assert taken.returncode == 2 and "already exists; pass --overwrite" in taken.stderr + taken.stdout
    assert (tmp_path / "taken.pt").read_bytes() == b"user data"
    for args, text in [
        (("nope", src), "no importer for 'nope'"),
        (("ufa", src, src), "takes 1 file"),
        (("ufa", tmp_path / "missing.pth"), "missing.pth: file not found"),
    ]:
        proc = _cli(*args, "--out", tmp_path / "x.pt")
        out = proc.stderr + proc.stdout
        assert proc.returncode == 2 and text in out and "Traceback" not in out, out
    assert not (tmp_path / "x.pt").exists()
    assert _cli("ufa", src, "--out", tmp_path / "taken.pt", "--overwrite").returncode == 0
    assert load_checkpoint(tmp_path / "taken.pt")["source"] == "authors"


def test_register_puts_the_authors_weights_in_the_registry(authors_ufa, workspace, tmp_path, shared_data):
    import cv2
    import mlflow.pyfunc
    import pandas as pd

    from mlflow import MlflowClient

    src, _ = authors_ufa
    proc = _cli("ufa", src, "--out", tmp_path / "ufa.pt", "--register", "authors-ufa", "--workspace", workspace)
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{workspace / 'mlflow/store/mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    mv = c.get_model_version("authors-ufa", "1")
    assert mv.tags["source"] == "authors" and mv.tags["model"] == "ufa"
    run = c.get_run(mv.run_id)
    assert run.data.tags["source"] == "authors" and run.info.status == "FINISHED"
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model("models:/authors-ufa/1")
    finally:
        mlflow.set_tracking_uri(None)
    a, b = (
        cv2.imencode(".png", cv2.imread(str(shared_data / f"mf/Lytro20/lytro-01-{k}.jpg"))[:48, :64])[1].tobytes()
        for k in "AB"
    )
    fused = pyfunc.predict(pd.DataFrame({"image_0": [a], "image_1": [b]}))["fused"][0]
    assert cv2.imdecode(np.frombuffer(fused, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_registered_authors_run_is_evaluated_and_reported_beside_the_baselines(
    authors_ufa, workspace, tmp_path, shared_data
):
    """import --register, then `fusion evaluate --log-to` on that run, then `fusion report`."""
    import cv2

    from mlflow import MlflowClient

    src, _ = authors_ufa
    proc = _cli("ufa", src, "--out", tmp_path / "ufa.pt", "--register", "authors-ufa", "--workspace", workspace)
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{workspace / 'mlflow/store/mlflow.db'}"
    run_id = MlflowClient(tracking_uri=uri).get_model_version("authors-ufa", "1").run_id
    for side, k in (("a", "A"), ("b", "B")):
        (tmp_path / side).mkdir()
        for n in ("01", "02"):
            img = cv2.imread(str(shared_data / f"mf/Lytro20/lytro-{n}-{k}.jpg"))[:48, :64]
            cv2.imwrite(str(tmp_path / side / f"{n}.png"), img)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    fusion = [sys.executable, "-m", "fusion"]
    ev = subprocess.run(
        [
            *fusion,
            "evaluate",
            "--model",
            f"runs:/{run_id}",
            "--source-a",
            str(tmp_path / "a"),
            "--source-b",
            str(tmp_path / "b"),
            "-b",
            "average",
            "-m",
            "Qabf",
            "-m",
            "EN",
            "--log-to",
            run_id,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ev.returncode == 0, ev.stderr
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert {"test/Qabf", "test/EN", "baseline/average/Qabf"} <= set(run.data.metrics)
    rep = subprocess.run(
        [*fusion, "report", run_id, "--workspace", str(workspace), "--out", str(tmp_path / "rep")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stderr
    table = (tmp_path / "rep" / "report.md").read_text()
    assert "authors-ufa" in table and "average" in table
    missing = subprocess.run(
        [
            *fusion,
            "evaluate",
            "--model",
            f"runs:/{run_id}",
            "--source-a",
            str(tmp_path / "a"),
            "--source-b",
            str(tmp_path / "b"),
            "--log-to",
            "nope",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 2 and "--log-to nope: no such run" in missing.stderr
