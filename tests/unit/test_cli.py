"""The `fusion` command: every subcommand explains itself and bad input exits cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SUBCOMMANDS = [[], ["run"], ["train"], ["models"], ["data"], ["data", "embedded"], ["data", "synth-multifocus"], ["data", "prepare"]]


def fusion(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusion", *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c) or "fusion")
def test_every_subcommand_has_help(cmd):
    proc = fusion(*cmd, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and len(proc.stdout.splitlines()) > 5


def test_run_help_names_the_servers_it_can_use():
    out = fusion("run", "--help").stdout
    assert "MLFLOW_TRACKING_URI" in out and "RAY_ADDRESS" in out and "--profile" in out


def test_models_lists_paper_variant_names():
    out = fusion("models").stdout
    for name in ("UFA", "NO-UFA", "NO-SA", "NO-CA"):
        assert name in out


def test_missing_workspace_is_one_clear_line(tmp_path):
    proc = fusion("data", "prepare", "--workspace", str(tmp_path))
    assert proc.returncode == 2
    assert "no params.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_profile_lists_valid_ones():
    proc = fusion("run", "--workspace", str(REPO), "--profile", "nightlyy")
    assert proc.returncode == 2
    assert "profile 'nightlyy' is not defined" in proc.stderr and "smoke" in proc.stderr
