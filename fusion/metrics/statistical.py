"""Statistical metrics: SD, CC, SCD, PSNR."""

from __future__ import annotations

import math

import torch

from fusion.metrics._context import Batch, safe_div


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image; 0 when either image is constant (undefined there)."""
    xc = _flat(x) - _flat(x).mean(dim=1, keepdim=True)
    yc = _flat(y) - _flat(y).mean(dim=1, keepdim=True)
    den = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    return safe_div((xc * yc).sum(dim=1), den, 0.0)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = _flat(x) - _flat(y)
    return (d * d).mean(dim=1)


def psnr_from_mse(m: torch.Tensor) -> torch.Tensor:
    """10 log10(255^2 / MSE); +inf for identical images (MSE = 0), never NaN."""
    return torch.where(
        m > 0,
        10.0 * torch.log10((255.0 * 255.0) / torch.where(m > 0, m, torch.ones_like(m))),
        torch.full_like(m, math.inf),
    )


def SD(batch: Batch) -> torch.Tensor:
    x = _flat(batch.f)
    return torch.sqrt(((x - x.mean(dim=1, keepdim=True)) ** 2).mean(dim=1))


def CC(batch: Batch) -> torch.Tensor:
    return (corr(batch.image("a"), batch.f) + corr(batch.image("b"), batch.f)) / 2.0


def SCD(batch: Batch) -> torch.Tensor:
    return corr(batch.f - batch.image("b"), batch.image("a")) + corr(batch.f - batch.image("a"), batch.image("b"))


def PSNR(batch: Batch) -> torch.Tensor:
    return psnr_from_mse((mse(batch.image("a"), batch.f) + mse(batch.image("b"), batch.f)) / 2.0)
