"""Classical fusion baselines: what a learned model has to beat.

Every function takes a list of 2+ source images (HxW or HxWx3 RGB, uint8 on 0..255) and
returns a uint8 image of the same shape. Gray and colour sources of the same size may be
mixed (an infrared frame with a visible one): gray sources are then repeated to three
channels and the result is colour. Decisions (which source wins where) are taken on the
MATLAB rgb2gray luminance, the same one the metrics use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pywt

from fusion.metrics.convention import RGB2GRAY


def _prepare(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate and return float64 H x W x C arrays (C = 1 or 3, the same for all)."""
    if isinstance(images, np.ndarray) or len(images) < 2:
        raise ValueError("a baseline needs a list of at least 2 source images")
    arrays = [np.asarray(im) for im in images]
    for i, im in enumerate(arrays):
        if not (np.issubdtype(im.dtype, np.integer) or np.issubdtype(im.dtype, np.floating)):
            raise ValueError(f"source {i} has unsupported dtype {im.dtype}; expected uint8")
        if im.ndim == 3 and im.shape[2] == 1:
            arrays[i] = im = im[:, :, 0]
        if not (im.ndim == 2 or (im.ndim == 3 and im.shape[2] == 3)):
            raise ValueError(f"source {i} must be HxW or HxWx3 (RGB), got shape {im.shape}")
        if not np.isfinite(im).all():
            raise ValueError(f"source {i} contains NaN or inf values")
    sizes = {im.shape[:2] for im in arrays}
    if len(sizes) != 1:
        shapes = [im.shape for im in arrays]
        raise ValueError(f"sources must have the same height and width, got shapes {shapes}")
    colour = any(im.ndim == 3 for im in arrays)
    out = []
    for im in arrays:
        x = im.astype(np.float64)
        if x.ndim == 2:
            x = np.repeat(x[:, :, None], 3, axis=2) if colour else x[:, :, None]
        out.append(x)
    return out


def _finish(fused: np.ndarray) -> np.ndarray:
    """H x W x C float -> uint8 (HxW when C == 1), rounded half up and clipped."""
    out = np.clip(np.floor(fused + 0.5), 0, 255).astype(np.uint8)
    return out[:, :, 0] if out.shape[2] == 1 else out


def _luminance(x: np.ndarray) -> np.ndarray:
    if x.shape[2] == 1:
        return x[:, :, 0]
    return RGB2GRAY[0] * x[:, :, 0] + RGB2GRAY[1] * x[:, :, 1] + RGB2GRAY[2] * x[:, :, 2]


