"""Loss behaviour: UFA-Fuse Eq. 1."""

from __future__ import annotations

import pytest
import torch

from fusion.losses import L1SSIMLoss, ssim


def test_identical_images_have_zero_loss():
    x = torch.rand(2, 3, 32, 32)
    out = L1SSIMLoss(0.2)(x, x)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_lambda_mixes_l1_and_ssim_terms():
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    l1 = (a - b).abs().mean()
    s = 1 - ssim(a, b)
    assert L1SSIMLoss(1.0)(a, b)["loss"].item() == pytest.approx(l1.item(), rel=1e-6)
    assert L1SSIMLoss(0.0)(a, b)["loss"].item() == pytest.approx(s.item(), rel=1e-6)
    assert L1SSIMLoss(0.2)(a, b)["loss"].item() == pytest.approx((0.2 * l1 + 0.8 * s).item(), rel=1e-6)


def test_blurrier_prediction_costs_more():
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 48, 48)
    slightly = gt + 0.02 * torch.randn_like(gt)
    very = torch.nn.functional.avg_pool2d(gt, 5, 1, 2)
    loss = L1SSIMLoss(0.2)
    assert loss(slightly.clamp(0, 1), gt)["loss"] < loss(very, gt)["loss"]


def test_gradient_flows_to_the_prediction():
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    L1SSIMLoss(0.2)(pred, torch.rand(1, 3, 16, 16))["loss"].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_invalid_lambda_is_rejected():
    with pytest.raises(ValueError, match="lambda_l1 must be in"):
        L1SSIMLoss(1.5)
