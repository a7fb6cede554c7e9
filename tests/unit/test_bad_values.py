"""Values that used to be accepted or end in a traceback get one clear line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fusion.errors import ConfigError
from fusion.train.loop import pick_device


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fusion", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,text", [
    (["evaluate", "--figure-pairs", "-5"], "--figure-pairs"),
    (["data", "test-set", "x", "--workers", "-3"], "--workers"),
    (["reproduce", "abc", "--tolerance", "-1"], "--tolerance"),
    (["sweep", "smoke", "--budget-minutes", "-5", "--plan"], "--budget-minutes"),
    (["sweep", "smoke", "--max-concurrent", "-2", "--plan"], "--max-concurrent"),
    (["train", "--set", "train.lr=inf", "--out", "never-written"], "train.lr: Input should be a finite number"),
])
def test_out_of_range_values_are_refused_before_any_work(args, text):
    proc = _cli(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and text in out and "Traceback" not in out, out


def test_device_names_are_checked():
    with pytest.raises(ConfigError, match="device 'gpu0': use auto, cpu, cuda or cuda:N"):
        pick_device("gpu0")
    assert pick_device("cpu").type == "cpu"
