"""CrossFuse training as released and as the paper says: the released stage-1 MS-SSIM, the
released Adam weight decay (and the options that fix both), the paper's learning-rate schedule."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fusion.config import load_config
from fusion.losses import (
    MS_SSIM_WEIGHTS,
    CrossFuseAELoss,
    ms_ssim,
    released_ms_ssim,
    released_ms_ssim_combine,
)
from fusion.models import build_loss
from fusion.train.loop import Trainer
from tests.conftest import REPO

W = MS_SSIM_WEIGHTS


# ---------------------------------------------------------------- the released MS-SSIM


def test_released_combination_of_known_per_scale_values_by_hand():
    ssim = torch.tensor([0.95, 0.9, 0.85, 0.8, 0.6])
    cs = torch.tensor([0.9, 0.8, 0.7, 0.5, 0.3])  # the last scale's cs is never used
    by_hand = (1.9 / 2) ** W[0] * (1.8 / 2) ** W[1] * (1.7 / 2) ** W[2] * (1.5 / 2) ** W[3] * (1.6 / 2) ** (4 * W[4])
    assert released_ms_ssim_combine(ssim, cs).item() == pytest.approx(by_hand, rel=1e-6)
    standard = 0.9 ** W[0] * 0.8 ** W[1] * 0.7 ** W[2] * 0.5 ** W[3] * 0.6 ** W[4]
    assert by_hand == pytest.approx(0.7648, abs=1e-4) and standard == pytest.approx(0.6654, abs=1e-4)


def test_released_ms_ssim_of_flat_images_in_closed_form():
    """Flat images: cs = 1 at every scale and SSIM = the luminance term, on the 0..255 scale with
    data range 255 (the first image's max exceeds 128)."""
    a, b = 0.8, 0.4
    x, y = torch.full((1, 1, 64, 64), a), torch.full((1, 1, 64, 64), b)
    c1 = (0.01 * 255) ** 2
    lum = (2 * (255 * a) * (255 * b) + c1) / ((255 * a) ** 2 + (255 * b) ** 2 + c1)
    assert released_ms_ssim(x, y).item() == pytest.approx(((lum + 1) / 2) ** (4 * W[4]), rel=2e-4)
    standard_lum = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    assert ms_ssim(x, y).item() == pytest.approx(standard_lum ** W[4], rel=2e-4)  # float32 variances of flat maps
    assert not math.isclose(released_ms_ssim(x, y).item(), ms_ssim(x, y).item(), rel_tol=1e-3)


def _pytorch_msssim_normalized(img1, img2, window_size=11):
    """`pytorch_msssim.msssim(img1, img2, normalize=True)` as the authors call it (their images 0..255)."""
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    mssim, mcs = [], []
    for _ in range(5):
        max_val = 255 if torch.max(img1) > 128 else 1
        min_val = -1 if torch.min(img1) < -0.5 else 0
        big_l = max_val - min_val
        _, channel, height, width = img1.size()
        real_size = min(window_size, height, width)
        gauss = torch.tensor([math.exp(-((x - real_size // 2) ** 2) / (2 * 1.5**2)) for x in range(real_size)])
        g1 = (gauss / gauss.sum()).unsqueeze(1)
        window = g1.mm(g1.t()).unsqueeze(0).unsqueeze(0).expand(channel, 1, real_size, real_size)
        mu1, mu2 = F.conv2d(img1, window, groups=channel), F.conv2d(img2, window, groups=channel)
        s1 = F.conv2d(img1 * img1, window, groups=channel) - mu1**2
        s2 = F.conv2d(img2 * img2, window, groups=channel) - mu2**2
        s12 = F.conv2d(img1 * img2, window, groups=channel) - mu1 * mu2
        c1, c2 = (0.01 * big_l) ** 2, (0.03 * big_l) ** 2
        v1, v2 = 2.0 * s12 + c2, s1 + s2 + c2
        mcs.append(torch.mean(v1 / v2))
        mssim.append((((2 * mu1 * mu2 + c1) * v1) / ((mu1**2 + mu2**2 + c1) * v2)).mean())
        img1, img2 = F.avg_pool2d(img1, (2, 2)), F.avg_pool2d(img2, (2, 2))
    mssim, mcs = (torch.stack(mssim) + 1) / 2, (torch.stack(mcs) + 1) / 2
    pow1, pow2 = mcs**weights, mssim**weights
    return torch.prod(pow1[:-1] * pow2[-1])


@pytest.mark.parametrize("brightness", [1.0, 0.45])  # 0.45: max <= 128 on 0..255, the code takes range 1
def test_released_ms_ssim_matches_the_released_library_code_and_differs_from_the_standard(brightness):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 128, 96, generator=g) * brightness
    y = (x + 0.1 * torch.randn(2, 1, 128, 96, generator=g)).clamp(0, brightness)
    want = _pytorch_msssim_normalized(y * 255, x * 255)
    assert released_ms_ssim(y, x).item() == pytest.approx(want.item(), rel=1e-5)
    assert released_ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    released_term, standard_term = 1 - released_ms_ssim(y, x).item(), 1 - ms_ssim(y, x).item()
    assert abs(released_term - standard_term) > 0.1 * standard_term  # 0.029 vs 0.050; dark: 0.156 vs 0.141


def test_stage_one_loss_is_released_only_in_released_mode_without_the_fix():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 64, 64, generator=g)
    recon = (x + 0.1 * torch.randn(1, 1, 64, 64, generator=g)).clamp(0, 1)
    out = CrossFuseAELoss(released=True)(recon, x)
    mse = F.mse_loss(recon * 255, x * 255).item()
    assert out["loss"].item() == pytest.approx(mse + 1e4 * (1 - released_ms_ssim(recon, x).item()), rel=1e-5)
    assert build_loss("crossfuse", stage="autoencoder", train_cfg=SimpleNamespace(released=True, options={})).released
    assert not build_loss(
        "crossfuse", stage="autoencoder", train_cfg=SimpleNamespace(released=True, options={"fix_ms_ssim": True})
    ).released
    assert not build_loss(
        "crossfuse", stage="autoencoder", train_cfg=SimpleNamespace(released=False, options={})
    ).released
    assert not build_loss("crossfuse", stage="autoencoder", train_cfg=SimpleNamespace()).released


# ---------------------------------------------------------------- the trainer


@pytest.fixture
def cfg(tmp_path):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")

    def make(profile="tiny", **train):
        return load_config(tmp_path, profile, {"train": {"model": "crossfuse", **train}})

    return make


@pytest.mark.parametrize(
    ("train", "weight_decay", "ae_released"),
    [
        ({"released": True}, 0.9, True),
        ({"released": True, "weight_decay": 0.01, "options": {"fix_weight_decay": True}}, 0.01, True),
        ({"released": True, "options": {"fix_ms_ssim": True}}, 0.9, False),
        ({"released": False, "weight_decay": 0.01}, 0.01, False),
    ],
)
def test_released_adam_weight_decay_and_stage_one_loss(cfg, tiny_prepared, train, weight_decay, ae_released):
    trainer = Trainer(cfg(variant="full", **train), tiny_prepared)
    assert trainer.stage == "autoencoder"
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [weight_decay]
    assert (
        isinstance(trainer.optimizer, torch.optim.Adam) and trainer.optimizer.param_groups[0]["lr"] == trainer.tcfg.lr
    )
    assert trainer.loss_fn.released is ae_released
    assert trainer.payload()["model_options"] == {"released": train["released"], **train.get("options", {})}


def test_paper_schedule_of_the_fusion_stage_decays_ten_fold_every_two_epochs(cfg, tiny_prepared):
    fusion = cfg("paper", variant="s1-c1", init_from="stage1.pt").train
    assert (fusion.epochs, fusion.lr, fusion.lr_step_epochs) == (8, 1e-2, 2)
    joint = cfg("paper", variant="one-stage", steps_per_epoch=1)
    assert (joint.train.lr, joint.train.lr_step_epochs) == (1e-2, 2)
    trainer = Trainer(joint, tiny_prepared)  # same schedule code for both stages: StepLR once per epoch
    lrs = []
    for _ in range(4):
        trainer.optimizer.step()  # (no gradients: a no-op, keeps the scheduler's order)
        trainer.scheduler.step()  # what fit() does after each epoch
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs[1] == pytest.approx(1e-3) and lrs[3] == pytest.approx(1e-4)
    assert lrs[0] == pytest.approx(1e-2) and lrs[2] == pytest.approx(1e-3)
