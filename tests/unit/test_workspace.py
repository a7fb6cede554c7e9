"""Which workspace a command uses (like git and dvc: from the current folder upwards), and
params.yaml files that cannot be read as parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fusion import workspace as wsmod
from fusion.cli import app
from fusion.config import WORKSPACE_ENV, resolve_workspace  # where every command imports it from
from fusion.errors import ConfigError


def make_ws(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "params.yaml").write_text("seed: 0\n")
    (path / "dvc.yaml").write_text("stages: {}\n")
    return path.resolve()


def test_workspace_is_found_from_a_folder_below_it(tmp_path, monkeypatch):
    ws = make_ws(tmp_path / "team")
    deep = ws / "runs" / "some-run" / "model"
    deep.mkdir(parents=True)
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    monkeypatch.chdir(deep)
    assert resolve_workspace() == ws


def test_current_folder_wins_over_the_environment_variable(tmp_path, monkeypatch):
    here, there = make_ws(tmp_path / "here"), make_ws(tmp_path / "there")
    monkeypatch.setenv(WORKSPACE_ENV, str(there))
    monkeypatch.chdir(here)
    assert resolve_workspace() == here


def test_environment_variable_is_used_outside_any_workspace(tmp_path, monkeypatch):
    there = make_ws(tmp_path / "there")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv(WORKSPACE_ENV, str(there))
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert resolve_workspace() == there


def test_workspace_option_wins_over_the_current_folder(tmp_path, monkeypatch):
    here, chosen = make_ws(tmp_path / "here"), make_ws(tmp_path / "chosen")
    monkeypatch.chdir(here)
    assert resolve_workspace(chosen) == chosen


def test_a_params_yaml_without_dvc_yaml_is_not_taken_for_a_workspace(tmp_path, monkeypatch):
    # some other tool's params.yaml higher up must not capture the command
    (tmp_path / "params.yaml").write_text("lr: 1\n")
    there = make_ws(tmp_path / "elsewhere" / "there")
    monkeypatch.setenv(WORKSPACE_ENV, str(there))
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace() == there


def test_no_workspace_anywhere_says_how_to_create_one(tmp_path, monkeypatch):
    # what a wheel install sees: the package's parent folder (site-packages) has no params.yaml
    monkeypatch.setattr(wsmod, "project_root", lambda: tmp_path / "site-packages")
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"`fusion init DIR`") as err:
        resolve_workspace()
    assert str(tmp_path) in str(err.value) and WORKSPACE_ENV in str(err.value)


def test_the_checkout_is_the_last_resort(tmp_path, monkeypatch):
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace() == wsmod.project_root()


BAD_PARAMS = {
    "empty": (b"", "empty"),
    "only-comments": (b"# nothing here yet\n\n", "empty"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text file"),
    "nul-bytes": (b"seed: 0\n\x00\x00\x00\n", "not a text file"),
    "a-list": (b"- seed: 0\n- train: {}\n", "the top level is a list, not a mapping"),
    "a-scalar": (b"just some words\n", "the top level is a str, not a mapping"),
    "bad-yaml": (b"seed: 0\ntrain: {epochs: 3\n", "not valid YAML at line"),
}


@pytest.mark.parametrize("name", BAD_PARAMS)
def test_unusable_params_yaml_is_one_line_naming_it(tmp_path, name):
    payload, reason = BAD_PARAMS[name]
    ws = make_ws(tmp_path / "ws")
    (ws / "params.yaml").write_bytes(payload)
    result = CliRunner().invoke(app, ["data", "sources", "--workspace", str(ws)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(ws / "params.yaml") in lines[0] and reason in lines[0]
    assert "`fusion init --force" in lines[0]


def test_the_hint_names_a_command_that_exists():
    result = CliRunner().invoke(app, ["init", "--help"])
    assert result.exit_code == 0 and "--force" in result.output


def test_the_checkouts_dvc_sees_one_pipeline_not_the_init_templates_copy():
    # fusion/workspace_template/dvc.yaml is a symlink to the project's own dvc.yaml (what
    # `fusion init` copies); DVC must not take it for a second pipeline whose deps are missing
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "status", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout or "{}")
    assert not [s for s in stages if "workspace_template" in s], stages
