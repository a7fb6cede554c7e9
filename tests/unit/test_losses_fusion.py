"""Loss behaviour: CADNIF Eq. 7 (paper and released), CrossFuse stage-1 and stage-2 losses, MS-SSIM."""

from __future__ import annotations

from types import SimpleNamespace

import kornia
import pytest
import torch

from fusion.losses import (
    CADNIF_TASK_WEIGHTS,
    CADNIFLoss,
    CrossFuseAELoss,
    CrossFuseLoss,
    canonical_task,
    laplacian,
    local_mean,
    ms_ssim,
)
from fusion.models import build_loss


def _imgs(n=2, size=(20, 24), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 1, *size, generator=g) for _ in range(n)]


def _mse_pm1(a, b, border):
    """MSE on the [-1, 1] scale over the centre."""
    sl = (..., slice(border, -border or None), slice(border, -border or None))
    return ((a * 2 - 1)[sl] - (b * 2 - 1)[sl]).pow(2).mean()


def _grad_pm1(a, b, border):
    sl = (..., slice(border, -border or None), slice(border, -border or None))
    return (laplacian(a * 2 - 1)[sl] - laplacian(b * 2 - 1)[sl]).pow(2).mean()


# ---------------------------------------------------------------- operators


def test_laplacian_is_the_4_neighbour_kernel_with_zero_padding():
    x = torch.zeros(1, 1, 5, 5)
    x[..., 2, 2] = 1.0
    lap = laplacian(x)
    assert lap[0, 0, 2, 2] == -4 and lap[0, 0, 1, 2] == 1 and lap[0, 0, 1, 1] == 0
    flat = laplacian(torch.full((1, 1, 5, 5), 0.5))
    assert (flat[..., 1:-1, 1:-1] == 0).all()
    assert flat[0, 0, 0, 2] == -0.5 and flat[0, 0, 0, 0] == -1.0  # zero padding at edges and corners


def test_ms_ssim_properties_and_single_scale_matches_kornia_valid_ssim():
    x, y = _imgs(2, (64, 64))
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(x, y).item() == pytest.approx(ms_ssim(y, x).item(), rel=1e-5)
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    noisier = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert 1 > ms_ssim(x, noisy) > ms_ssim(x, noisier) > 0
    single = kornia.metrics.ssim(x, noisy, 11, padding="valid").mean()
    assert ms_ssim(x, noisy, weights=(1.0,)).item() == pytest.approx(single.item(), rel=1e-4)


# ---------------------------------------------------------------- CADNIF


def test_cadnif_task_weights_follow_eq7_and_aliases():
    assert CADNIF_TASK_WEIGHTS == {
        "ir-vis": (1.0, 1.0, 4.0, 4.0),
        "medical": (0.0, 1.0, 1.0, 0.0),
        "multi-focus": (0.0005, 0.0005, 1.0, 1.0),
        "multi-exposure": (1.0, 1.0, 4.0, 4.0),
    }
    assert canonical_task("multifocus") == "multi-focus"
    assert canonical_task("IR_VIS") == "ir-vis"
    assert canonical_task("Multi-Exposure") == "multi-exposure"
    with pytest.raises(ValueError, match="unknown fusion task"):
        canonical_task("sar")


def test_cadnif_fused_equal_to_both_sources_costs_nothing():
    (a,) = _imgs(1)
    for task in CADNIF_TASK_WEIGHTS:
        assert CADNIFLoss(task)(a, a, a)["loss"].item() == 0.0


