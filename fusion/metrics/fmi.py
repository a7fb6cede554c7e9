"""Feature mutual information: Haghighat and Razian's fast FMI (fmi.m / analysis_fmi.m).

Per 3x3 sliding window the features of X and F are min-max normalised into two 9-bin
marginal PDFs (MATLAB column-major order: the CDFs depend on it), a joint PDF is built
with Nelsen's method between the Frechet bounds, and the window's normalised MI is
2 MI / (H(X) + H(F)). The metric is the mean over windows of (FMI(A,F) + FMI(B,F)) / 2.

On CPU, fmi_maps runs the compiled core of fmi_cpu.py (~4x faster); the eager torch core
here runs on other devices and is its reference.

Layout and cost of the eager core (docs/metrics.md, Speed): windows are processed in
bands of image rows as 9 x C tensors (one row per window element, one column per window), so every
reduction over a window is a cheap outer reduction. Everything that depends on one
image only (PDF, CDFs, moments, entropy, centred PDF) is computed once per band and
side; F's side serves both FMI(A,F) and FMI(B,F). The per-pair part needs the merged
order of the two CDFs (one 9 x 9 comparison), four small gathers and 36 logarithms.
"""

from __future__ import annotations

import math

import numpy as np
import pywt
import torch

from fusion.metrics._context import Batch
from fusion.metrics._filters import log_

