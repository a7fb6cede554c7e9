"""Classical fusion baselines: shapes, identities, a multi-focus sanity check, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fusion.baselines import BASELINES, average, choose_max_gradient, fuse_baseline, guided_filter
from fusion.metrics import compute


def _scene(h=96, w=128, seed=0) -> np.ndarray:
    """Textured RGB scene: sharp detail everywhere, so blur is visible everywhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 120 + 50 * np.sin(x / 3.0) * np.cos(y / 4.0)
    img = np.stack([base + rng.normal(0, 25, (h, w)) for _ in range(3)], axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _half_blurred_pair(sharp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A: left half in focus, B: right half in focus (the rest Gaussian-blurred)."""
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    half = sharp.shape[1] // 2
    a, b = blurred.copy(), blurred.copy()
    a[:, :half] = sharp[:, :half]
    b[:, half:] = sharp[:, half:]
    return a, b


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("shape", [(64, 80), (64, 80, 3), (37, 51), (37, 51, 3)])
def test_shape_and_dtype(name, shape):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2)]
    out = fuse_baseline(name, imgs)
    assert out.shape == shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_three_sources_and_mixed_gray_colour(name):
    rgb = _scene(48, 64)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert fuse_baseline(name, [rgb, rgb, rgb]).shape == rgb.shape
    assert fuse_baseline(name, [gray, rgb]).shape == rgb.shape  # gray is repeated to RGB


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_identical_inputs_stay_close(name):
    img = _scene()
    out = fuse_baseline(name, [img, img])
    # Every baseline is a (weighted) choice between equal sources; pyramid and wavelet
    # reconstructions are exact up to rounding.
    assert np.abs(out.astype(int) - img).max() <= 1


def test_average_of_identical_inputs_is_identity():
    img = _scene()
    np.testing.assert_array_equal(average([img, img]), img)
    np.testing.assert_array_equal(average([img[:, :, 0]] * 3), img[:, :, 0])


def test_average_by_hand():
    a = np.array([[0, 10]], np.uint8)
    b = np.array([[1, 20]], np.uint8)
    np.testing.assert_array_equal(average([a, b]), [[1, 15]])  # 0.5 rounds up


def test_choose_max_gradient_picks_the_sharp_halves():
    sharp = _scene()
    a, b = _half_blurred_pair(sharp)
    fused = choose_max_gradient([a, b])
    half = sharp.shape[1] // 2
    # Away from the seam every pixel comes from the in-focus source.
    np.testing.assert_array_equal(fused[:, 8 : half - 8], sharp[:, 8 : half - 8])
    np.testing.assert_array_equal(fused[:, half + 8 : -8], sharp[:, half + 8 : -8])
    psnr = {
        n: compute(None, None, fuse_baseline(n, [a, b]), gt=sharp, names=["PSNR_gt"])["PSNR_gt"]
        for n in ("average", "choose_max_gradient")
    }
    assert psnr["choose_max_gradient"] > psnr["average"] + 5


@pytest.mark.parametrize("name", ["laplacian_pyramid", "dwt", "guided_filter_decision"])
def test_multi_scale_baselines_beat_average_on_multi_focus(name):
    sharp = _scene()
    a, b = _half_blurred_pair(sharp)
    score = {
        n: compute(None, None, fuse_baseline(n, [a, b]), gt=sharp, names=["PSNR_gt"])["PSNR_gt"]
        for n in ("average", name)
    }
    assert score[name] > score["average"]


def test_guided_filter_preserves_constant_and_smooths_step():
    guide = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    const = np.full((32, 32), 0.3)
    np.testing.assert_allclose(guided_filter(guide, const, 4, 1e-3), const, atol=1e-12)
    # With the source as its own guide and a tiny eps, edges are kept (edge-preserving).
    step = np.zeros((32, 32))
    step[:, 16:] = 1.0
    out = guided_filter(step, step, 4, 1e-6)
    assert np.abs(out - step).max() < 1e-3


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown baseline 'avg'.*valid names.*'average'"):
        fuse_baseline("avg", [_scene(), _scene()])


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="same height and width"):
        fuse_baseline("average", [_scene(48, 64), _scene(48, 60)])


@pytest.mark.parametrize("bad", [[], "single"])
def test_needs_two_sources(bad):
    images = [] if bad == [] else [_scene()]
    with pytest.raises(ValueError, match="at least 2"):
        average(images)


def test_rejects_bad_channel_count():
    with pytest.raises(ValueError, match="HxW or HxWx3"):
        average([np.zeros((8, 8, 4), np.uint8)] * 2)
