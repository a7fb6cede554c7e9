"""Metrics against a ground-truth image (synthetic multi-focus pairs have one)."""

from __future__ import annotations

import torch

from fusion.metrics._context import Batch
from fusion.metrics.statistical import mse, psnr_from_mse
from fusion.metrics.structural import ssim


def SSIM_gt(batch: Batch) -> torch.Tensor:
    return ssim(batch.image("gt"), batch.f)


def PSNR_gt(batch: Batch) -> torch.Tensor:
    return psnr_from_mse(mse(batch.image("gt"), batch.f))


def L1_gt(batch: Batch) -> torch.Tensor:
    return (batch.image("gt") - batch.f).abs().flatten(1).mean(dim=1)