_W = 3
_L = _W * _W
# Window element k in MATLAB's column-major order sub(:) is pixel (row k % 3, col k // 3).
_OFFSETS = [(k % _W, k // _W) for k in range(_L)]
# Windows per band: 9 x C float64 temporaries stay in a core's L2 cache on CPU; a GPU
# wants large bands to amortise kernel launches.
_CPU_WINDOWS = 1 << 13
_GPU_WINDOWS = 1 << 20
_TINY = 1e-300  # log2 guard: x * log2(max(|x|, _TINY)) is exactly 0 for x = 0


def _dct_1d(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dim by one complex FFT (Makhoul's reordering)."""
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    y = (torch.fft.fft(v, dim=-1) * twiddle).real * math.sqrt(2.0 / n)
    y[..., 0] /= math.sqrt(2.0)
    return y


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of each image (MATLAB dct2; scipy dctn(norm='ortho'))."""
    return _dct_1d(_dct_1d(x).transpose(-1, -2)).transpose(-1, -2).contiguous()


def dmey_mosaic(x: torch.Tensor) -> torch.Tensor:
    """[cA cH; cV cD] of one discrete-Meyer DWT level, rescaled to [0, 1] (all ones if flat).

    pywt's 'dmey' filters with half-sample symmetric extension (MATLAB's default 'sym');
    the transform is cheap next to the windowed MI, so it runs on the host, all images
    of the batch in one call.
    """
    ca, (ch, cv, cd) = pywt.dwt2(x.detach().cpu().numpy(), "dmey", mode="symmetric", axes=(-2, -1))
    m = snap_noise(torch.from_numpy(np.concatenate([np.concatenate([ca, ch], -1), np.concatenate([cv, cd], -1)], -2)))
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    hi = m.flatten(1).amax(1).view(-1, 1, 1)
    flat = hi == lo
    out = (m - lo).div_(torch.where(flat, torch.ones_like(hi), hi - lo))
    return out.masked_fill_(flat, 1.0).to(x.device)


def snap_noise(c: torch.Tensor) -> torch.Tensor:
    """Zero transform coefficients at rounding-noise level (|c| <= 1e-10 max |c| per image).

    A flat region gives coefficients of ~1e-13 whose sign and size are rounding noise; FMI
    normalises each window by its own range, so without this they would decide the value.
    """
    mag = c.abs()
    peak = mag.flatten(1).amax(dim=1).view(-1, 1, 1)
    return c.masked_fill(mag <= 1e-10 * peak, 0.0)


# ----------------------------------------------------------------- per-window core
_CONSTS: dict = {}


def _consts(device) -> dict:
    key = str(device)
    if key not in _CONSTS:
        i = torch.arange(_L, dtype=torch.float64, device=device)
        _CONSTS[key] = {
            "m": torch.stack([i + 1, (i + 1) ** 2]),  # first and second moments of the bin index
            "e": torch.stack([_L - i, i + 1]),  # staircase weights, see _pair
            "w": _L - i,
            "rev": torch.arange(_L - 1, -1, -1, device=device),
            "tiny2": torch.tensor(_TINY, dtype=torch.float64, device=device),
        }
    return _CONSTS[key]


def _cdf_rows(p: torch.Tensor, out: torch.Tensor) -> None:
    """out[0] = 0, out[k + 1] = p_0 + ... + p_k (a loop of adds: torch.cumsum over dim 0 is slower)."""
    out[0].zero_()
    out[1].copy_(p[0])
    for k in range(1, _L):
        torch.add(out[k], p[k], out=out[k + 1])


def _side(v: torch.Tensor, k: dict, reverse: bool) -> dict:
    """Everything FMI needs from one image's windows v (9 x C, column-major rows).

    src[0] is [0; CDF] and [PDF; 0] (2 x 10 x C); with reverse=True src[1] is the same for
    the PDF read backwards (the lower Frechet bound is the comonotone coupling with it).
    Entropies are in nats (FMI is a ratio of entropies).
    """
    n = v.shape[1]
    lo, hi = v.amin(0), v.amax(0)
    flat = hi == lo
    d = v - lo
    src = v.new_empty(2 if reverse else 1, 2, _L + 1, n)
    p = src[0, 1, :_L]
    torch.mul(d, d.sum(0).reciprocal_(), out=p)  # min-max normalisation, then sum 1
    if bool(flat.any()):
        p[:, flat] = 1.0 / _L  # a flat window is uniform (1/9 exactly, as fmi.m)
    src[:, 1, _L].zero_()
    _cdf_rows(p, src[0, 0])
    if reverse:
        torch.index_select(p, 0, k["rev"], out=src[1, 1, :_L])
        _cdf_rows(src[1, 1, :_L], src[1, 0])
    s_p = src[0, 0, _L]
    m1, m2 = k["m"] @ p
    ss = torch.linalg.vecdot(p, p, dim=0) - s_p * s_p / _L  # sum of (p - mean)^2
    lp = log_(p.clamp_min(_TINY))
    return {
        "flat": flat,
        "src": src,
        "p": p,
        # A uniform PDF is centred exactly (not up to rounding): its correlation is exactly 0.
        "rn": torch.where(flat, torch.zeros_like(ss), ss.rsqrt()),
        "sd": torch.sqrt(m2 - m1 * m1),
        "h": 0.0 - torch.linalg.vecdot(p, lp, dim=0),
        "s": s_p,
        "s_cdf": src[0, 0, 1:].sum(0),
    }


def _pair(x: dict, f: dict, same: torch.Tensor, k: dict) -> torch.Tensor:
    """Normalised feature MI of each window pair (fmi.m), from the two _side results.

    fmi.m sums -x log2 x over all 81 cells of jpdf = w J + (1 - w) q p'. Here the dense
    product part is summed in closed form and only the <= 18 staircase cells of J (the
    Frechet-bound PDF, the second differences of min(Q_i, P_j)) are corrected: J is non-zero
    only on the cell of each segment between consecutive merged CDF breakpoints. The value
    agrees with the 81-cell sum to ~1e-13 (tests: against _numpy_ref).
    """
    n = same.shape[0]
    # Pearson correlation of the PDFs: sum (p - mean)(q - mean) = sum p q - s_p s_q / 9.
    c = (torch.linalg.vecdot(x["p"], f["p"], dim=0) - x["s"] * f["s"] / _L).mul_(x["rn"]).mul_(f["rn"])
    lower = c < 0
    # c < 0 uses the lower Frechet bound max(Q + P - 1, 0): the comonotone coupling of p
    # with q read backwards, so one staircase serves both branches (F's side has both).
    # Selected by an exact blend (x * 1 + y * 0), cheaper than torch.where on CPU.
    sel = lower.to(c.dtype)
    fsrc = torch.mul(f["src"][0], 1.0 - sel)
    fsrc.addcmul_(f["src"][1], sel)  # [0; Q], [q; 0]
    xsrc = x["src"][0]  # [0; P], [p; 0]
    cdf_q, cdf_p = fsrc[0], xsrc[0]
    less = torch.lt(cdf_p[1:].unsqueeze(0), cdf_q[1:].unsqueeze(1)).view(torch.uint8)  # [i, j]: P_j < Q_i
    jq = less.sum(1, dtype=torch.uint8)  # the segment ending at Q_i lies in cell (i, jq_i)
    cc = less.sum(0, dtype=torch.uint8)  # the segment ending at P_j lies in cell (9 - cc_j, j)
    # Gathers as index_select on flat views (2x faster than gather over dim 0). Index 9 is
    # past the last bin (only rounding, CDF tails of 1 - 1e-16 reach it): PDF 0 there.
    cols = torch.arange(n, device=c.device).view(1, n)
    idx_p = torch.add(cols, jq, alpha=n).view(-1)
    idx_q = torch.add(cols + _L * n, cc, alpha=-n).view(-1)
    b = c.new_empty(4 * _L, n)
    cdf_prev_p, pdf_p_at = b[2 * _L : 3 * _L], b[3 * _L :]
    torch.index_select(xsrc[0].reshape(-1), 0, idx_p, out=cdf_prev_p.view(-1))  # P_{jq-1}
    torch.index_select(xsrc[1].reshape(-1), 0, idx_p, out=pdf_p_at.view(-1))  # p_{jq}
    cdf_prev_q = torch.index_select(fsrc[0].reshape(-1), 0, idx_q).view(_L, n)  # Q_{ip-1}
    pdf_q_at = torch.index_select(fsrc[1].reshape(-1), 0, idx_q).view(_L, n)  # q_{ip}

    # Segment masses: from the later of the two previous breakpoints to this breakpoint.
    mq, mp = b[:_L], b[_L : 2 * _L]
    torch.sub(cdf_q[1:], torch.maximum(cdf_q[:-1], cdf_prev_p, out=cdf_prev_p), out=mq)
    torch.sub(cdf_p[1:], torch.maximum(cdf_p[:-1], cdf_prev_q, out=cdf_prev_q), out=mp)
    # sum_ij bound(i, j) = sum over cells of J_ij #{i' >= i} #{j' >= j} (upper bound), or with
    # #{i' >= i} -> i + 1 for q read backwards (lower); 9 - ip_j = cc_j.
    counts = torch.cat([jq, cc]).to(c.dtype)  # one conversion: mixed-dtype products are slow
    e_up, e_low = k["e"] @ (_L - counts[:_L]).mul_(mq)
    g_sum = k["w"] @ counts[_L:].mul_(mp)
    bound_sum = torch.where(lower, e_low + 10.0 * (k["w"] @ mp) - g_sum, e_up + g_sum)
    cov = bound_sum - f["s_cdf"] * x["s_cdf"]
    # weight = c / (cov / (sd_p sd_q)), 0 where either sd or cov is 0 (c * sd / inf = 0).
    weight = c.mul_(f["sd"]).mul_(x["sd"]).div_(cov.masked_fill_(cov == 0, math.inf))
    u = 1.0 - weight

    # Staircase cells: phi(w J + u q p) - phi(u q p), phi(y) = -y ln|y| = -y ln(y^2) / 2.
    y = torch.empty(4 * _L, n, dtype=c.dtype, device=c.device)
    prod = y[2 * _L :]
    torch.mul(fsrc[1, :_L], pdf_p_at, out=prod[:_L])
    torch.mul(pdf_q_at, xsrc[1, :_L], out=prod[_L:])
    prod.mul_(u)
    torch.addcmul(prod, b[: 2 * _L], weight, out=y[: 2 * _L])
    t = log_(torch.addcmul(k["tiny2"], y, y)).mul_(y)  # y ln(y^2 + tiny): 0 for y = 0
    stair2 = t[2 * _L :].sum(0) - t[: 2 * _L].sum(0)

    # Dense part: sum_ij phi(u q_i p_j) = -u ln|u| s_p s_q + u (s_p h_q + s_q h_p).
    h_p, h_q, s_p, s_q = x["h"], f["h"], x["s"], f["s"]
    u_log_u2 = u * log_(torch.addcmul(k["tiny2"], u, u))
    h_joint = u * (s_p * h_q + s_q * h_p) + 0.5 * (stair2 - u_log_u2 * (s_p * s_q))
    h_sum = h_p + h_q
    out = (h_sum - h_joint).mul_(2.0).div_(h_sum)  # 2 MI / (H_p + H_q)
    out.masked_fill_(h_sum == 0, 0.0)
    # Two flat windows have the same (uniform) feature PDF: as for equal windows, FMI = 1.
    # fmi.m leaves this case to the rounding of mean(1/9), which makes it 1 or 0 by chance.
    return out.masked_fill_(same | (x["flat"] & f["flat"]), 1.0)


def _windows(img: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """9 x C windows (rows in MATLAB column-major element order) of window rows r0..r1-1."""
    w = img.shape[1] - _W + 1
    out = img.new_empty(_L, r1 - r0, w)
    for k, (dr, dc) in enumerate(_OFFSETS):
        out[k] = img[r0 + dr : r1 + dr, dc : dc + w]
    return out.view(_L, -1)


def _equal_windows(x: torch.Tensor, f: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """True where the 3x3 windows (rows r0..r1-1) of x and f are equal, as a flat C vector."""
    eq = x[r0 : r1 + _W - 1] == f[r0 : r1 + _W - 1]
    eq = eq[:-2] & eq[1:-1] & eq[2:]
    return (eq[:, :-2] & eq[:, 1:-1] & eq[:, 2:]).reshape(-1)


CPU_KERNEL = True  # False: the eager torch core on CPU too (benchmarks compare the two)


def fmi_maps(xfs: list[torch.Tensor], ff: torch.Tensor) -> list[torch.Tensor]:
    """Per-window FMI(X, F) (N x windows) for each of the two feature batches X in xfs
    against ff: on CPU by the compiled kernel (fmi_cpu, ~4x faster), elsewhere in torch."""
    if ff.device.type == "cpu" and len(xfs) == 2 and CPU_KERNEL:
        from fusion.metrics import fmi_cpu  # numba: imported only where FMI runs on CPU

        xa, xb = xfs
        maps = [
            fmi_cpu.fmi_window_maps(xa[i].numpy(), xb[i].numpy(), ff[i].numpy(), threads=torch.get_num_threads())
            for i in range(ff.shape[0])
        ]
        return [torch.from_numpy(np.stack([m[k] for m in maps])) for k in range(2)]
    return fmi_maps_torch(xfs, ff)


def fmi_maps_torch(xfs: list[torch.Tensor], ff: torch.Tensor) -> list[torch.Tensor]:
    """fmi_maps in eager torch (any device): bands of windows, F's side computed once per
    band for all X."""
    n, h, w = ff.shape
    rows = h - _W + 1
    k = dict(_consts(ff.device))
    per_band = _CPU_WINDOWS if ff.device.type == "cpu" else _GPU_WINDOWS
    step = max(1, per_band // (w - _W + 1))
    outs = [ff.new_empty(n, rows * (w - _W + 1)) for _ in xfs]
    for img in range(n):
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            fs = _side(_windows(ff[img], r0, r1), k, reverse=True)
            cols = slice(r0 * (w - _W + 1), r1 * (w - _W + 1))
            for xf, out in zip(xfs, outs):
                same = _equal_windows(xf[img], ff[img], r0, r1)
                out[img, cols] = _pair(_side(_windows(xf[img], r0, r1), k, reverse=False), fs, same, k)
    return outs


_FEATURES = {"pixel": lambda x: x, "dct": lambda x: snap_noise(dct2(x)), "wavelet": dmey_mosaic}


def _fmi_metric(batch: Batch, feature: str) -> torch.Tensor:
    make = _FEATURES[feature]
    fa = batch.cached(("feature", feature, "a"), lambda: make(batch.image("a")))
    fb = batch.cached(("feature", feature, "b"), lambda: make(batch.image("b")))
    ff = batch.cached(("feature", feature, "f"), lambda: make(batch.f))
    map_a, map_b = fmi_maps([fa, fb], ff)
    return ((map_a + map_b) / 2.0).mean(dim=1)


def FMI_pixel(batch: Batch) -> torch.Tensor:
    return _fmi_metric(batch, "pixel")


def FMI_dct(batch: Batch) -> torch.Tensor:
    return _fmi_metric(batch, "dct")


def FMI_w(batch: Batch) -> torch.Tensor:
    return _fmi_metric(batch, "wavelet")
