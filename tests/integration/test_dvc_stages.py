"""The preparation stages under real DVC in a temporary git repository: repro, no-op repro,
one parameter change reruns one stage, push/pull through the default local remote, and an
older data version materialised from its git revision without touching the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from fusion import versioning
from fusion.config import load_config
from fusion.data.manifest import data_version
from fusion.pipeline import prepare
from tests.unit.test_prep_stages import configure, make_kaist, tree

pytestmark = pytest.mark.integration


def git(ws, *args):
    return subprocess.run(["git", *args], cwd=ws, check=True, capture_output=True, text=True).stdout.strip()


def test_stages_repro_rerun_push_pull_and_materialise_an_old_version(workspace, shared_data, tmp_path):
    git(workspace, "init", "-q")
    git(workspace, "config", "user.email", "ci@example.org")
    git(workspace, "config", "user.name", "ci")
    make_kaist(tmp_path / "kaist")
    configure(
        workspace,
        {
            "kaist": {"layout": "kaist", "path": "../kaist"},
            "tno": {"layout": "tno", "path": str(shared_data / "irvis/TNO42")},
        },
        kaist_pairs={"cf": {"source": "kaist", "pairs": 4, "frame_stride": 2, "size": 32}},
        test_sets={"tno": {"source": "tno"}},
    )
    (workspace / ".gitignore").write_text("/prepared/\n/.dvc-remote/\n")

    first = prepare(workspace, load_config(workspace))  # dvc init, add data, repro, push
    assert sorted(first.stages_ran) == ["kaist_pairs@cf", "synth_multifocus", "test_sets@tno"]
    v1_kaist = data_version(workspace / "prepared/kaist_pairs/cf")
    v1_files = tree(workspace / "prepared/kaist_pairs/cf")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "data v1")
    v1 = git(workspace, "rev-parse", "HEAD")

    again = versioning.repro(workspace)
    assert again.ran == [] and sorted(again.skipped) == [
        "data.dvc",
        "kaist_pairs@cf",
        "synth_multifocus",
        "test_sets@tno",
    ]

    # one stage's parameter: that stage reruns, the others are skipped
    configure(
        workspace,
        {},
        kaist_pairs={"cf": {"source": "kaist", "pairs": 6, "frame_stride": 2, "size": 32}},
        test_sets={"tno": {"source": "tno"}},
    )
    changed = versioning.repro(workspace)
    assert changed.ran == ["kaist_pairs@cf"]
    assert json.loads((workspace / "prepared/kaist_pairs/cf/manifest.json").read_text())["count"] == 6
    versioning.push(workspace)
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "data v2")
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert lock["stages"]["kaist_pairs@cf"]["params"]["params.yaml"]["sources.kaist"] == {
        "layout": "kaist",
        "path": "../kaist",
    }

    # v1's data comes back from its revision; the checkout keeps v2
    old = versioning.materialize(workspace, v1, "prepared/kaist_pairs/cf", tmp_path / "v1")
    assert tree(old) == v1_files and data_version(old) == v1_kaist
    assert json.loads((workspace / "prepared/kaist_pairs/cf/manifest.json").read_text())["count"] == 6

    # pull from the remote alone: without the local cache and the output
    shutil.rmtree(workspace / ".dvc" / "cache")
    shutil.rmtree(workspace / "prepared")
    versioning.dvc(workspace, "pull")
    assert json.loads((workspace / "prepared/kaist_pairs/cf/manifest.json").read_text())["count"] == 6
    assert versioning.repro(workspace).ran == []

    # the CLI, from the remote only (the cache is gone again), and its errors
    shutil.rmtree(workspace / ".dvc" / "cache")
    cli = [
        sys.executable,
        "-m",
        "fusion",
        "data",
        "materialize",
        "prepared/kaist_pairs/cf",
        "--workspace",
        str(workspace),
    ]
    done = subprocess.run([*cli, "--rev", v1, "--out", str(tmp_path / "v1-cli")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "v1-cli") == v1_files and v1_kaist in done.stdout.replace("\n", "")
    bad = subprocess.run([*cli, "--rev", "no-such-rev", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no-such-rev" in bad.stderr and not (tmp_path / "x").exists()
