"""Structural metrics: SSIM (Wang et al. 2004), Qc (Cvejic), Qm (Wang and Liu)."""

from __future__ import annotations

import torch

from fusion.metrics._context import Batch, safe_div
from fusion.metrics._filters import gaussian_valid

_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _sliding(x: torch.Tensor, size: int, dim: int, op) -> torch.Tensor:
    """op (torch.maximum / torch.minimum) over `size` consecutive samples along dim ('valid'),
    by doubling: windows of 2, 4, 8, ... then two overlapping ones (op is idempotent)."""
    n = x.shape[dim] - size + 1
    width = 1
    while 2 * width <= size:
        m = x.shape[dim] - width
        x = op(x.narrow(dim, 0, m), x.narrow(dim, width, m))
        width *= 2
    if width < size:
        x = op(x.narrow(dim, 0, n), x.narrow(dim, size - width, n))
    return x.narrow(dim, 0, n)


def flat_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """True where the size x size window ('valid' positions) of x is constant.

    Separable sliding max and min by doubling (~2 log2(size) element-wise ops per image).
    """
    hi = _sliding(_sliding(x, size, 2, torch.maximum), size, 1, torch.maximum)
    lo = _sliding(_sliding(x, size, 2, torch.minimum), size, 1, torch.minimum)
    return hi == lo


def local_stats(x: torch.Tensor, y: torch.Tensor, size: int, sigma: float):
    """Gaussian-window means, variances and covariance ('valid' region, as ssim_index.m) of
    S stacked batches x (S*N images) against one batch y (N images).

    E[x^2] - E[x]^2 leaves rounding noise (~1e-11 on 0..255) where a window is flat; Qc's
    constants are 2e-16, so that noise would decide its value. Flat windows get exactly 0.
    y's own maps are filtered once however many x share it.
    """
    reps = x.shape[0] // y.shape[0]
    ys = y.repeat(reps, 1, 1)
    n = x.shape[0]
    maps = gaussian_valid(torch.cat([x, x * x, x * ys, y, y * y]), size, sigma)
    mx, exx, exy = maps[:n], maps[n : 2 * n], maps[2 * n : 3 * n]
    my, eyy = (m.repeat(reps, 1, 1) for m in maps[3 * n :].chunk(2))
    sxx = exx - mx * mx
    syy = eyy - my * my
    sxy = exy - mx * my
    if sxx.numel():
        fx, fy = flat_windows(x, size), flat_windows(y, size).repeat(reps, 1, 1)
        zero = torch.zeros_like(sxx)
        sxx = torch.where(fx, zero, sxx)
        syy = torch.where(fy, zero, syy)
        sxy = torch.where(fx | fy, zero, sxy)
    return mx, my, sxx, syy, sxy


def ssim_map(x, y, size: int = 11, sigma: float = 1.5, c1: float = _C1, c2: float = _C2):
    """SSIM map and the local covariance (Qc weighs by it)."""
    mx, my, sxx, syy, sxy = local_stats(x, y, size, sigma)
    num = (2.0 * mx * my + c1) * (2.0 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return num / den, sxy


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM, 11x11 Gaussian (sigma 1.5) window, 'valid' region, L = 255, K = (0.01, 0.03).

    C1, C2 > 0 keep it defined for constant images (two equal constants give 1).
    """
    return ssim_map(x, y)[0].flatten(1).mean(dim=1)


def SSIM(batch: Batch) -> torch.Tensor:
    sa, sb = ssim(torch.cat([batch.image("a"), batch.image("b")]), batch.f).chunk(2)
    return (sa + sb) / 2.0


# Cvejic's metric as in Liu's toolbox (metricCvejic.m, option 2): 7x7 window, C1 = C2 = 2e-16.
_QC_C = 2e-16


def Qc(batch: Batch) -> torch.Tensor:
    """Local SSIM(A,F), SSIM(B,F) weighted by sigma_AF / (sigma_AF + sigma_BF).

    Where the weight falls below 0 the local value is 0, above 1 it is 1 (as the toolbox).
    Where sigma_AF + sigma_BF = 0 (F flat there) the weight is 0.5 instead of 0/0.
    """
    maps, cov = ssim_map(torch.cat([batch.image("a"), batch.image("b")]), batch.f, 7, 1.5, _QC_C, _QC_C)
    (ssim_a, ssim_b), (s_af, s_bf) = maps.chunk(2), cov.chunk(2)
    w = safe_div(s_af, s_af + s_bf, 0.5)
    sim = w * ssim_a + (1.0 - w) * ssim_b
    sim = torch.where(w < 0, torch.zeros_like(sim), torch.where(w > 1, torch.ones_like(sim), sim))
    return sim.flatten(1).mean(dim=1)


def haar_level(x: torch.Tensor):
    """One orthonormal 2-D Haar step on 2x2 blocks; odd sizes repeat the last row/column
    (pywt's 'symmetric' mode for haar). Returns (LL, H, V, D)."""
    if x.shape[1] % 2:
        x = torch.cat([x, x[:, -1:, :]], dim=1)
    if x.shape[2] % 2:
        x = torch.cat([x, x[:, :, -1:]], dim=2)
    p, q = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    r, s = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    return (p + q + r + s) / 2.0, (p + q - r - s) / 2.0, (p - q + r - s) / 2.0, (p - q - r + s) / 2.0


def Qm(batch: Batch) -> torch.Tensor:
    """Wang and Liu's metric (Liu's metricPWW.m): 2-level Haar, Q1^(2/3) Q2^(1/3).

    Per level, edge preservation EP = sum over H, V, D of exp(-|X - F|), weighted by
    W = H^2 + V^2 + D^2 of each source; so each Q lies in [0, 3]. A level where neither
    source has any detail (sum W = 0) gives Q = 0.
    """
    x1, x2, xf = batch.image("a"), batch.image("b"), batch.f
    qs = []
    for _ in range(2):
        l1, *d1 = haar_level(x1)
        l2, *d2 = haar_level(x2)
        lf, *df = haar_level(xf)
        w1 = sum(c * c for c in d1)
        w2 = sum(c * c for c in d2)
        ep1 = sum(torch.exp(-(c - f).abs()) for c, f in zip(d1, df))
        ep2 = sum(torch.exp(-(c - f).abs()) for c, f in zip(d2, df))
        num = (ep1 * w1 + ep2 * w2).flatten(1).sum(dim=1)
        qs.append(safe_div(num, (w1 + w2).flatten(1).sum(dim=1), 0.0))
        x1, x2, xf = l1, l2, lf
    return qs[0] ** (2.0 / 3.0) * qs[1] ** (1.0 / 3.0)