@pytest.mark.parametrize("border", [0, 6])
def test_cadnif_ir_vis_terms_by_hand(border):
    ir, vi = _imgs(2)
    out = CADNIFLoss("ir-vis", crop_border=border)(ir, ir, vi)  # F = ir: its own terms vanish
    mse = _mse_pm1(ir, vi, border)
    grad = 4 * _grad_pm1(ir, vi, border)
    assert out["mse"].item() == pytest.approx(mse.item(), rel=1e-5)
    assert out["grad"].item() == pytest.approx(grad.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((mse + grad).item(), rel=1e-5)


def test_cadnif_medical_weights_take_intensity_from_the_second_and_texture_from_the_first_source():
    mri, pet, f = _imgs(3)
    loss = CADNIFLoss("medical", crop_border=0)
    # lambdas 0, 1, 1, 0: MSE(F, PET) + grad(F, MRI)
    expected = _mse_pm1(f, pet, 0) + _grad_pm1(f, mri, 0)
    assert loss(f, mri, pet)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss(pet, mri, pet)["mse"].item() == 0.0
    assert loss(mri, mri, pet)["grad"].item() == 0.0


def test_cadnif_multi_focus_weights():
    a, b, f = _imgs(3)
    out = CADNIFLoss("multi-focus", crop_border=0)(f, a, b)
    mse = 0.0005 * (_mse_pm1(f, a, 0) + _mse_pm1(f, b, 0))
    grad = _grad_pm1(f, a, 0) + _grad_pm1(f, b, 0)
    assert out["loss"].item() == pytest.approx((mse + grad).item(), rel=1e-5)


def test_cadnif_released_loss_is_100_times_mse_plus_3_gradient_terms_on_the_whole_window_whatever_the_task():
    """The trained graph is fed the 120x120 label window and scores all of it: no border crop."""
    ir, vi, f = _imgs(3)
    expected = 100 * (_mse_pm1(f, ir, 0) + _mse_pm1(f, vi, 0) + 3 * _grad_pm1(f, vi, 0) + 3 * _grad_pm1(f, ir, 0))
    for task in ("ir-vis", "medical"):
        loss = CADNIFLoss(task, released=True)
        assert loss.crop_border == 0
        assert loss(f, ir, vi)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert CADNIFLoss("ir-vis", released=True, crop_border=6).crop_border == 6  # an explicit border wins


def test_cadnif_crop_ignores_the_border_band():
    ir, vi = _imgs(2, (30, 30))
    f = ir.clone()
    vi = ir.clone()
    f[..., :3, :] = 0.0  # differs only in the top rows, and the Laplacian reaches one row further
    assert CADNIFLoss("ir-vis", crop_border=6)(f, ir, vi)["loss"].item() == 0.0
    assert CADNIFLoss("ir-vis", crop_border=0)(f, ir, vi)["loss"].item() > 0.0
    with pytest.raises(ValueError, match="too small"):
        CADNIFLoss(crop_border=6)(*_imgs(3, (12, 12)))


def test_cadnif_sequences_need_symmetric_weights():
    a, b, c, f = _imgs(4)
    three = CADNIFLoss("multi-exposure", crop_border=0)(f, a, b, c)["loss"]
    expected = sum(_mse_pm1(f, s, 0) + 4 * _grad_pm1(f, s, 0) for s in (a, b, c))
    assert three.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="exactly 2 sources"):
        CADNIFLoss("medical")(f, a, b, c)


def test_cadnif_gradient_flows_to_the_fused_image():
    ir, vi = _imgs(2)
    f = torch.rand(1, 1, 20, 24, requires_grad=True)
    CADNIFLoss()(f, ir, vi)["loss"].backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


# ---------------------------------------------------------------- CrossFuse


