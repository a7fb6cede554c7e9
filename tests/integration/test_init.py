"""`fusion init`: a workspace of a team's own (real git, real DVC, the real pipeline), what it
keeps of a folder that already has files, and the wheel that carries its templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def fusion(*args, cwd, **env):
    # COLUMNS: tables are not cut to 80 columns; no FUSIONFLOW_WORKSPACE: only the folder decides
    base = {k: v for k, v in os.environ.items() if k != "FUSIONFLOW_WORKSPACE"}
    return subprocess.run(
        [sys.executable, "-m", "fusion", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, "COLUMNS": "200", **env},
    )


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_init_makes_a_workspace_that_commands_run_inside_it_use(tmp_path):
    made = fusion("init", "ws", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    ws = (tmp_path / "ws").resolve()
    assert (ws / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert stages.keys() == yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].keys()
    deps = [d for st in stages.values() for d in (st.get("do") or st).get("deps", [])]
    assert deps == ["data/embedded"]  # fusionflow's own code is the installed package, not in the workspace
    assert git(ws, "rev-parse", "--show-toplevel") == str(ws) and (ws / ".dvc" / "config").is_file()

    # the team registers a dataset of its own; a command run deep inside the workspace sees it
    params = ws / "params.yaml"
    params.write_text(
        params.read_text().replace(
            "\nsources:\n", "\nsources:\n  team_photos: {layout: photos, path: data/embedded}\n", 1
        )
    )
    deep = ws / "notes" / "2026"
    deep.mkdir(parents=True)
    prepared = fusion("data", "prepare", cwd=deep)
    assert prepared.returncode == 0, prepared.stderr
    listed = fusion("data", "sources", cwd=deep)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "team_photos" in listed.stdout
    counts = json.loads((ws / "prepared/multifocus_synthetic/manifest.json").read_text())["counts"]
    assert counts["train"] > 0 and counts["test"] > 0
    assert "synth_multifocus" in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert (ws / "data/embedded/manifest.json").is_file() and (ws / "data.dvc").is_file()
    # what the pipeline made stays out of git; what the team commits does not
    untracked = git(ws, "status", "--porcelain", "--untracked-files=all")
    assert not [line for line in untracked.splitlines() if "prepared/" in line or "data/embedded" in line]
    assert {"params.yaml", "dvc.yaml", "dvc.lock", "data.dvc", ".gitignore"} <= {
        line[3:] for line in untracked.splitlines()
    }


def test_init_refuses_to_replace_a_teams_params_and_only_appends_to_gitignore(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text("seed: 7\n")
    (ws / ".gitignore").write_text("notes/\n/runs/")
    refused = fusion("init", ws, cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert str(ws / "params.yaml") in refused.stderr and "--force" in refused.stderr
    # refused before anything was written
    assert (ws / "params.yaml").read_text() == "seed: 7\n" and sorted(p.name for p in ws.iterdir()) == [
        ".gitignore",
        "params.yaml",
    ]

    forced = fusion("init", "--force", ws, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (ws / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    lines = (ws / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["notes/", "/runs/"] and lines.count("/runs/") == 1
    assert {"/prepared/", "/data/", "/mlflow/store/"} <= set(lines)


def test_init_inside_a_team_repository_does_not_nest_git(tmp_path):
    repo = tmp_path / "team"
    repo.mkdir()
    git(repo, "init", "-q")
    made = fusion("init", "fusion-ws", cwd=repo)
    assert made.returncode == 0, made.stderr
    ws = repo / "fusion-ws"
    assert not (ws / ".git").exists() and (ws / ".dvc").is_dir()
    assert f"inside the repository {repo.resolve()}" in made.stdout
    again = fusion("init", cwd=ws)  # nothing left to do: the files are the defaults, git and DVC are there
    assert again.returncode == 0, again.stderr
    assert "kept: params.yaml, dvc.yaml, .gitignore" in again.stdout and "dvc: already initialised" in again.stdout


def test_init_without_git_says_so_and_still_sets_up_dvc(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH without git (dvc runs through this interpreter)
    made = fusion("init", "ws", cwd=tmp_path, PATH=str(tmp_path / "bin"))
    assert made.returncode == 0, made.stderr
    assert "git: not found" in made.stdout
    ws = tmp_path / "ws"
    assert not (ws / ".git").exists()
    assert "no_scm = True" in (ws / ".dvc" / "config").read_text()


def test_the_wheel_carries_the_workspace_files_as_files(tmp_path):
    # symlinks in the checkout (fusion/workspace_template -> params.yaml, dvc.yaml): a wheel
    # must hold their content, or `fusion init` after `pip install fusionflow` has nothing to write
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, src / name)
    for pkg in ("fusion", "flows"):
        shutil.copytree(REPO / pkg, src / pkg, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))",
            str(tmp_path / "dist"),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = tmp_path / "dist" / build.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        for name in ("params.yaml", "dvc.yaml"):
            assert zf.read(f"fusion/workspace_template/{name}") == (REPO / name).read_bytes()
