"""Information-theoretic metrics: EN, MI (true mutual information, in bits)."""

from __future__ import annotations

import torch

from fusion.metrics._context import Batch
from fusion.metrics._filters import plog2p

LEVELS = 256


def histogram(x: torch.Tensor) -> torch.Tensor:
    """N x 256 probabilities of the integer levels of each image (one bincount for the batch)."""
    n = x.shape[0]
    idx = x.reshape(n, -1).long() + LEVELS * torch.arange(n, device=x.device).unsqueeze(1)
    counts = torch.bincount(idx.reshape(-1), minlength=LEVELS * n).view(n, LEVELS).to(torch.float64)
    return counts / counts.sum(dim=1, keepdim=True)


def joint_histogram(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """N x 256 x 256 joint probabilities of the integer levels of x and y."""
    n = x.shape[0]
    idx = x.reshape(n, -1).long() * LEVELS + y.reshape(n, -1).long()
    idx = idx + (LEVELS * LEVELS) * torch.arange(n, device=x.device).unsqueeze(1)
    counts = torch.bincount(idx.reshape(-1), minlength=LEVELS * LEVELS * n).to(torch.float64)
    counts = counts.view(n, LEVELS * LEVELS)
    return counts / counts.sum(dim=1, keepdim=True)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return 0.0 - plog2p(p).sum(dim=-1)  # 0.0 - x, not -x: a constant image has +0.0 bits


def entropy_of(batch: Batch, role: str) -> torch.Tensor:
    return batch.cached(("entropy", role), lambda: _entropy(histogram(batch.image(role))))


def mutual_information(batch: Batch, role: str) -> torch.Tensor:
    """MI(X, F) = H(X) + H(F) - H(X, F) in bits, 256-bin histograms."""

    def make():
        joint = _entropy(joint_histogram(batch.image(role), batch.f))
        return entropy_of(batch, role) + entropy_of(batch, "f") - joint

    return batch.cached(("mi", role), make)


def EN(batch: Batch) -> torch.Tensor:
    return entropy_of(batch, "f")


def MI(batch: Batch) -> torch.Tensor:
    return mutual_information(batch, "a") + mutual_information(batch, "b")
