"""The `fusion` command: every subcommand explains itself and bad input exits cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SUBCOMMANDS = [
    [],
    ["run"],
    ["train"],
    ["models"],
    ["data"],
    ["data", "embedded"],
    ["data", "synth-multifocus"],
    ["data", "prepare"],
]


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


def test_models_never_cuts_a_variant_name_at_80_columns():
    import os
    import re

    from fusion.models import MODELS

    proc = subprocess.run(
        [sys.executable, "-m", "fusion", "models"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    variants = {(m, v) for m, spec in MODELS.items() for v in spec.variants}
    rows = {tuple(re.split(r"\s{2,}", ln.strip())[:2]) for ln in proc.stdout.splitlines()}
    assert variants <= rows  # each variant whole on its model's row
    for spec in MODELS.values():
        for paper in spec.variants.values():
            assert paper in proc.stdout
    table = proc.stdout.split(" tasks: ")[0].splitlines()[:-1]
    assert max(len(ln) for ln in table) <= 80 and "…" not in proc.stdout


@pytest.mark.parametrize("command", [[], ["evaluate"], ["fuse"], ["train"], ["data", "patches"], ["sweep"]])
def test_help_fits_80_columns_without_flag_types(command):
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "fusion", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "<bool>" not in proc.stdout and " range>" not in proc.stdout and "…" not in proc.stdout
    assert max(len(ln) for ln in proc.stdout.splitlines()) <= 80
