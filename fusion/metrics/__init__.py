"""Image-fusion metrics under one written convention (see docs/metrics.md).

Every image is converted to gray with MATLAB rgb2gray weights, rounded to uint8 levels and
computed in float64 on 0..255. Implementations are batched torch (N x H x W) and run on
the `device` argument (CPU or GPU); `fusion.metrics._numpy_ref` holds plain numpy versions of the
same definitions for tests and benchmarks.

Degenerate inputs never give a silent NaN (each value is documented in docs/metrics.md):
a correlation with a constant image is 0 (CC, SCD); EN of a constant image is 0; PSNR of
identical images is +inf; VIF with a source that has no variance at any scale is 0 for
that source; Qabf with no edge in either source is 0; a Qm level without detail in either
source gives Q = 0; Qc takes 0.5 as the weight where neither source covaries with F; two
flat FMI windows count as 1 (identical uniform feature PDFs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from fusion.metrics import fmi, gradient, information, reference, statistical, structural, visual
from fusion.metrics._context import Batch
from fusion.metrics.convention import MetricInputError, check_same_shape, to_gray, to_gray_batch

__all__ = [
    "ALL",
    "METRICS",
    "MetricInfo",
    "MetricInputError",
    "MetricSelection",
    "compute",
    "compute_batch",
    "select_metrics",
    "to_gray",
]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    needs_gt: bool
    needs_sources: bool
    description: str


# name -> (higher_is_better, needs_gt, needs_sources, smallest H and W, function, description)
_SPECS: dict[str, tuple[bool, bool, bool, int, Callable[[Batch], torch.Tensor], str]] = {
    "EN": (True, False, False, 1, information.EN, "entropy of F's 256-bin histogram, bits"),
    "SD": (True, False, False, 1, statistical.SD, "population standard deviation of F"),
    "SF": (True, False, False, 2, gradient.SF, "spatial frequency sqrt(RF^2 + CF^2) of F"),
    "AG": (True, False, False, 2, gradient.AG, "average gradient of F (MATLAB gradient)"),
    "MI": (True, False, True, 1, information.MI, "MI(A,F) + MI(B,F), bits (true MI, not 2 x EN)"),
    "CC": (True, False, True, 1, statistical.CC, "(corr(A,F) + corr(B,F)) / 2"),
    "SCD": (True, False, True, 1, statistical.SCD, "corr(F-B, A) + corr(F-A, B)"),
    "VIF": (True, False, True, 17, visual.VIF, "VIF(A,F) + VIF(B,F), Sheikh-Bovik pixel domain, 4 scales"),
    "Qabf": (True, False, True, 1, gradient.Qabf, "Xydeas-Petrovic edge preservation"),
    "SSIM": (True, False, True, 11, structural.SSIM, "(SSIM(A,F) + SSIM(B,F)) / 2, 11x11 Gaussian"),
    "FMI_pixel": (True, False, True, 3, fmi.FMI_pixel, "fast FMI on pixels, 3x3 windows"),
    "FMI_dct": (True, False, True, 3, fmi.FMI_dct, "fast FMI on DCT coefficients, 3x3 windows"),
    "FMI_w": (True, False, True, 3, fmi.FMI_w, "fast FMI on discrete-Meyer wavelet coefficients"),
    "Qc": (True, False, True, 11, structural.Qc, "Cvejic's covariance-weighted local SSIM"),
    "Qm": (True, False, True, 1, structural.Qm, "Wang-Liu 2-level Haar edge preservation, in [0, 3]"),
    "PSNR": (True, False, True, 1, statistical.PSNR, "10 log10(255^2 / mean of MSE(A,F), MSE(B,F))"),
    "SSIM_gt": (True, True, False, 11, reference.SSIM_gt, "SSIM(gt, F)"),
    "PSNR_gt": (True, True, False, 1, reference.PSNR_gt, "10 log10(255^2 / MSE(gt, F))"),
    "L1_gt": (False, True, False, 1, reference.L1_gt, "mean |gt - F| on 0..255"),
}

METRICS: dict[str, MetricInfo] = {
    name: MetricInfo(name, hib, gt, src, desc) for name, (hib, gt, src, _, _, desc) in _SPECS.items()
}


ALL = "all"  # alone in a list of metric names (params.yaml, --metric): every metric that applies


@dataclass(frozen=True)
class MetricSelection:
    """A list of metric names read against METRICS; each caller words its own error."""

    names: list[str]  # what to compute: every metric that applies for None or [ALL], else the request
    unknown: list[str]  # requested names that are no metric (ALL beside other names is one)
    unusable: dict[str, str]  # requested name -> what it lacks here: "gt" or "sources"


def select_metrics(names: Iterable[str] | None, has_gt: bool = True, has_sources: bool = True) -> MetricSelection:
    """The one reading of metric names: the configuration, evaluation, the pipeline and
    compute() all resolve theirs here."""
    if names is None or list(names) == [ALL]:
        applicable = [
            n for n, m in METRICS.items() if (has_gt or not m.needs_gt) and (has_sources or not m.needs_sources)
        ]
        return MetricSelection(applicable, [], {})
    names = list(names)
    unusable: dict[str, str] = {}
    for n in names:
        if n in METRICS and METRICS[n].needs_gt and not has_gt:
            unusable[n] = "gt"
        elif n in METRICS and METRICS[n].needs_sources and not has_sources:
            unusable[n] = "sources"
    return MetricSelection(names, [n for n in names if n not in METRICS], unusable)


_CHUNK = 4


def _resolve_names(names: Iterable[str] | None, have_sources: bool, have_gt: bool) -> list[str]:
    if isinstance(names, str):
        names = [names]
    if names is not None:
        names = list(dict.fromkeys(names))
    selected = select_metrics(names, have_gt, have_sources)
    # compute() takes metric names only: ALL is the configuration's word, names=None here
    unknown = selected.unknown or [n for n in names or [] if n == ALL]
    if unknown:
        raise MetricInputError(f"unknown metric name(s) {unknown}; valid names: {sorted(METRICS)}")
    for n, lacks in selected.unusable.items():
        if lacks == "gt":
            raise MetricInputError(f"metric {n!r} needs a ground-truth image (gt=...) and none was given")
        raise MetricInputError(f"metric {n!r} needs both source images a and b")
    return selected.names


def _have_sources(a, b) -> bool:
    if (a is None) != (b is None):
        raise MetricInputError("give both source images a and b, or neither (F-only metrics)")
    return a is not None


def _check_sizes(names: list[str], f: torch.Tensor) -> None:
    h, w = f.shape[-2:]
    for n in names:
        smallest = _SPECS[n][3]
        if h < smallest or w < smallest:
            raise MetricInputError(f"metric {n!r} needs images of at least {smallest}x{smallest}, got {h}x{w}")


def _run(batch: Batch, names: list[str]) -> dict[str, torch.Tensor]:
    _check_sizes(names, batch.f)
    return {n: _SPECS[n][4](batch) for n in names}


def compute(a, b, f, gt=None, names=None, device="cpu") -> dict[str, float]:
    """Metrics of one fused image F from sources A, B (and optional ground truth).

    a, b, f, gt: HxW or HxWx3 RGB arrays, uint8 or float on 0..255 (a, b may be None when
    only F-only metrics EN, SD, SF, AG and *_gt are requested). names=None computes every
    metric that applies. Raises MetricInputError for unusable inputs or requests.
    """
    if f is None:
        raise MetricInputError("the fused image f is required")
    have_sources = _have_sources(a, b)
    names = _resolve_names(names, have_sources, gt is not None)
    fg = torch.from_numpy(to_gray(f, "f")).to(device).unsqueeze(0)
    grays = {}
    for role, img in (("a", a), ("b", b), ("gt", gt)):
        if img is not None:
            grays[role] = torch.from_numpy(to_gray(img, role)).to(device).unsqueeze(0)
            check_same_shape(fg, grays[role], "f", role)
    batch = Batch(grays.get("a"), grays.get("b"), fg, grays.get("gt"))
    return {n: float(v[0]) for n, v in _run(batch, names).items()}


def compute_batch(a, b, f, gt=None, names=None, device="cpu") -> dict[str, np.ndarray]:
    """Per-image metrics of a stack of N same-size images: name -> array of N values.

    Stacks are numpy arrays or torch tensors, N x H x W, N x 1 x H x W, N x 3 x H x W or
    N x H x W x 3 (RGB), uint8 or float on 0..255.
    """
    if f is None:
        raise MetricInputError("the fused batch f is required")
    have_sources = _have_sources(a, b)
    names = _resolve_names(names, have_sources, gt is not None)
    fg = to_gray_batch(f, "f", device)
    if fg.shape[0] == 0:
        raise MetricInputError("the fused batch f is empty (N = 0)")
    grays = {}
    for role, img in (("a", a), ("b", b), ("gt", gt)):
        if img is not None:
            grays[role] = to_gray_batch(img, role, device)
            check_same_shape(fg, grays[role], "f", role)
    _check_sizes(names, fg)
    # Bounded chunks: intermediates are ~20 full-size float64 maps per image, and small
    # chunks stay in cache on CPU (and in memory on a GPU) for any N.
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for start in range(0, fg.shape[0], _CHUNK):
        part = {r: g[start : start + _CHUNK] for r, g in grays.items()}
        batch = Batch(part.get("a"), part.get("b"), fg[start : start + _CHUNK], part.get("gt"))
        for n, v in _run(batch, names).items():
            parts[n].append(v.detach())
    return {n: torch.cat(v).cpu().numpy().astype(np.float64) for n, v in parts.items()}
