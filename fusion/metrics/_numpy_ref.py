"""Straightforward numpy/scipy versions of every metric, one image at a time.

Written as a direct reading of the definitions (2-D kernels with scipy.signal like MATLAB's
filter2/conv2, numpy histograms, the published thresholds in the published order), with
no attention to speed. Used only by tests (the torch suite must agree with it) and by the
benchmark (the torch suite must be much faster). Inputs are gray float64 HxW on 0..255
(see fusion.metrics.to_gray); degenerate cases take the same documented values.
"""

from __future__ import annotations

import math

import numpy as np
import pywt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import dctn
from scipy.signal import convolve2d, correlate2d


def _div(num: float, den: float, value: float = 0.0) -> float:
    return value if den == 0 else num / den


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', size, sigma)."""
    r = (size - 1) / 2.0
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def filter2_valid(win: np.ndarray, x: np.ndarray) -> np.ndarray:
    return correlate2d(x, win, mode="valid")


# ---------------------------------------------------------------- information
def _entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(0.0 - (p * np.log2(p)).sum())


def EN(f):
    counts, _ = np.histogram(f, bins=256, range=(0, 256))
    return _entropy_of_counts(counts)


def mutual_information(x, f):
    joint, _, _ = np.histogram2d(x.ravel(), f.ravel(), bins=256, range=[[0, 256], [0, 256]])
    return EN(x) + EN(f) - _entropy_of_counts(joint.ravel())


def MI(a, b, f):
    return mutual_information(a, f) + mutual_information(b, f)


# ---------------------------------------------------------------- statistical
def SD(f):
    return float(np.sqrt(np.mean((f - f.mean()) ** 2)))


def corr2(x, y):
    xc, yc = x - x.mean(), y - y.mean()
    return _div(float((xc * yc).sum()), float(np.sqrt((xc * xc).sum() * (yc * yc).sum())))


def CC(a, b, f):
    return (corr2(a, f) + corr2(b, f)) / 2.0


def SCD(a, b, f):
    return corr2(f - b, a) + corr2(f - a, b)


def _psnr(mse):
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def PSNR(a, b, f):
    return _psnr((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


# ---------------------------------------------------------------- gradient
def SF(f):
    rf = np.mean((f[:, 1:] - f[:, :-1]) ** 2)
    cf = np.mean((f[1:, :] - f[:-1, :]) ** 2)
    return float(np.sqrt(rf + cf))


def AG(f):
    gy, gx = np.gradient(f)  # numpy's gradient: central inside, one-sided at the edges
    h, w = f.shape
    return float(np.sqrt((gx**2 + gy**2) / 2.0).sum() / ((h - 1) * (w - 1)))


def _sobel(x):
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    sx = convolve2d(x, h3, mode="same")
    sy = convolve2d(x, h1, mode="same")
    g = np.sqrt(sx**2 + sy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))
    return g, a


def _qxf(gx, ax, gf, af):
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(gx > gf, gf / gx, np.where(gx == gf, 1.0, gx / gf))
    a = 1 - np.abs(ax - af) / (np.pi / 2)
    qg = 0.9994 / (1 + np.exp(-15 * (g - 0.5)))
    qa = 0.9879 / (1 + np.exp(-22 * (a - 0.8)))
    return qg * qa


def Qabf(a, b, f):
    ga, aa = _sobel(a)
    gb, ab = _sobel(b)
    gf, af = _sobel(f)
    num = np.sum(_qxf(ga, aa, gf, af) * ga + _qxf(gb, ab, gf, af) * gb)
    return _div(float(num), float(np.sum(ga + gb)))


# ---------------------------------------------------------------- structural
def _local_stats(x, y, win):
    size = win.shape[0]
    mx, my = filter2_valid(win, x), filter2_valid(win, y)
    sxx = filter2_valid(win, x * x) - mx * mx
    syy = filter2_valid(win, y * y) - my * my
    sxy = filter2_valid(win, x * y) - mx * my
    # Flat windows have exactly zero (co)variance; drop the rounding noise (see structural.py).
    fx = np.ptp(sliding_window_view(x, (size, size)), axis=(2, 3)) == 0
    fy = np.ptp(sliding_window_view(y, (size, size)), axis=(2, 3)) == 0
    sxx[fx] = 0
    syy[fy] = 0
    sxy[fx | fy] = 0
    return mx, my, sxx, syy, sxy


def _ssim_map(x, y, size=11, sigma=1.5, c1=(0.01 * 255) ** 2, c2=(0.03 * 255) ** 2):
    mx, my, sxx, syy, sxy = _local_stats(x, y, fspecial_gaussian(size, sigma))
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)), sxy


