"""Commands never overwrite what they did not create unless asked by a flag."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from fusion.checkpoint import untrained_checkpoint


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fusion", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_fuse_refuses_to_overwrite_a_source_or_an_existing_file(tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for p in (a, b):
        cv2.imwrite(str(p), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    original = a.read_bytes()
    onto_source = _cli("fuse", a, b, "--model", ckpt, "--out", a, "--overwrite")
    assert onto_source.returncode == 2 and "is source image 1" in onto_source.stderr
    assert a.read_bytes() == original
    (tmp_path / "f.png").write_bytes(b"earlier result")
    taken = _cli("fuse", a, b, "--model", ckpt, "--out", tmp_path / "f.png")
    assert taken.returncode == 2 and "already exists; pass --overwrite" in taken.stderr
    assert (tmp_path / "f.png").read_bytes() == b"earlier result"
    replaced = _cli("fuse", a, b, "--model", ckpt, "--out", tmp_path / "f.png", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert cv2.imread(str(tmp_path / "f.png")).shape == (24, 32, 3)


def test_train_out_refuses_a_folder_with_an_earlier_runs_checkpoints(workspace, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"a finished run")
    proc = _cli("train", "--workspace", workspace, "--profile", "tiny", "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert "holds the checkpoints of an earlier run (last.pt)" in proc.stderr and "--resume" in proc.stderr
    assert (out / "last.pt").read_bytes() == b"a finished run"
    assert not (workspace / "prepared").exists()  # refused before any work