def test_crossfuse_ae_loss():
    (x,) = _imgs(1, (64, 64))
    zero = CrossFuseAELoss()(x, x)
    assert zero["loss"].item() == pytest.approx(0.0, abs=1e-3)
    shifted = (x + 0.1).clamp(max=1.0)
    out = CrossFuseAELoss()(shifted, x)
    mse = ((shifted - x) * 255).pow(2).mean()
    assert out["mse"].item() == pytest.approx(mse.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(mse.item() + 1e4 * (1 - ms_ssim(shifted, x).item()), rel=1e-4)


def test_crossfuse_intensity_target_takes_the_source_with_the_brighter_local_mean():
    ir = torch.zeros(1, 1, 24, 24)
    ir[..., :, :12] = 0.9  # bright left half in IR
    vi = torch.full((1, 1, 24, 24), 0.4)
    vi = vi + 0.05 * torch.rand(1, 1, 24, 24)  # textured, mid-grey VIS
    target = CrossFuseLoss().intensity_target(ir, vi)
    torch.testing.assert_close(target[..., :, :4], ir[..., :, :4])
    torch.testing.assert_close(target[..., :, 20:], vi[..., :, 20:])
    assert local_mean(torch.ones(1, 1, 11, 11), 11)[0, 0, 5, 5] == 1.0


def test_crossfuse_gradient_target_is_the_max_of_clipped_laplacians():
    ir = torch.zeros(1, 1, 9, 9)
    ir[..., 4, 4] = 1.0  # bright dot: +1 around it, -4 on it
    vi = torch.ones(1, 1, 9, 9)
    vi[..., 4, 4] = 0.0  # dark dot: +4 on it, -1 around it; -1/-2 on the border
    target = CrossFuseLoss().gradient_target(ir, vi)
    expected = torch.zeros(1, 1, 9, 9)
    expected[..., 4, 4] = 4.0
    expected[..., 3, 4] = expected[..., 5, 4] = expected[..., 4, 3] = expected[..., 4, 5] = 1.0
    torch.testing.assert_close(target, expected)


@pytest.mark.parametrize("released", [False, True])
def test_crossfuse_loss_by_hand_on_flat_images(released):
    h, w = 10, 12
    ir, vi = torch.full((1, 1, h, w), 0.7), torch.full((1, 1, h, w), 0.3)
    out = CrossFuseLoss(released=released)(ir.clone(), ir, vi)
    # F = IR, the brighter source: no intensity loss. Gradient target is 0; lap F is negative on
    # the border (zero padding): -0.7 on edges, -1.4 on corners. Eq. 12 leaves lap F unclipped.
    assert out["intensity"].item() == pytest.approx(0.0, abs=1e-6)
    edges = 2 * (h - 2) + 2 * (w - 2)
    grad = 0.0 if released else 255**2 * (0.49 * edges + 4 * 1.96) / (h * w)
    assert out["gradient"].item() == pytest.approx(grad, rel=1e-5, abs=1e-6)
    assert out["loss"].item() == pytest.approx(10 * grad, rel=1e-5, abs=1e-5)
    # intensity on the 0..255 scale
    darker = CrossFuseLoss(released=released)(vi.clone(), ir, vi)
    assert darker["intensity"].item() == pytest.approx((0.4 * 255) ** 2, rel=1e-5)


def test_crossfuse_loss_needs_ir_and_vi_and_gives_gradients():
    ir, vi = _imgs(2)
    f = torch.rand(1, 1, 20, 24, requires_grad=True)
    CrossFuseLoss()(f, ir, vi)["loss"].backward()
    assert f.grad.abs().sum() > 0


# ---------------------------------------------------------------- registry


def test_build_loss_reads_config_fields_with_defaults():
    assert build_loss("ufa", SimpleNamespace(options={"lambda_l1": 0.4})).lambda_l1 == 0.4
    assert build_loss("ufa", SimpleNamespace()).lambda_l1 == 0.2  # the model's default
    default = build_loss("cadnif", SimpleNamespace())
    assert default.task == "ir-vis" and default.weights == (1.0, 1.0, 4.0, 4.0) and default.crop_border == 6
    med = build_loss("cadnif", SimpleNamespace(task="medical", released=False, options={"loss_crop_border": 0}))
    assert med.weights == (0.0, 1.0, 1.0, 0.0) and med.crop_border == 0
    rel = build_loss("cadnif", SimpleNamespace(task="medical", released=True))
    assert rel.weights == (1.0, 1.0, 3.0, 3.0) and rel.scale == 100.0 and rel.crop_border == 0
    assert isinstance(build_loss("crossfuse", SimpleNamespace()), CrossFuseLoss)
    assert build_loss("crossfuse", SimpleNamespace(released=True)).released
    assert isinstance(build_loss("crossfuse", SimpleNamespace(), "autoencoder"), CrossFuseAELoss)
