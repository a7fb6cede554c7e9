"""VIF: Sheikh and Bovik's multi-scale pixel-domain visual information fidelity (vifp_mscale)."""

from __future__ import annotations

import torch

from fusion.metrics._context import Batch, safe_div
from fusion.metrics._filters import gaussian_1d, sep_filter_valid

_SIGMA_NSQ = 2.0
_EPS = 1e-10


def _scale_terms(refs: torch.Tensor, dist: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator sums of one scale for S stacked references (S*N images)
    against the same distorted batch (N images); thresholds exactly as vifp_mscale.m."""
    reps = refs.shape[0] // dist.shape[0]
    dists = dist.repeat(reps, 1, 1)
    n = refs.shape[0]
    # dist's own statistics are filtered once however many references share it.
    maps = sep_filter_valid(torch.cat([refs, refs * refs, refs * dists, dist, dist * dist]), k)
    mu1, e11, e12 = maps[:n], maps[n : 2 * n], maps[2 * n : 3 * n]
    mu2, e22 = (m.repeat(reps, 1, 1) for m in maps[3 * n :].chunk(2))
    s1 = torch.clamp(e11 - mu1 * mu1, min=0.0)
    s2 = torch.clamp(e22 - mu2 * mu2, min=0.0)
    s12 = e12 - mu1 * mu2

    g = s12 / (s1 + _EPS)
    sv = s2 - g * s12
    low1 = s1 < _EPS
    g = torch.where(low1, torch.zeros_like(g), g)
    sv = torch.where(low1, s2, sv)
    s1 = torch.where(low1, torch.zeros_like(s1), s1)
    low2 = s2 < _EPS
    g = torch.where(low2, torch.zeros_like(g), g)
    sv = torch.where(low2, torch.zeros_like(sv), sv)
    neg = g < 0
    sv = torch.where(neg, s2, sv)
    g = torch.where(neg, torch.zeros_like(g), g)
    sv = torch.clamp(sv, min=_EPS)

    num = torch.log10(1.0 + g * g * s1 / (sv + _SIGMA_NSQ)).flatten(1).sum(dim=1)
    den = torch.log10(1.0 + s1 / _SIGMA_NSQ).flatten(1).sum(dim=1)
    return num, den


def vif(refs: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """VIF(ref, dist) per image for refs = S stacked reference batches (S*N x H x W) and
    one distorted batch (N x H x W); 0 where a ref has no variance at any scale (den = 0)."""
    num = refs.new_zeros(refs.shape[0])
    den = refs.new_zeros(refs.shape[0])
    n = refs.shape[0]
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        k = gaussian_1d(size, size / 5.0, refs.device)
        if scale > 1:
            # Blur and keep every other sample (MATLAB x(1:2:end, 1:2:end)).
            both = sep_filter_valid(torch.cat([refs, dist]), k, step=2)
            refs, dist = both[:n], both[n:]
        n_s, d_s = _scale_terms(refs, dist, k)
        num, den = num + n_s, den + d_s
    return safe_div(num, den, 0.0)


def VIF(batch: Batch) -> torch.Tensor:
    # Both sources in one pass: every filtering is one call, F's maps are filtered once.
    va, vb = vif(torch.cat([batch.image("a"), batch.image("b")]), batch.f).chunk(2)
    return va + vb
