"""Gradient metrics: SF, AG, Qabf (Xydeas-Petrovic)."""

from __future__ import annotations

import math

import torch

from fusion.metrics._context import Batch, safe_div
from fusion.metrics._filters import atan_, exp_


def SF(batch: Batch) -> torch.Tensor:
    """sqrt(RF^2 + CF^2), each the mean squared first difference over its own count."""
    f = batch.f
    rf2 = (f[:, :, 1:] - f[:, :, :-1]).pow(2).flatten(1).mean(dim=1)
    cf2 = (f[:, 1:, :] - f[:, :-1, :]).pow(2).flatten(1).mean(dim=1)
    return torch.sqrt(rf2 + cf2)


def matlab_gradient(x: torch.Tensor, dim: int) -> torch.Tensor:
    """MATLAB `gradient` along dim: central differences inside, one-sided at the borders."""
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
    if n == 2:
        return torch.cat([first, last], dim=dim)
    inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2.0
    return torch.cat([first, inner, last], dim=dim)


def AG(batch: Batch) -> torch.Tensor:
    """sum sqrt((gx^2 + gy^2) / 2) / ((H-1)(W-1)), as the MATLAB evaluation code divides."""
    f = batch.f
    gx = matlab_gradient(f, 2)
    gy = matlab_gradient(f, 1)
    h, w = f.shape[1:]
    s = torch.sqrt((gx * gx + gy * gy) / 2.0).flatten(1).sum(dim=1)
    return s / ((h - 1) * (w - 1))


# Xydeas-Petrovic model constants (Electronics Letters 2000).
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel responses of MATLAB conv2(x, h, 'same') (zero padding), h = [-1 0 1; -2 0 2; -1 0 1]
    for gx and its transpose for gy, as separable sums of shifted slices.

    conv2 flips the kernels, which negates both gx and gy: strength and atan(gy/gx) are
    unchanged, so the unflipped sums are used. On integer images both are exact integers.
    """
    p = torch.nn.functional.pad(x, (1, 1, 1, 1))
    rows = p[:, :-2, :] + 2.0 * p[:, 1:-1, :] + p[:, 2:, :]  # vertical smoothing
    cols = p[:, :, :-2] + 2.0 * p[:, :, 1:-1] + p[:, :, 2:]  # horizontal smoothing
    gx = rows[:, :, 2:] - rows[:, :, :-2]
    gy = cols[:, :-2, :] - cols[:, 2:, :]
    return gx, gy


def sobel_strength_angle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge strength sqrt(gx^2+gy^2) and orientation atan(gy/gx) (pi/2 where gx = 0)."""
    gx, gy = sobel(x)
    g = torch.sqrt(gx * gx + gy * gy)
    zero = gx == 0
    angle = atan_(gy / gx.masked_fill(zero, 1.0)).masked_fill_(zero, math.pi / 2)
    return g, angle


def _edge_preservation(ga, aa, gf, af) -> torch.Tensor:
    # Relative strength is min/max; equal strengths give 1. analysis_Qabf.m stores gF there
    # instead (scale-dependent; the reference values keep it): a <= 1.3e-5 relative
    # difference on TNO, see docs/metrics.md.
    big = torch.maximum(ga, gf)
    g_rel = torch.minimum(ga, gf).div_(big.masked_fill(big == 0, 1.0)).masked_fill_(big == 0, 1.0)
    a_rel = 1.0 - torch.abs(aa - af) / (math.pi / 2)
    # Q_g Q_a = T_g T_a / ((1 + exp(K_g (g - D_g))) (1 + exp(K_a (a - D_a)))).
    eg = exp_(g_rel.sub_(_DG).mul_(_KG)).add_(1.0)
    ea = exp_(a_rel.sub_(_DA).mul_(_KA)).add_(1.0)
    return (_TG * _TA) / eg.mul_(ea)


def Qabf(batch: Batch) -> torch.Tensor:
    ga, aa = batch.cached(("sobel", "a"), lambda: sobel_strength_angle(batch.image("a")))
    gb, ab = batch.cached(("sobel", "b"), lambda: sobel_strength_angle(batch.image("b")))
    gf, af = batch.cached(("sobel", "f"), lambda: sobel_strength_angle(batch.f))
    qaf = _edge_preservation(ga, aa, gf, af)
    qbf = _edge_preservation(gb, ab, gf, af)
    num = (qaf * ga + qbf * gb).flatten(1).sum(dim=1)
    den = (ga + gb).flatten(1).sum(dim=1)
    # Both sources without a single edge: nothing to preserve, defined as 0.
    return safe_div(num, den, 0.0)
