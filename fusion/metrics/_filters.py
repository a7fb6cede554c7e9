"""Batched 2-D filtering helpers (float64, any device) shared by the metric families."""

from __future__ import annotations

import torch


def gaussian_1d(size: int, sigma: float, device=None) -> torch.Tensor:
    """1-D factor of MATLAB fspecial('gaussian', size, sigma).

    fspecial's 2-D kernel is exp(-(x^2+y^2)/2s^2) normalised to sum 1, which is the outer
    product of this normalised 1-D kernel; separable filtering costs 2k instead of k^2.
    """
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def sep_filter_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """MATLAB filter2(outer(k, k), x, 'valid') for N x H x W (k symmetric, so no flip matters).

    Returns an N x (H-K+1) x (W-K+1) tensor, empty when the image is smaller than K.
    unfold + matmul beats float64 conv2d on CPU (no MKL-DNN path for float64) by ~5x;
    matmul copies the unfolded view, so images go one at a time to keep that copy small.
    """
    n, h, w = x.shape
    size = k.numel()
    if h < size or w < size:
        return x.new_zeros((n, max(h - size + 1, 0), max(w - size + 1, 0)))
    k = k.to(dtype=x.dtype, device=x.device)
    out = x.new_empty((n, h - size + 1, w - size + 1))
    for i in range(n):
        # Keep a leading batch dim of 1: matmul then folds the unfolded view into one
        # matrix-vector product instead of one copy per row.
        y = x[i : i + 1].unfold(2, size, 1) @ k
        out[i : i + 1] = y.unfold(1, size, 1) @ k
    return out


def gaussian_valid(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    return sep_filter_valid(x, gaussian_1d(size, sigma, x.device))


def plog2p(p: torch.Tensor) -> torch.Tensor:
    """p * log2(p) with 0 log 0 = 0 (the entropy convention)."""
    return torch.where(p > 0, p * torch.log2(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))


