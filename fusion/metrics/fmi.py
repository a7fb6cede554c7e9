"""Feature mutual information: Haghighat and Razian's fast FMI (fmi.m / analysis_fmi.m).

Per 3x3 sliding window the features of X and F are min-max normalised into two 9-bin
marginal PDFs (MATLAB column-major order: the CDFs depend on it), a joint PDF is built
with Nelsen's method between the Frechet bounds, and the window's normalised MI is
2 MI / (H(X) + H(F)). The metric is the mean over windows of (FMI(A,F) + FMI(B,F)) / 2.
Windows are processed in chunks so that memory stays bounded for large batches.
"""

from __future__ import annotations

import math

import numpy as np
import pywt
import torch
import torch.nn.functional as F

from fusion.metrics._context import Batch, safe_div

_W = 3
_L = _W * _W
# unfold lists a window row by row; MATLAB's aSub(:) lists it column by column.
_COLUMN_MAJOR = [r * _W + c for c in range(_W) for r in range(_W)]
_CHUNK = 1 << 13


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of each image (MATLAB dct2), as two matrix products."""

    def basis(n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=torch.float64, device=x.device)
        m = torch.cos(math.pi * (2.0 * k.unsqueeze(0) + 1.0) * k.unsqueeze(1) / (2.0 * n))
        m = m * math.sqrt(2.0 / n)
        m[0] /= math.sqrt(2.0)
        return m

    return basis(x.shape[1]) @ x @ basis(x.shape[2]).T


def dmey_mosaic(x: torch.Tensor) -> torch.Tensor:
    """[cA cH; cV cD] of one discrete-Meyer DWT level, rescaled to [0, 1] (all ones if flat).

    pywt's 'dmey' filters with half-sample symmetric extension (MATLAB's default 'sym');
    the transform is cheap next to the windowed MI, so it runs on the host.
    """
    out = []
    for img in x.detach().cpu().numpy():
        ca, (ch, cv, cd) = pywt.dwt2(img, "dmey", mode="symmetric")
        m = snap_noise(torch.from_numpy(np.block([[ca, ch], [cv, cd]]))[None])[0].numpy()
        lo, hi = m.min(), m.max()
        out.append(np.ones_like(m) if hi == lo else (m - lo) / (hi - lo))
    return torch.from_numpy(np.stack(out)).to(x.device)


def _windows(x: torch.Tensor) -> torch.Tensor:
    """N x H x W -> (N * windows) x 9 in column-major window order."""
    cols = F.unfold(x.unsqueeze(1), _W)  # N x 9 x L
    return cols[:, _COLUMN_MAJOR, :].transpose(1, 2).reshape(-1, _L)


def _pdf(sub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalised window as a PDF (uniform where flat), and the flat mask."""
    lo = sub.min(dim=1, keepdim=True).values
    hi = sub.max(dim=1, keepdim=True).values
    flat = hi == lo
    norm = torch.where(flat, torch.ones_like(sub), (sub - lo) / torch.where(flat, torch.ones_like(hi), hi - lo))
    return norm / norm.sum(dim=1, keepdim=True), flat.squeeze(1)


def _neg_plogp(p: torch.Tensor) -> torch.Tensor:
    # MATLAB takes real(-p log2 p): for a (rounding-)negative p that is -p log2 |p|.
    nz = p != 0
    return torch.where(nz, -p * torch.log2(torch.where(nz, p.abs(), torch.ones_like(p))), torch.zeros_like(p))


def _staircase(qc: torch.Tensor, pc: torch.Tensor):
    """Cells holding the mass of the comonotone coupling of two 9-bin CDFs (one per row).

    Its joint PDF (the second differences of min(Q_i, P_j)) is non-zero only on a staircase
    of at most 17 cells: the cell of each segment between consecutive merged breakpoints.
    Each breakpoint ends one segment; both lists of 9 are returned as (i, j, mass, valid),
    0-based cell indices, the mass being the segment length (0 for tied breakpoints).
    """
    zero = qc.new_zeros(qc.shape[0], 1)
    q_ext, p_ext = torch.cat([zero, qc], 1), torch.cat([zero, pc], 1)  # Q_0 = P_0 = 0
    rows = torch.arange(_L, device=qc.device).expand_as(qc)
    # Segment ending at Q_i: j = #{P_j < Q_i}; it starts at max(Q_{i-1}, P_j).
    jq = torch.searchsorted(pc, qc, right=False)
    mass_q = qc - torch.maximum(q_ext[:, :-1], p_ext.gather(1, jq))
    # Segment ending at P_j: i = #{Q_i <= P_j} (ties: the Q segment comes first).
    ip = torch.searchsorted(qc, pc, right=True)
    mass_p = pc - torch.maximum(p_ext[:, :-1], q_ext.gather(1, ip))
    # Index 9 means past the last bin: only rounding (CDF tails of 1 - 1e-16) lands there.
    return (torch.cat([rows, ip], 1), torch.cat([jq, rows], 1), torch.cat([mass_q, mass_p], 1))


