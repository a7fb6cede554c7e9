"""Values that used to be accepted or end in a traceback get one clear line and exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fusion.device import pick_device
from fusion.errors import ConfigError


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fusion", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args,text",
    [
        (["evaluate", "--figure-pairs", "-5"], "--figure-pairs"),
        (["data", "test-set", "x", "--workers", "-3"], "--workers"),
        (["reproduce", "abc", "--tolerance", "-1"], "--tolerance"),
        (["sweep", "smoke", "--budget-minutes", "-5", "--plan"], "--budget-minutes"),
        (["sweep", "smoke", "--max-concurrent", "-2", "--plan"], "--max-concurrent"),
        (["train", "--set", "train.lr=inf", "--out", "never-written"], "train.lr: Input should be a finite number"),
    ],
)
def test_out_of_range_values_are_refused_before_any_work(args, text):
    proc = _cli(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and text in out and "Traceback" not in out, out


def test_device_names_are_checked():
    with pytest.raises(ConfigError, match="device 'gpu0': use auto, cpu, cuda or cuda:N"):
        pick_device("gpu0")
    assert pick_device("cpu").type == "cpu"


def test_sources_check_names_every_bad_file_whole_on_its_own_line(tmp_path):
    """A table cell used to cut long file names at 80 columns; a symlink to a text file was a "truncated PNG"."""
    import cv2
    import numpy as np

    root = tmp_path / "a-rather-long-folder-name-for-the-infrared-visible-dataset" / "tno"
    for sub in ("ir", "vi"):
        (root / sub).mkdir(parents=True)
        cv2.imwrite(str(root / sub / "00.png"), np.full((8, 8), 100, np.uint8))
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "vi" / "01.png").symlink_to(tmp_path / "passwd")
    cv2.imwrite(str(root / "ir" / "01.png"), np.full((8, 8), 100, np.uint8))
    embedded = Path(__file__).resolve().parents[2] / "data" / "embedded"
    (tmp_path / "params.yaml").write_text(
        f"sources:\n  tno: {{layout: tno, path: {root}}}\n  embedded: {{layout: photos, path: {embedded}}}\n"
    )
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fusion", "data", "sources", "--check", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "80"},
    )
    bad = root / "vi" / "01.png"
    line = f"{bad}: not a PNG image: its content is text, not .png data; the file is a symlink to {tmp_path / 'passwd'}"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert any(line in ln for ln in proc.stderr.splitlines()), proc.stderr
    assert "truncated" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "tags,text",
    [
        ({"model": "cadnif", "variant": "OD-Net"}, "its weights are not those of cadnif OD-Net (26 missing"),
        ({"variant": "NO-UFA"}, "its weights are not those of ufa NO-UFA (0 missing, e.g. []; 2 unexpected"),
        ({"variant": "CA-Net"}, "its tags (model 'ufa', variant 'CA-Net') name no registered network"),
    ],
)
def test_a_checkpoint_under_another_models_tag_is_named_not_a_traceback(tmp_path, tags, text):
    """A UFA checkpoint re-tagged as CADNIF or as another variant used to end in load_state_dict's RuntimeError."""
    import torch

    from fusion.checkpoint import CHECKPOINT_FORMAT, model_from_checkpoint
    from fusion.errors import DataError
    from fusion.models import build_model

    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": "ufa",
        "variant": "UFA",
        "model_options": {},
        "state_dict": build_model("ufa", "UFA").state_dict(),
        **tags,
    }
    torch.save(payload, tmp_path / "ufa.pt")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'ufa.pt'}: {text}")):
        model_from_checkpoint(tmp_path / "ufa.pt")
