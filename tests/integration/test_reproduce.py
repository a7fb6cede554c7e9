"""`fusion reproduce`: a tiny run, then the data and the code change, then the first run is
trained again from its recorded commit and data version with identical weights and metrics;
and the runs that cannot be reproduced are refused with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_reproduce_after_data_and_code_changed_then_refusals(tmp_path):
    from mlflow import MlflowClient

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(REPO), str(clone))  # the committed code: a clean checkout
    git(clone, "config", "user.email", "ci@example.org")
    git(clone, "config", "user.name", "ci")
    env = {**os.environ, "PYTHONPATH": str(clone), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)

    def fusion(*args, check=True):
        proc = subprocess.run(
            [sys.executable, "-m", "fusion", *args, "--workspace", str(clone)],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    # a user pins the data version in git before training a run meant to be reproducible
    fusion("data", "prepare")
    if git(clone, "status", "--porcelain", "--untracked-files=no"):
        git(clone, "commit", "-qam", "data version")
    fusion(
        "run",
        "--profile",
        "tiny",
        "--no-ray",
        "--set",
        "evaluate.baselines=[]",
        "--summary-json",
        str(tmp_path / "s.json"),
    )
    summary = json.loads((tmp_path / "s.json").read_text())
    run_id, head = summary["run_id"], git(clone, "rev-parse", "HEAD")
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    tags = client.get_run(run_id).data.tags
    assert tags["git.commit"] == head and tags["git.dirty"] == "false" and tags["train.threads"]

    # change the data (a parameter of its stage) and the code (the loss), commit, rebuild the data
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["data"]["synth_multifocus"]["pairs_per_image"] = 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    losses = clone / "fusion" / "losses.py"
    losses.write_text(
        losses.read_text()
        + "\n_forward = L1SSIMLoss.forward\nL1SSIMLoss.forward = lambda self, *a: 2 * _forward(self, *a)\n"
    )
    git(clone, "commit", "-qam", "other data, other loss")
    fusion("data", "prepare")
    new_version = json.loads((clone / "prepared/multifocus_synthetic/manifest.json").read_text())["params"][
        "pairs_per_image"
    ]
    assert new_version == 1

    done = fusion("reproduce", run_id, "--keep", str(tmp_path / "keep"))
    assert "reproduced exactly" in done.stdout
    comparison = json.loads((tmp_path / "keep" / "comparison.json").read_text())
    assert comparison["identical"] and all(comparison["checkpoints"].values()) and comparison["metrics"]
    assert all(m["original"] == m["reproduced"] for m in comparison["metrics"])
    # the user's checkout is untouched: its HEAD, its data version, no worktree left behind
    assert git(clone, "rev-parse", "HEAD") != head and len(git(clone, "worktree", "list").splitlines()) == 1
    assert (
        json.loads((clone / "prepared/multifocus_synthetic/manifest.json").read_text())["params"]["pairs_per_image"]
        == 1
    )

    # what cannot be reproduced is refused with the reason (exit 2), never run on something else
    shutil.rmtree(clone / ".dvc" / "cache")
    shutil.rmtree(clone / ".dvc-remote")
    gone = fusion("reproduce", run_id, check=False)
    assert gone.returncode == 2 and "in neither the DVC cache" in gone.stderr.replace("\n", " ")
    client.set_tag(run_id, "git.commit", "f" * 40)
    missing = fusion("reproduce", run_id, check=False)
    assert missing.returncode == 2 and f"code revision {'f' * 40} is not in" in missing.stderr.replace("\n", "")
    client.set_tag(run_id, "git.dirty", "true")
    dirty = fusion("reproduce", run_id, check=False)
    assert dirty.returncode == 2 and "uncommitted changes" in dirty.stderr.replace("\n", " ")