def ssim(x, y):
    return float(_ssim_map(x, y)[0].mean())


def SSIM(a, b, f):
    return (ssim(a, f) + ssim(b, f)) / 2.0


def Qc(a, b, f):
    ma, saf = _ssim_map(a, f, 7, 1.5, 2e-16, 2e-16)
    mb, sbf = _ssim_map(b, f, 7, 1.5, 2e-16, 2e-16)
    den = saf + sbf
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(den == 0, 0.5, saf / den)
    sim = w * ma + (1 - w) * mb
    sim[w < 0] = 0
    sim[w > 1] = 1
    return float(sim.mean())


def Qm(a, b, f):
    qs = []
    for _ in range(2):
        ca, da = pywt.dwt2(a, "haar", mode="symmetric")
        cb, db = pywt.dwt2(b, "haar", mode="symmetric")
        cf, df = pywt.dwt2(f, "haar", mode="symmetric")
        wa = sum(c**2 for c in da)
        wb = sum(c**2 for c in db)
        epa = sum(np.exp(-np.abs(c - d)) for c, d in zip(da, df))
        epb = sum(np.exp(-np.abs(c - d)) for c, d in zip(db, df))
        qs.append(_div(float(np.sum(epa * wa + epb * wb)), float(np.sum(wa + wb))))
        a, b, f = ca, cb, cf
    return qs[0] ** (2 / 3) * qs[1] ** (1 / 3)


# ---------------------------------------------------------------- visual
def vifp_mscale(ref, dist):
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = fspecial_gaussian(n, n / 5.0)
        if scale > 1:
            ref = filter2_valid(win, ref)[::2, ::2]
            dist = filter2_valid(win, dist)[::2, ::2]
        if min(ref.shape) < n:
            continue  # an empty 'valid' region adds nothing to either sum
        mu1, mu2 = filter2_valid(win, ref), filter2_valid(win, dist)
        s1 = filter2_valid(win, ref * ref) - mu1 * mu1
        s2 = filter2_valid(win, dist * dist) - mu2 * mu2
        s12 = filter2_valid(win, ref * dist) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g[s1 < 1e-10] = 0
        sv[s1 < 1e-10] = s2[s1 < 1e-10]
        s1[s1 < 1e-10] = 0
        g[s2 < 1e-10] = 0
        sv[s2 < 1e-10] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g**2 * s1 / (sv + 2.0)))
        den += np.sum(np.log10(1 + s1 / 2.0))
    return _div(float(num), float(den))


def VIF(a, b, f):
    return vifp_mscale(a, f) + vifp_mscale(b, f)


# ---------------------------------------------------------------- FMI
def _fmi_windows(x):
    # (windows, 9), each window listed column by column like MATLAB's sub(:)
    v = sliding_window_view(x, (3, 3))
    return v.transpose(0, 1, 3, 2).reshape(-1, 9)


def _fmi_pdf(sub):
    lo, hi = sub.min(axis=1, keepdims=True), sub.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(hi == lo, 1.0, (sub - lo) / (hi - lo))
    return norm / norm.sum(axis=1, keepdims=True), (hi == lo)[:, 0]


def _neg_plogp(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p != 0, -p * np.log2(np.abs(p)), 0.0)


