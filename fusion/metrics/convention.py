"""The input convention every metric shares: gray conversion and validation.

Images become gray with MATLAB ``rgb2gray`` weights, rounded to uint8 levels, then
float64 on 0..255. Rounding matters: the published MATLAB figures are computed on
uint8 gray images, so histogram metrics (EN, MI, FMI) only agree when the levels are
integers.
"""

from __future__ import annotations

import numpy as np
import torch

# MATLAB rgb2gray coefficients (the inverse of the NTSC YIQ matrix row), not the
# rounded 0.299/0.587/0.114: the difference flips the rounding of some pixels.
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


class MetricInputError(ValueError):
    """An image or request handed to the metrics is unusable; the message says why."""


def _check_finite(arr, role: str) -> None:
    if isinstance(arr, torch.Tensor):
        ok = bool(torch.isfinite(arr).all()) if arr.is_floating_point() else True
    else:
        ok = bool(np.isfinite(arr).all()) if np.issubdtype(arr.dtype, np.floating) else True
    if not ok:
        raise MetricInputError(f"image {role!r} contains NaN or inf values")


def to_gray(img: np.ndarray, role: str = "image") -> np.ndarray:
    """HxW or HxWx3 (RGB) uint8/float on 0..255 -> HxW float64 on 0..255.

    Colour images use the MATLAB rgb2gray weights; every image is then rounded to
    integer levels and clipped to 0..255, as writing a uint8 file would do.
    """
    arr = np.asarray(img)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MetricInputError(f"image {role!r} has unsupported dtype {arr.dtype}")
    _check_finite(arr, role)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        x = arr.astype(np.float64)
        arr = RGB2GRAY[0] * x[:, :, 0] + RGB2GRAY[1] * x[:, :, 1] + RGB2GRAY[2] * x[:, :, 2]
    elif arr.ndim != 2:
        raise MetricInputError(f"image {role!r} must be HxW or HxWx3 (RGB), got shape {arr.shape}")
    # np.round is round-half-even; MATLAB rounds half away from zero. On non-negative
    # values floor(x + 0.5) is the MATLAB rule.
    return np.clip(np.floor(arr.astype(np.float64) + 0.5), 0.0, 255.0)


def to_gray_batch(x, role: str, device) -> torch.Tensor:
    """N x H x W, N x 1 x H x W, N x 3 x H x W or N x H x W x 3 (RGB) -> N x H x W float64."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.dtype == torch.bool or t.is_complex():
        raise MetricInputError(f"batch {role!r} has unsupported dtype {t.dtype}")
    _check_finite(t, role)
    t = t.to(device=device, dtype=torch.float64)
    if t.ndim == 4 and t.shape[-1] == 3:
        t = t.movedim(-1, 1)
    if t.ndim == 4 and t.shape[1] == 3:
        w = torch.tensor(RGB2GRAY, dtype=torch.float64, device=t.device)
        t = w[0] * t[:, 0] + w[1] * t[:, 1] + w[2] * t[:, 2]
    elif t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    elif t.ndim != 3:
        raise MetricInputError(f"batch {role!r} must be NxHxW, Nx1xHxW, Nx3xHxW or NxHxWx3, got shape {tuple(t.shape)}")
    return torch.clamp(torch.floor(t + 0.5), 0.0, 255.0)


def check_same_shape(ref: torch.Tensor, other: torch.Tensor, ref_role: str, role: str) -> None:
    if ref.shape != other.shape:
        raise MetricInputError(
            f"image {role!r} has gray shape {tuple(other.shape)} but {ref_role!r} has "
            f"{tuple(ref.shape)}; sources, fused image and ground truth must be the same size"
        )
