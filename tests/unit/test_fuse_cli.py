"""`fusion fuse`: a checkpoint and two or more images in, one fused PNG out."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from fusion.checkpoint import untrained_checkpoint
from fusion.models import build_model


def _fuse(*args):
    return subprocess.run(
        [sys.executable, "-m", "fusion", "fuse", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def _crops(shared_data, tmp_path, names, size=(40, 56)):
    out = []
    for i, src in enumerate(names):
        img = cv2.imread(str(shared_data / src))
        path = tmp_path / f"in{i}.png"
        cv2.imwrite(str(path), img[: size[0], : size[1]])
        out.append(path)
    return out


def test_ufa_fuses_a_colour_pair_and_a_triple(shared_data, tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    pair = _crops(shared_data, tmp_path, ["mf/Lytro20/lytro-01-A.jpg", "mf/Lytro20/lytro-01-B.jpg"])
    proc = _fuse(*pair, "--model", ckpt, "--out", tmp_path / "f.png", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    fused = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    assert fused.shape == (40, 56, 3)
    triple = [shared_data / f"mf/Lytro20/triples/lytro-01-{k}.jpg" for k in "ABC"]
    paths = _crops(shared_data, tmp_path, [p.relative_to(shared_data) for p in triple])
    proc = _fuse(*paths, "--model", ckpt, "--out", tmp_path / "t.png")
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(tmp_path / "t.png")).shape == (40, 56, 3)


def test_gray_model_on_ir_and_colour_visible_keeps_the_colour(shared_data, tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "cadnif.pt", "cadnif", "CA-DRDB-AU-GRL-Net", stage="single")
    ir, vi = _crops(
        shared_data, tmp_path, ["irvis/RoadScene221/ir/FLIR_00006.jpg", "irvis/RoadScene221/vi/FLIR_00006.jpg"]
    )
    proc = _fuse(ir, vi, "--model", ckpt, "--out", tmp_path / "f.png", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    fused = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    assert fused.ndim == 3 and not np.array_equal(fused[..., 0], fused[..., 1])  # colour came back


def test_fuse_errors_name_the_problem(shared_data, tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    a, b = _crops(shared_data, tmp_path, ["mf/Lytro20/lytro-01-A.jpg", "mf/Lytro20/lytro-01-B.jpg"])
    one = _fuse(a, "--model", ckpt, "--out", tmp_path / "x.png")
    assert one.returncode == 2 and "at least 2 images" in one.stderr
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((41, 56, 3), np.uint8))
    mismatch = _fuse(a, big, "--model", ckpt, "--out", tmp_path / "x.png")
    assert mismatch.returncode == 2 and "differ in size" in mismatch.stderr
    stage1 = untrained_checkpoint(tmp_path / "s1.pt", "crossfuse", "full", stage="autoencoder")
    refused = _fuse(a, b, "--model", stage1, "--out", tmp_path / "x.png")
    assert refused.returncode == 2 and "stage-1 (auto-encoder) checkpoint does not fuse" in refused.stderr
    jpeg = _fuse(a, b, "--model", ckpt, "--out", tmp_path / "x.jpg")
    assert jpeg.returncode == 2 and "write a .png" in jpeg.stderr
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.parametrize("model,variant", [("cadnif", "OD-Net"), ("crossfuse", "F_CNN")])
def test_gray_models_fuse_odd_sizes(model, variant):
    from fusion.inference import fuse

    net = build_model(model, variant).eval()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (37, 53), dtype=np.uint8), rng.integers(0, 255, (37, 53), dtype=np.uint8)
    assert fuse(net, [a, b]).shape == (37, 53)


@pytest.mark.parametrize("model,variant", [("ufa", "UFA"), ("cadnif", "CA-DRDB-AU-GRL-Net")])
def test_bfloat16_fusion_stays_within_a_gray_level_of_float32(shared_data, tmp_path, model, variant):
    """--precision bfloat16 runs the model under CPU autocast: same image within one gray
    level on a real Lytro pair; a precision the device cannot use is refused by name."""
    ckpt = untrained_checkpoint(tmp_path / "m.pt", model, variant, stage="single")
    pair = _crops(shared_data, tmp_path, ["mf/Lytro20/lytro-01-A.jpg", "mf/Lytro20/lytro-01-B.jpg"], size=(96, 120))
    outs = {}
    for precision in ("float32", "bfloat16"):
        proc = _fuse(
            *pair, "--model", ckpt, "--out", tmp_path / f"{precision}.png", "--device", "cpu", "--precision", precision
        )
        assert proc.returncode == 0, proc.stderr
        assert f"({precision})" in proc.stdout
        outs[precision] = cv2.imread(str(tmp_path / f"{precision}.png"), cv2.IMREAD_UNCHANGED).astype(int)
    diff = np.abs(outs["float32"] - outs["bfloat16"])
    assert diff.max() <= 1 and diff.mean() < 0.5
    half = _fuse(*pair, "--model", ckpt, "--out", tmp_path / "h.png", "--device", "cpu", "--precision", "float16")
    assert half.returncode == 2 and "precision float16 on CPU" in half.stderr
    bad = _fuse(*pair, "--model", ckpt, "--out", tmp_path / "h.png", "--precision", "fp8")
    assert bad.returncode == 2 and "use one of float32, bfloat16, float16" in bad.stderr
    assert not (tmp_path / "h.png").exists()
