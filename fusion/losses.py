"""Training losses. Pure torch; images in [0, 1]."""

from __future__ import annotations

import kornia
import torch
import torch.nn as nn


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM with an 11x11 Gaussian window (sigma 1.5), data range 1 (kornia's definition)."""
    return kornia.metrics.ssim(pred, target, window_size=window, max_val=1.0).mean()


class L1SSIMLoss(nn.Module):
    """UFA-Fuse Eq. 1: lambda * L1 + (1 - lambda) * (1 - SSIM), against the ground truth."""

    def __init__(self, lambda_l1: float = 0.2):
        super().__init__()
        if not 0.0 <= lambda_l1 <= 1.0:
            raise ValueError(f"lambda_l1 must be in [0, 1], got {lambda_l1}")
        self.lambda_l1 = lambda_l1

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        l1 = (pred - target).abs().mean()
        ssim_term = 1.0 - ssim(pred, target)
        total = self.lambda_l1 * l1 + (1.0 - self.lambda_l1) * ssim_term
        return {"loss": total, "l1": l1.detach(), "ssim_loss": ssim_term.detach()}


LOSSES = {"ufa": lambda cfg: L1SSIMLoss(cfg.lambda_l1)}


def build_loss(model_name: str, train_cfg) -> nn.Module:
    return LOSSES[model_name](train_cfg)