def _fmi_rows(xs, fs):
    """fmi.m's per-window computation, vectorised over windows (rows)."""
    (p, p_flat), (q, q_flat) = _fmi_pdf(xs), _fmi_pdf(fs)
    same = np.all(xs == fs, axis=1) | (p_flat & q_flat)  # two flat windows: FMI = 1
    pc, qc = np.cumsum(p, axis=1), np.cumsum(q, axis=1)
    pt = np.where(p_flat[:, None], 0.0, p - p.mean(axis=1, keepdims=True))  # exactly centred
    qt = np.where(q_flat[:, None], 0.0, q - q.mean(axis=1, keepdims=True))
    num = (pt * qt).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(num == 0, 0.0, num / np.sqrt((pt**2).sum(axis=1) * (qt**2).sum(axis=1)))
    i = np.arange(1, 10, dtype=float)
    p_sd = np.sqrt((i**2 * p).sum(axis=1) - (i * p).sum(axis=1) ** 2)
    q_sd = np.sqrt((i**2 * q).sum(axis=1) - (i * q).sum(axis=1) ** 2)

    Q, P = qc[:, :, None], pc[:, None, :]
    upper = (c >= 0)[:, None, None]
    bound = np.where(upper, 0.5 * (Q + P - np.abs(Q - P)), 0.5 * (Q + P - 1 + np.abs(Q + P - 1)))
    cov = (bound - Q * P).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr_bound = np.where(q_sd * p_sd == 0, 0.0, cov / (q_sd * p_sd))
        weight = np.where(corr_bound == 0, 0.0, c / corr_bound)
    weight[(p_sd == 0) | (q_sd == 0) | ((c >= 0) & (c == 0))] = 0.0

    padded = np.zeros((bound.shape[0], 10, 10))
    padded[:, 1:, 1:] = bound
    jb = padded[:, 1:, 1:] - padded[:, :-1, 1:] - padded[:, 1:, :-1] + padded[:, :-1, :-1]
    w = weight[:, None, None]
    jpdf = w * jb + (1 - w) * q[:, :, None] * p[:, None, :]
    h_joint = _neg_plogp(jpdf).sum(axis=(1, 2))
    h_p, h_q = _neg_plogp(p).sum(axis=1), _neg_plogp(q).sum(axis=1)
    mi = h_p + h_q - h_joint
    with np.errstate(divide="ignore", invalid="ignore"):
        fmi = np.where((mi == 0) | (h_p + h_q == 0), 0.0, 2 * mi / (h_p + h_q))
    return np.where(same, 1.0, fmi)


def _fmi_map(x, f, chunk=1 << 15):
    xs, fs = _fmi_windows(x), _fmi_windows(f)
    return np.concatenate([_fmi_rows(xs[i : i + chunk], fs[i : i + chunk]) for i in range(0, len(xs), chunk)])


def _snap(c):
    # coefficients at rounding-noise level are exactly 0 (see fmi.snap_noise)
    return np.where(np.abs(c) <= 1e-10 * np.abs(c).max(), 0.0, c)


def _dmey_feature(x):
    ca, (ch, cv, cd) = pywt.dwt2(x, "dmey", mode="symmetric")
    m = _snap(np.block([[ca, ch], [cv, cd]]))
    return np.ones_like(m) if m.max() == m.min() else (m - m.min()) / (m.max() - m.min())


_FMI_FEATURES = {"pixel": lambda x: x, "dct": lambda x: _snap(dctn(x, norm="ortho")), "wavelet": _dmey_feature}


def _fmi(a, b, f, feature):
    fa, fb, ff = (_FMI_FEATURES[feature](x) for x in (a, b, f))
    return float(((_fmi_map(fa, ff) + _fmi_map(fb, ff)) / 2).mean())


def FMI_pixel(a, b, f):
    return _fmi(a, b, f, "pixel")


def FMI_dct(a, b, f):
    return _fmi(a, b, f, "dct")


def FMI_w(a, b, f):
    return _fmi(a, b, f, "wavelet")


# ---------------------------------------------------------------- reference
def SSIM_gt(gt, f):
    return ssim(gt, f)


def PSNR_gt(gt, f):
    return _psnr(float(np.mean((gt - f) ** 2)))


def L1_gt(gt, f):
    return float(np.mean(np.abs(gt - f)))


NO_REFERENCE = {"EN": EN, "SD": SD, "SF": SF, "AG": AG}
WITH_SOURCES = {
    "MI": MI,
    "CC": CC,
    "SCD": SCD,
    "VIF": VIF,
    "Qabf": Qabf,
    "SSIM": SSIM,
    "FMI_pixel": FMI_pixel,
    "FMI_dct": FMI_dct,
    "FMI_w": FMI_w,
    "Qc": Qc,
    "Qm": Qm,
    "PSNR": PSNR,
}
WITH_GT = {"SSIM_gt": SSIM_gt, "PSNR_gt": PSNR_gt, "L1_gt": L1_gt}


def compute(a, b, f, gt=None, names=None) -> dict[str, float]:
    """Gray float64 images in, name -> value out (same names as fusion.metrics.METRICS)."""
    every = {**NO_REFERENCE, **WITH_SOURCES, **(WITH_GT if gt is not None else {})}
    out = {}
    for name in names or every:
        if name in NO_REFERENCE:
            out[name] = NO_REFERENCE[name](f)
        elif name in WITH_SOURCES:
            out[name] = WITH_SOURCES[name](a, b, f)
        else:
            out[name] = WITH_GT[name](gt, f)
    return out