def _window_fmi(xs: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """Normalised feature MI of each window pair (rows of xs, fs), as fmi.m.

    fmi.m sums -x log2 x over all 81 cells of jpdf = w J + (1 - w) q p'. Here the dense
    product part is summed in closed form and only the <= 18 staircase cells of J (the
    Frechet-bound PDF) are corrected individually, so no 9 x 9 array is ever built; the
    value agrees with the 81-cell sum to ~1e-13 (checked in the tests via _numpy_ref).
    """
    p, p_flat = _pdf(xs)  # p: source, q: fused
    q, q_flat = _pdf(fs)
    # Two flat windows have the same (uniform) feature PDF: as for equal windows, FMI = 1.
    # fmi.m leaves this case to the rounding of mean(1/9), which makes it 1 or 0 by chance.
    same = (xs == fs).all(dim=1) | (p_flat & q_flat)

    # A uniform PDF is centred exactly (not up to rounding), so its correlation is exactly 0.
    pt = torch.where(p_flat.unsqueeze(1), torch.zeros_like(p), p - p.mean(dim=1, keepdim=True))
    qt = torch.where(q_flat.unsqueeze(1), torch.zeros_like(q), q - q.mean(dim=1, keepdim=True))
    num = (pt * qt).sum(dim=1)
    c = torch.where(num == 0, torch.zeros_like(num), num / torch.sqrt((pt * pt).sum(dim=1) * (qt * qt).sum(dim=1)))

    idx = torch.arange(1, _L + 1, dtype=p.dtype, device=p.device)
    p_sd = torch.sqrt(((idx * idx) * p).sum(dim=1) - ((idx * p).sum(dim=1)) ** 2)
    q_sd = torch.sqrt(((idx * idx) * q).sum(dim=1) - ((idx * q).sum(dim=1)) ** 2)

    # c < 0 uses the lower Frechet bound max(Q + P - 1, 0): the comonotone coupling of q
    # with p reversed, so one staircase routine serves both branches.
    lower = c < 0
    p_eff = torch.where(lower.unsqueeze(1), torch.flip(p, dims=(1,)), p)
    qc, pc = torch.cumsum(q, dim=1), torch.cumsum(p, dim=1)
    ci, cj, mass = _staircase(qc, torch.cumsum(p_eff, dim=1))
    valid = (ci < _L) & (cj < _L)
    mass = torch.where(valid, mass, torch.zeros_like(mass))
    ci, cj = ci.clamp(max=_L - 1), cj.clamp(max=_L - 1)

    # sum_ij bound(i, j) = integral of #{Q_i >= t} * #{P_j >= t} (upper) or
    # #{Q_i >= t} * #{1 - P_j < t} (lower) over t; constant on each staircase segment.
    count_j = torch.where(lower.unsqueeze(1), cj + 1, _L - cj).to(p.dtype)
    bound_sum = (mass * (_L - ci).to(p.dtype) * count_j).sum(dim=1)
    cov = bound_sum - qc.sum(dim=1) * pc.sum(dim=1)
    degenerate = (p_sd == 0) | (q_sd == 0) | (~lower & (c == 0))
    weight = torch.where(degenerate, torch.zeros_like(c), safe_div(c, safe_div(cov, q_sd * p_sd, 0.0), 0.0))

    h_p, h_q = _neg_plogp(p).sum(dim=1), _neg_plogp(q).sum(dim=1)
    # Dense part: sum_ij phi(u q_i p_j) with u = 1 - w, phi(x) = -x log2 |x|.
    u = 1.0 - weight
    s_p, s_q = p.sum(dim=1), q.sum(dim=1)
    log_u = torch.log2(torch.where(u == 0, torch.ones_like(u), u.abs()))
    dense = -u * log_u * s_p * s_q + u * (s_p * h_q + s_q * h_p)
    # Staircase cells: replace phi(u q p) by phi(w J + u q p).
    prod = u.unsqueeze(1) * q.gather(1, ci) * p_eff.gather(1, cj)
    x = weight.unsqueeze(1) * mass + prod
    h_joint = dense + (_neg_plogp(x) - _neg_plogp(prod)).sum(dim=1)

    mi = h_p + h_q - h_joint
    fmi = torch.where(mi == 0, torch.zeros_like(mi), safe_div(2.0 * mi, h_p + h_q, 0.0))
    return torch.where(same, torch.ones_like(fmi), fmi)


def fmi(xf: torch.Tensor, ff: torch.Tensor) -> torch.Tensor:
    """Per-window FMI(X, F) as an N x windows tensor, from feature images xf, ff."""
    n = xf.shape[0]
    xs, fs = _windows(xf), _windows(ff)
    # ~100 small element-wise ops per chunk: on CPU small chunks stay in cache; on a GPU
    # large chunks amortise the kernel launches.
    chunk = _CHUNK if xs.device.type == "cpu" else 1 << 18
    out = torch.cat([_window_fmi(xs[i : i + chunk], fs[i : i + chunk]) for i in range(0, xs.shape[0], chunk)])
    return out.view(n, -1)


def snap_noise(c: torch.Tensor) -> torch.Tensor:
    """Zero transform coefficients at rounding-noise level (|c| <= 1e-10 max |c| per image).

    A flat region gives coefficients of ~1e-13 whose sign and size are rounding noise; FMI
    normalises each window by its own range, so without this they would decide the value.
    """
    peak = c.abs().flatten(1).max(dim=1).values.view(-1, 1, 1)
    return torch.where(c.abs() <= 1e-10 * peak, torch.zeros_like(c), c)


_FEATURES = {"pixel": lambda x: x, "dct": lambda x: snap_noise(dct2(x)), "wavelet": dmey_mosaic}


def _fmi_metric(batch: Batch, feature: str) -> torch.Tensor:
    make = _FEATURES[feature]
    fa = batch.cached(("feature", feature, "a"), lambda: make(batch.a))
    fb = batch.cached(("feature", feature, "b"), lambda: make(batch.b))
    ff = batch.cached(("feature", feature, "f"), lambda: make(batch.f))
    return ((fmi(fa, ff) + fmi(fb, ff)) / 2.0).mean(dim=1)


def FMI_pixel(batch: Batch) -> torch.Tensor:
    return _fmi_metric(batch, "pixel")


def FMI_dct(batch: Batch) -> torch.Tensor:
    return _fmi_metric(batch, "dct")


def FMI_w(batch: Batch) -> torch.Tensor:
    return _fmi_metric(batch, "wavelet")
