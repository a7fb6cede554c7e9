"""Inference and metrics on CUDA against the CPU: fusion within one gray level (float32),
every metric to 1e-5 relative, `fusion fuse --device cuda`."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from fusion.models import MODELS, build_model

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

VARIANTS = [(m, v) for m, spec in sorted(MODELS.items()) for v in spec.variants if v not in spec.aliases]


@pytest.fixture(scope="module")
def photo_pair():
    """A real photograph (scikit-image's, always here), 96 x 128, as a near/far-focus pair and its sharp original."""
    from skimage import data

    sharp = cv2.resize(data.astronaut(), (128, 96), interpolation=cv2.INTER_AREA)
    blurred = cv2.blur(sharp, (7, 7))
    near, far = sharp.copy(), blurred.copy()
    near[:, 64:], far[:, 64:] = blurred[:, 64:], sharp[:, 64:]
    return near, far, sharp


@pytest.mark.parametrize(("model", "variant"), VARIANTS, ids=[f"{m}-{v}" for m, v in VARIANTS])
def test_gpu_inference_equals_cpu_inference_within_one_gray_level(gpu, photo_pair, model, variant):
    from fusion.inference import fuse, prepare_for_inference

    torch.manual_seed(0)
    net = prepare_for_inference(build_model(model, variant))
    near, far, _ = photo_pair
    on_cpu = fuse(net, [near, far], "cpu")
    on_gpu = fuse(net.to(gpu), [near, far], gpu)
    assert on_gpu.shape == on_cpu.shape == near.shape
    worst = int(np.abs(on_gpu.astype(int) - on_cpu).max())
    assert worst <= 1, f"{model} {variant}: {worst} gray levels apart"


def test_every_metric_on_the_gpu_equals_the_cpu_value(gpu, photo_pair):
    from fusion import metrics
    from fusion.baselines import fuse_baseline

    near, far, sharp = photo_pair
    fused = fuse_baseline("laplacian_pyramid", [near, far])
    want = metrics.compute(near, far, fused, sharp, device="cpu")
    got = metrics.compute(near, far, fused, sharp, device=gpu)
    assert set(got) == set(want) == set(metrics.METRICS)
    off = {n: (got[n], want[n]) for n in want if abs(got[n] - want[n]) > 1e-5 * max(abs(want[n]), 1e-12)}
    assert not off, off
    # batched, as `fusion evaluate` scores every method's output of a pair at once
    from fusion.evaluate import score_batch

    outputs = [fused, fuse_baseline("average", [near, far])]
    for g, w in zip(
        score_batch([near, far], outputs, sharp, list(want), gpu),
        score_batch([near, far], outputs, sharp, list(want), "cpu"),
    ):
        off = {n: (g[n], w[n]) for n in w if abs(g[n] - w[n]) > 1e-5 * max(abs(w[n]), 1e-12)}
        assert not off, off


def test_fusion_fuse_on_the_gpu_matches_the_cpu(gpu, photo_pair, tmp_path):
    from fusion.checkpoint import untrained_checkpoint

    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    near, far, _ = photo_pair
    paths = [tmp_path / "near.png", tmp_path / "far.png"]
    for p, img in zip(paths, (near, far)):
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def fuse_cli(device: str, precision: str = "float32") -> np.ndarray:  # RGB, as fuse() returns
        out = tmp_path / f"{device}-{precision}.png"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fusion",
                "fuse",
                *map(str, paths),
                "--model",
                str(ckpt),
                "--out",
                str(out),
                "--device",
                device,
                "--precision",
                precision,
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"on {device}" in proc.stdout.replace("\n", " ")
        return cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)

    from fusion.inference import fuse, load_model

    net, _ = load_model(ckpt, "cpu")
    on_cpu = fuse(net, [near, far], "cpu").astype(int)
    on_gpu = fuse_cli(gpu.type)
    assert np.abs(on_gpu - on_cpu).max() <= 1
    # README: --precision bfloat16 is at most a gray level from float32
    precision = "bfloat16" if gpu.type == "cpu" or torch.cuda.is_bf16_supported() else "float16"
    assert np.abs(fuse_cli(gpu.type, precision) - on_gpu).max() <= 1, precision
