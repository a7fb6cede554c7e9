"""A batch of gray images plus a cache, so metrics sharing an intermediate compute it once.

EN and MI both need the histogram of F, SSIM and Qc both need local statistics; the
suite is run on every test pair nightly, so recomputing them would waste most of the time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fusion.metrics.convention import MetricInputError


class Batch:
    """Gray float64 tensors N x H x W on 0..255 (a, b, gt may be None)."""

    def __init__(self, a: torch.Tensor | None, b: torch.Tensor | None, f: torch.Tensor, gt: torch.Tensor | None = None):
        self.a, self.b, self.f, self.gt = a, b, f, gt
        self._cache: dict = {}

    def cached(self, key, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def image(self, role: str) -> torch.Tensor:
        img = {"a": self.a, "b": self.b, "f": self.f, "gt": self.gt}[role]
        if img is None:
            # compute() rejects metrics whose inputs are missing before any runs: a bug if reached.
            raise MetricInputError(f"a metric read image {role!r}, which this batch does not have")
        return img


def safe_div(num: torch.Tensor, den: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """num / den with `value` where den == 0: the documented result of a 0/0 normalisation."""
    zero = den == 0
    return torch.where(zero, torch.full_like(num, value), num / torch.where(zero, torch.ones_like(den), den))