def _pick(stack: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """stack K x H x W x C, scores K x H x W -> per pixel the source with the largest score."""
    choice = np.argmax(scores, axis=0)
    return np.take_along_axis(stack, choice[None, :, :, None], axis=0)[0]


def average(images: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel-wise mean of the sources."""
    return _finish(np.mean(np.stack(_prepare(images)), axis=0))


def gradient_energy(lum: np.ndarray, window: int = 7) -> np.ndarray:
    """Sobel magnitude averaged over a window: a single pixel's gradient is too noisy to decide on."""
    gx = cv2.Sobel(lum, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(lum, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return cv2.boxFilter(np.sqrt(gx * gx + gy * gy), -1, (window, window), borderType=cv2.BORDER_REFLECT)


def choose_max_gradient(images: Sequence[np.ndarray], window: int = 7) -> np.ndarray:
    """Per pixel, copy the source whose luminance has the larger local gradient energy."""
    srcs = _prepare(images)
    scores = np.stack([gradient_energy(_luminance(x), window) for x in srcs])
    return _finish(_pick(np.stack(srcs), scores))


def _pyramid_levels(h: int, w: int, wanted: int) -> int:
    # Stop before the coarsest level gets smaller than ~8 pixels.
    return max(0, min(wanted, int(np.floor(np.log2(max(min(h, w), 1) / 8.0)))))


def _laplacian(x: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr, cur = [], x
    for _ in range(levels):
        down = cv2.pyrDown(cur)
        up = cv2.pyrUp(down, dstsize=(cur.shape[1], cur.shape[0]))
        pyr.append(cur - up)
        cur = down
    pyr.append(cur)
    return pyr


def _max_abs(bands: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(bands)
    choice = np.argmax(np.abs(stack), axis=0)
    return np.take_along_axis(stack, choice[None], axis=0)[0]


def laplacian_pyramid(images: Sequence[np.ndarray], levels: int = 4) -> np.ndarray:
    """Laplacian pyramid: max-abs of each detail level, mean of the base, per channel."""
    srcs = _prepare(images)
    h, w, c = srcs[0].shape
    n = _pyramid_levels(h, w, levels)
    out = np.empty_like(srcs[0])
    for ch in range(c):
        pyrs = [_laplacian(np.ascontiguousarray(x[:, :, ch]), n) for x in srcs]
        fused = np.mean([p[-1] for p in pyrs], axis=0)
        for lvl in range(n - 1, -1, -1):
            detail = _max_abs([p[lvl] for p in pyrs])
            fused = cv2.pyrUp(fused, dstsize=(detail.shape[1], detail.shape[0])) + detail
        out[:, :, ch] = fused
    return _finish(out)


def dwt(images: Sequence[np.ndarray], wavelet: str = "db2", levels: int = 3) -> np.ndarray:
    """Discrete wavelet transform: max-abs detail coefficients, mean approximation, per channel."""
    srcs = _prepare(images)
    h, w, c = srcs[0].shape
    n = max(1, min(levels, pywt.dwt_max_level(min(h, w), pywt.Wavelet(wavelet).dec_len)))
    out = np.empty_like(srcs[0])
    for ch in range(c):
        decs = [pywt.wavedec2(x[:, :, ch], wavelet, mode="symmetric", level=n) for x in srcs]
        fused = [np.mean([d[0] for d in decs], axis=0)]
        for lvl in range(1, n + 1):
            fused.append(tuple(_max_abs([d[lvl][k] for d in decs]) for k in range(3)))
        out[:, :, ch] = pywt.waverec2(fused, wavelet, mode="symmetric")[:h, :w]
    return _finish(out)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with box means (cv2.ximgproc is absent from the headless build)."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    var_i = box(guide * guide) - mean_i * mean_i
    cov_ip = box(guide * src) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def focus_measure(lum: np.ndarray, window: int = 7) -> np.ndarray:
    """Local energy of the Laplacian: in-focus regions have more high-frequency content."""
    lap = cv2.Laplacian(lum, cv2.CV_64F, ksize=3, borderType=cv2.BORDER_REFLECT)
    return cv2.boxFilter(lap * lap, -1, (window, window), borderType=cv2.BORDER_REFLECT)


def guided_filter_decision(images: Sequence[np.ndarray], radius: int = 8, eps: float = 0.01) -> np.ndarray:
    """Multi-focus: binary focus decision maps refined by a guided filter, then a weighted sum.

    The guided filter snaps the blocky decision boundary to the image edges, which removes
    most of the seams a raw argmax leaves. eps is on the 0..1 intensity scale.
    """
    srcs = _prepare(images)
    lums = [_luminance(x) / 255.0 for x in srcs]
    focus = np.stack([focus_measure(lum) for lum in lums])
    choice = np.argmax(focus, axis=0)
    weights = np.stack(
        [
            np.clip(guided_filter(lum, (choice == k).astype(np.float64), radius, eps), 0.0, 1.0)
            for k, lum in enumerate(lums)
        ]
    )
    total = weights.sum(axis=0)
    # Where every refined weight vanished, fall back to equal weights rather than divide by 0.
    weights = np.where(total > 1e-12, weights / np.where(total > 1e-12, total, 1.0), 1.0 / len(srcs))
    return _finish(np.sum(weights[..., None] * np.stack(srcs), axis=0))


BASELINES: dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]] = {
    "average": average,
    "choose_max_gradient": choose_max_gradient,
    "laplacian_pyramid": laplacian_pyramid,
    "dwt": dwt,
    "guided_filter_decision": guided_filter_decision,
}


def fuse_baseline(name: str, images: Sequence[np.ndarray]) -> np.ndarray:
    """Run the baseline called `name`; ValueError listing the valid names for an unknown one."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid names: {sorted(BASELINES)}")
    return BASELINES[name](images)
