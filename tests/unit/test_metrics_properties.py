"""Properties that pin each metric's definition, the degenerate values, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusion import metrics
from fusion.metrics import MetricInputError, compute, compute_batch, to_gray

RNG = np.random.default_rng(1234)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Single-threaded torch: on a shared 2-core machine waiting OpenMP threads make these
    many small kernels far slower (see docs/metrics.md, Speed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _img(h=40, w=48, seed=0) -> np.ndarray:
    """A smooth gradient plus texture: non-trivial for every metric, uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 100 + 60 * np.sin(x / 7.0 + seed) * np.cos(y / 5.0)
    return np.clip(base + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ convention
def test_to_gray_uses_matlab_weights_and_rounds():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]]], dtype=np.uint8)
    # 0.298936 * 255 = 76.23, 0.587043 * 255 = 149.70, 0.114021 * 255 = 29.08
    np.testing.assert_array_equal(to_gray(rgb), [[76.0, 150.0, 29.0, 90.0]])
    assert to_gray(rgb).dtype == np.float64


def test_to_gray_keeps_gray_and_rounds_floats():
    gray = np.array([[0, 17], [128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(to_gray(gray), gray.astype(np.float64))
    np.testing.assert_array_equal(to_gray(np.array([[100.4, 100.5], [-3.0, 300.0]])), [[100, 101], [0, 255]])
    np.testing.assert_array_equal(to_gray(gray[:, :, None]), gray)


def test_to_gray_rejects_bad_shapes():
    with pytest.raises(MetricInputError, match="HxW or HxWx3"):
        to_gray(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(MetricInputError, match="NaN"):
        to_gray(np.full((4, 4), np.nan))


# ------------------------------------------------------------ information
def test_entropy_of_constant_is_zero():
    assert compute(None, None, np.full((16, 16), 77, np.uint8), names=["EN"])["EN"] == 0.0


def test_entropy_of_two_equal_halves_is_one_bit():
    f = np.zeros((8, 8), np.uint8)
    f[:, 4:] = 200
    assert compute(None, None, f, names=["EN"])["EN"] == pytest.approx(1.0, abs=1e-15)


def test_mi_with_f_equal_to_a_is_entropy_of_a_per_term():
    x = _img()
    const = np.full_like(x, 9)
    r = compute(x, const, x, names=["MI", "EN"])
    # MI(A,F) = H(A) when F = A; MI(B,F) = 0 for a constant B.
    assert r["MI"] == pytest.approx(r["EN"], rel=1e-12)
    both = compute(x, x, x, names=["MI", "EN"])
    assert both["MI"] == pytest.approx(2 * both["EN"], rel=1e-12)


def test_mi_is_below_twice_the_entropy_for_real_fusion():
    a, b = _img(seed=1), _img(seed=2)
    f = ((a.astype(int) + b) // 2).astype(np.uint8)
    r = compute(a, b, f, names=["MI", "EN"])
    assert 0 < r["MI"] < 2 * r["EN"]


# ------------------------------------------------------------ statistical
def test_sd_is_population_sd():
    f = np.array([[0, 2], [4, 6]], np.uint8)
    assert compute(None, None, f, names=["SD"])["SD"] == pytest.approx(math.sqrt(5.0), rel=1e-15)


def test_cc_and_scd_on_constant_images_are_zero_not_nan():
    x = _img()
    c1, c2 = np.full_like(x, 10), np.full_like(x, 200)
    r = compute(c1, c2, x, names=["CC", "SCD"])
    assert r == {"CC": 0.0, "SCD": 0.0}
    r = compute(c1, x, x, names=["CC", "SCD"])
    # corr(A,F) = 0 (A constant), corr(B,F) = 1; SCD: corr(0, A) = 0, corr(F - A, B) = 1.
    assert r["CC"] == pytest.approx(0.5, rel=1e-12)
    assert r["SCD"] == pytest.approx(1.0, rel=1e-12)


def test_psnr_of_identical_images_is_inf():
    x = _img()
    assert compute(x, x, x, gt=x, names=["PSNR", "PSNR_gt"]) == {"PSNR": math.inf, "PSNR_gt": math.inf}


def test_psnr_and_l1_by_hand():
    gt = np.zeros((4, 4), np.uint8)
    f = np.full((4, 4), 5, np.uint8)
    r = compute(gt, gt, f, gt=gt, names=["PSNR", "PSNR_gt", "L1_gt"])
    assert r["PSNR"] == pytest.approx(10 * math.log10(255**2 / 25), rel=1e-14)
    assert r["PSNR_gt"] == r["PSNR"]
    assert r["L1_gt"] == 5.0


# --------------------------------------------------------------- gradient
DOT = np.array([[0, 0, 0], [0, 4, 0], [0, 0, 0]], np.uint8)


def test_ag_by_hand():
    # MATLAB gradient: one-sided at borders, so the dot gives |gx| = 4 at (1,0), (1,2) and
    # |gy| = 4 at (0,1), (2,1); each contributes sqrt(16/2); divided by (3-1)(3-1).
    assert compute(None, None, DOT, names=["AG"])["AG"] == pytest.approx(4 * math.sqrt(8) / 4, rel=1e-15)
    ramp = np.array([[0, 1], [2, 3]], np.uint8)
    assert compute(None, None, ramp, names=["AG"])["AG"] == pytest.approx(4 * math.sqrt(2.5), rel=1e-15)


def test_sf_by_hand():
    # Row differences: 4 and -4 among 3x2 = 6 of them; same for columns.
    assert compute(None, None, DOT, names=["SF"])["SF"] == pytest.approx(math.sqrt(32 / 6 + 32 / 6), rel=1e-15)
    ramp = np.array([[0, 1], [2, 3]], np.uint8)
    assert compute(None, None, ramp, names=["SF"])["SF"] == pytest.approx(math.sqrt(1 + 4), rel=1e-15)


def test_qabf_with_f_equal_a_and_b_zero_is_the_model_ceiling():
    a = _img()
    r = compute(a, np.zeros_like(a), a, names=["Qabf"])
    # Perfect strength and orientation preservation everywhere A has an edge; B adds no weight.
    ceiling = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert r["Qabf"] == pytest.approx(ceiling, rel=1e-12)


def test_qabf_without_any_edge_is_zero():
    z = np.zeros((16, 16), np.uint8)
    assert compute(z, z, _img(16, 16), names=["Qabf"])["Qabf"] == 0.0


def test_qabf_sees_the_zero_padded_frame_of_a_constant_image():
    # conv2(..., 'same') pads with zeros, so a constant non-zero image has edges on its frame.
    c = np.full((16, 16), 50, np.uint8)
    assert compute(c, c, c, names=["Qabf"])["Qabf"] > 0.5


# ------------------------------------------------------------- structural
def test_ssim_of_identical_images_is_one():
    x = _img()
    r = compute(x, x, x, gt=x, names=["SSIM", "SSIM_gt"])
    assert r["SSIM"] == pytest.approx(1.0, abs=1e-12)
    assert r["SSIM_gt"] == pytest.approx(1.0, abs=1e-12)


def test_ssim_drops_for_noise():
    x = _img()
    noisy = np.clip(x + RNG.normal(0, 30, x.shape), 0, 255).astype(np.uint8)
    assert compute(None, None, noisy, gt=x, names=["SSIM_gt"])["SSIM_gt"] < 0.8


def test_qm_and_vif_and_fmi_of_perfect_copy():
    x = _img(48, 48)
    r = compute(x, x, x, names=["Qm", "VIF", "FMI_pixel", "FMI_dct", "FMI_w", "Qc"])
    assert r["Qm"] == pytest.approx(3.0, rel=1e-12)  # each EP sums three exp(0) = 1 terms
    assert r["VIF"] == pytest.approx(2.0, rel=1e-9)  # VIF(X, X) = 1 for each source (up to the 1e-10 guards)
    for name in ("FMI_pixel", "FMI_dct", "FMI_w"):
        assert r[name] == 1.0  # every window pair is equal
    assert r["Qc"] == pytest.approx(1.0, abs=1e-9)


def test_constant_images_give_documented_values_never_nan():
    c1, c2, c3 = (np.full((32, 32), v, np.uint8) for v in (10, 100, 200))
    r = compute(c1, c2, c3, gt=c1)
    assert all(not math.isnan(v) for v in r.values()), r
    assert r["EN"] == r["SD"] == r["SF"] == r["AG"] == 0.0
    assert r["EN"] == 0.0 and math.copysign(1.0, r["EN"]) == 1.0  # +0.0, not -0.0
    assert r["MI"] == r["CC"] == r["SCD"] == r["VIF"] == r["Qm"] == 0.0
    # Pixel and DCT features of constant images are flat (DCT: one DC term, the rest 0).
    assert r["FMI_pixel"] == 1.0
    assert 0.0 < r["FMI_dct"] <= 1.0 and 0.0 < r["FMI_w"] <= 1.0


def test_symmetric_in_the_sources():
    a, b = _img(seed=3), _img(seed=4)
    f = np.maximum(a, b)
    names = [n for n in metrics.METRICS if metrics.METRICS[n].needs_sources and n != "Qc"]
    ab, ba = compute(a, b, f, names=names), compute(b, a, f, names=names)
    for n in names:
        assert ab[n] == pytest.approx(ba[n], rel=1e-12), n


# ------------------------------------------------------------- API and errors
def test_registry_and_default_selection():
    assert {
        "EN",
        "SD",
        "SF",
        "AG",
        "MI",
        "CC",
        "SCD",
        "VIF",
        "Qabf",
        "SSIM",
        "FMI_pixel",
        "FMI_dct",
        "FMI_w",
        "Qc",
        "Qm",
        "PSNR",
        "SSIM_gt",
        "PSNR_gt",
        "L1_gt",
    } == set(metrics.METRICS)
    for name, info in metrics.METRICS.items():
        assert info.name == name and info.description
        assert info.needs_gt == name.endswith("_gt")
    assert metrics.METRICS["L1_gt"].higher_is_better is False
    x = _img()
    assert set(compute(x, x, x)) == {n for n, i in metrics.METRICS.items() if not i.needs_gt}
    assert set(compute(None, None, x)) == {"EN", "SD", "SF", "AG"}
    assert set(compute(None, None, x, gt=x)) == {"EN", "SD", "SF", "AG", "SSIM_gt", "PSNR_gt", "L1_gt"}


def test_colour_inputs_are_converted():
    rgb = np.stack([_img(seed=5), _img(seed=6), _img(seed=7)], axis=2)
    gray = to_gray(rgb)
    assert compute(rgb, rgb, rgb, names=["EN", "MI"]) == compute(gray, gray, gray, names=["EN", "MI"])


def test_batch_accepts_layouts_and_tensors():
    fs = np.stack([_img(seed=s) for s in range(3)])
    a, b = np.stack([_img(seed=10 + s) for s in range(3)]), np.stack([_img(seed=20 + s) for s in range(3)])
    names = ["EN", "MI", "SSIM", "Qabf"]
    ref = compute_batch(a, b, fs, names=names)
    assert all(v.shape == (3,) for v in ref.values())
    t = compute_batch(torch.from_numpy(a), torch.from_numpy(b)[:, None], torch.from_numpy(fs).double(), names=names)
    rgb = np.repeat(fs[..., None], 3, axis=3)
    c = compute_batch(a, b, rgb, names=names)
    for n in names:
        np.testing.assert_array_equal(ref[n], t[n])
        np.testing.assert_array_equal(ref[n], c[n])
        assert ref[n][1] == pytest.approx(compute(a[1], b[1], fs[1], names=[n])[n], rel=1e-12)


def test_shape_mismatch_is_an_error():
    with pytest.raises(MetricInputError, match=r"'b'.*same size"):
        compute(_img(40, 48), _img(40, 48)[:, :40], _img(40, 48))
    with pytest.raises(MetricInputError, match=r"'a'.*same size"):
        compute(_img(30, 48), _img(40, 48), _img(40, 48))
    with pytest.raises(MetricInputError, match="'gt'"):
        compute(_img(), _img(), _img(), gt=_img(20, 20))
    with pytest.raises(MetricInputError):
        compute_batch(np.stack([_img()] * 2), np.stack([_img()] * 2), np.stack([_img()] * 3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_fused_image_is_an_error(bad):
    f = _img().astype(np.float64)
    f[3, 4] = bad
    with pytest.raises(MetricInputError, match="'f'.*NaN or inf"):
        compute(_img(), _img(), f)
    with pytest.raises(MetricInputError, match="NaN or inf"):
        compute_batch(None, None, torch.from_numpy(f)[None], names=["EN"])


def test_unknown_metric_lists_valid_names():
    with pytest.raises(MetricInputError, match=r"unknown metric.*'Qbaf'.*valid names.*'Qabf'"):
        compute(_img(), _img(), _img(), names=["Qbaf"])
    assert issubclass(MetricInputError, ValueError)


def test_gt_metric_without_gt_is_an_error():
    with pytest.raises(MetricInputError, match="SSIM_gt.*ground-truth"):
        compute(_img(), _img(), _img(), names=["SSIM_gt"])


def test_source_metric_without_sources_is_an_error():
    with pytest.raises(MetricInputError, match="'MI' needs both source"):
        compute(None, None, _img(), names=["MI"])
    with pytest.raises(MetricInputError, match="both source images"):
        compute(_img(), None, _img())


def test_too_small_for_a_window_is_an_error():
    with pytest.raises(MetricInputError, match="SSIM.*at least 11x11"):
        compute(_img(8, 8), _img(8, 8), _img(8, 8), names=["SSIM"])


def test_torch_matches_numpy_on_degenerate_images():
    """Flat regions and constant images are where rounding noise could decide a value."""
    from fusion.metrics import _numpy_ref

    step = np.zeros((40, 40), np.uint8)
    step[:, 20:] = 255
    cases = [
        tuple(np.full((32, 32), v, np.uint8) for v in (10, 100, 200)),
        (step, np.full_like(step, 128), step.T.copy()),
        (step, _img(40, 40), np.maximum(step, _img(40, 40))),
    ]
    for a, b, f in cases:
        want = _numpy_ref.compute(*(x.astype(np.float64) for x in (a, b, f, b)))
        got = compute(a, b, f, gt=b)
        for n, v in want.items():
            tol = 1e-4 if n == "Qabf" else 1e-6
            assert got[n] == pytest.approx(v, rel=tol, abs=1e-12), (n, got[n], v)


# ------------------------------------------- FMI per-window core == numpy twin
def _fmi_cases():
    rng = np.random.default_rng(7)
    step = np.zeros((12, 14))
    step[:, 7:] = 200.0
    small = rng.integers(0, 4, (12, 14)).astype(np.float64)  # few levels: ties in the CDFs
    yield "random", rng.integers(0, 256, (17, 19)).astype(np.float64), rng.integers(0, 256, (17, 19)).astype(np.float64)
    yield "few levels", small, rng.integers(0, 4, (12, 14)).astype(np.float64)
    yield "negatively correlated", small, 3.0 - small + (rng.random((12, 14)) < 0.2)
    yield "equal", small, small.copy()
    yield "flat vs step", np.full((12, 14), 9.0), step
    yield "step vs its transpose region", step, np.maximum(step, small * 60)
    yield "3x3", rng.integers(0, 256, (3, 3)).astype(np.float64), rng.integers(0, 256, (3, 3)).astype(np.float64)
    yield "3x3 flat", np.full((3, 3), 5.0), np.full((3, 3), 200.0)
    one_hot = np.zeros((9, 9))
    one_hot[::3, ::3] = 50.0  # windows with a single non-zero pixel: one-hot PDFs, zero spread
    yield "one-hot", one_hot, np.roll(one_hot, 1, axis=1)
    yield "floats", rng.normal(size=(15, 16)), rng.normal(size=(15, 16))
    yield "floats with ties", np.round(rng.normal(size=(15, 16)), 1), np.round(rng.normal(size=(15, 16)), 1)


@pytest.mark.parametrize("band", [1, 7, 1 << 13])
def test_fmi_windows_match_numpy_twin(band, monkeypatch):
    """The banded, staircase-based torch core against fmi.m's 81-cell sum (numpy), per window,
    on adversarial inputs (flat windows, ties, one-hot PDFs, c < 0, equal windows, 3x3)."""
    from fusion.metrics import _numpy_ref, fmi

    monkeypatch.setattr(fmi, "_CPU_WINDOWS", band)
    for label, x, f in _fmi_cases():
        want = _numpy_ref._fmi_map(x, f)
        got_x, got_f = fmi.fmi_maps_torch(
            [torch.from_numpy(x)[None], torch.from_numpy(f)[None]], torch.from_numpy(f)[None]
        )
        np.testing.assert_allclose(got_x[0].numpy(), want, rtol=0, atol=1e-12, err_msg=label)
        np.testing.assert_allclose(got_f[0].numpy(), np.ones_like(want), rtol=0, atol=0, err_msg=label)


@pytest.mark.parametrize(("block", "threads"), [(1, 1), (40, 2), (1 << 11, 1)])
def test_fmi_cpu_kernel_matches_numpy_twin(block, threads, monkeypatch):
    """The compiled CPU kernel (what fmi_maps runs on CPU) against the same numpy twin, with
    blocks of one window row, several rows split over two threads, and the default."""
    from fusion.metrics import _numpy_ref, fmi_cpu

    monkeypatch.setattr(fmi_cpu, "_BLOCK", block)
    for label, x, f in _fmi_cases():
        want = _numpy_ref._fmi_map(x, f)
        got_x, got_f = fmi_cpu.fmi_window_maps(x, f, f, threads=threads)
        np.testing.assert_allclose(got_x, want, rtol=0, atol=1e-12, err_msg=label)
        np.testing.assert_array_equal(got_f, np.ones_like(want), err_msg=label)
        swapped, _ = fmi_cpu.fmi_window_maps(f, x, x, threads=threads)  # F's side in the other role
        np.testing.assert_allclose(swapped, _numpy_ref._fmi_map(f, x), rtol=0, atol=1e-12, err_msg=label)


def test_fmi_cpu_kernel_equals_torch_core_on_a_real_pair(shared_data):
    """Both FMI cores on a crop of a real TNO pair and its SeAFusion result, with each
    feature: the same per-window maps."""
    import cv2

    from fusion.metrics import fmi

    name = min(p.name for p in (shared_data / "irvis" / "TNO42" / "ir").glob("*.png"))
    paths = [shared_data / "irvis" / "TNO42" / d / name for d in ("ir", "vi")]
    paths.append(shared_data / "irvis" / "TNO42_fused" / "SeAFusion" / name)
    crops = [to_gray(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))[100:180, 200:300] for p in paths]
    a, b, f = (torch.from_numpy(np.ascontiguousarray(c))[None] for c in crops)
    for make in (lambda t: t, lambda t: fmi.snap_noise(fmi.dct2(t)), fmi.dmey_mosaic):
        xa, xb, xf = make(a), make(b), make(f)
        fast = fmi.fmi_maps([xa, xb], xf)
        eager = fmi.fmi_maps_torch([xa, xb], xf)
        for got, want in zip(fast, eager):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)


def test_fmi_dct_feature_matches_scipy():
    from scipy.fft import dctn

    from fusion.metrics import fmi

    x = np.random.default_rng(3).normal(size=(2, 13, 22)) * 50
    got = fmi.dct2(torch.from_numpy(x)).numpy()
    want = np.stack([dctn(im, norm="ortho") for im in x])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
