"""CADNIF's building blocks: batch norm in the trained graph's modes, cross attention, the
non-local branch and the dilated residual dense block (Shen et al.; docs/models.md).

The network that joins them, its variants and its registration are in cadnif.py.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

_SLOPE = 0.2


class Norm(nn.BatchNorm2d):
    """BatchNorm2d that, with `batch_stats`, keeps normalising on the input's own statistics in
    eval (per image: the released test script fuses one image at a time)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, batch_stats: bool = False):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.batch_stats = batch_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.batch_stats:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, batch_stats={self.batch_stats}"


def tiled(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor, tile: int, border: int
) -> torch.Tensor:
    """fn over overlapping tiles: each tile sees `border` pixels of context on every side
    (reflected at the image edges) and contributes only its centre."""
    h, w = a.shape[-2:]
    step = tile - 2 * border
    pad = (border, border + (-w) % step, border, border + (-h) % step)
    mode = "reflect" if min(h, w) > border + max(pad) else "replicate"
    a, b = F.pad(a, pad, mode=mode), F.pad(b, pad, mode=mode)
    out = a.new_empty(a.shape[0], 1, a.shape[-2] - 2 * border, a.shape[-1] - 2 * border)
    for y in range(0, out.shape[-2], step):
        for x in range(0, out.shape[-1], step):
            part = fn(a[..., y : y + tile, x : x + tile], b[..., y : y + tile, x : x + tile])
            out[..., y : y + step, x : x + step] = part[..., border : border + step, border : border + step]
    return out[..., :h, :w]


def _conv_lrelu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.LeakyReLU(_SLOPE))


class CrossAttentionBlock(nn.Module):
    """Eqs. 1-3 / Fig. 2b-c: one spatial gate per stream, conditioned on the shared features c.
    `released`: LeakyReLU after both gate convs, then the sigmoid (the trained graph)."""

    def __init__(self, width: int = 16, released: bool = False, norm: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()

        def gate() -> nn.Sequential:
            act = partial(nn.LeakyReLU, _SLOPE) if released else nn.ReLU
            tail = [nn.LeakyReLU(_SLOPE)] if released else []
            return nn.Sequential(
                nn.Conv2d(2 * width, width, 3, padding=1),
                act(),
                nn.Conv2d(width, width, 3, padding=1),
                *tail,
                nn.Sigmoid(),
            )

        self.gate_a = gate()
        self.gate_b = gate()
        self.out = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), norm(width))

    def gates(self, x_a: torch.Tensor, x_b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gate_a(torch.cat([x_a, c], 1)), self.gate_b(torch.cat([x_b, c], 1))

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a, b = self.gates(x_a, x_b, c)
        return self.out(torch.cat([x_a * a, x_b * b, c], 1))


class CrossNonLocal(nn.Module):
    """Eq. 4: y_i = sum_j softmax_j(theta(q_i) . phi(kv_j)) g(kv_j); output q + BN(W y).
    `attend=False` is the released trained graph: q + BN(W kv), theta/phi/g unused."""

    def __init__(self, width: int = 16, attend: bool = True, norm: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.attend = attend
        self.theta = nn.Conv2d(width, width, 1)
        self.phi = nn.Conv2d(width, width, 1)
        self.g = nn.Conv2d(width, width, 1)
        self.w = nn.Sequential(nn.Conv2d(width, width, 1), norm(width))

    @staticmethod
    def _seq(x: torch.Tensor) -> torch.Tensor:
        # Contiguous: with a strided last dimension SDPA leaves its CPU flash kernel for the math
        # path, which materialises HW x HW (1.2 GB per 132x132 window) and is 7x slower.
        return x.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # B, 1, HW, C

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        if not self.attend:
            return x_q + self.w(x_kv)
        b, c, h, w = x_q.shape
        # Embedded Gaussian non-local: no 1/sqrt(d) scaling; SDPA avoids materialising HW x HW.
        y = F.scaled_dot_product_attention(
            self._seq(self.theta(x_q)), self._seq(self.phi(x_kv)), self._seq(self.g(x_kv)), scale=1.0
        )
        y = y.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x_q + self.w(y)


class DilatedResidualDenseBlock(nn.Module):
    """AHDRNet's DRDB as CADNIF uses it: the residual is a concatenation, so 64 in -> 128 out."""

    def __init__(
        self,
        width: int = 64,
        growth: int = 16,
        layers: int = 3,
        dilation: int = 2,
        act: Callable[[], nn.Module] = nn.ReLU,
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width + i * growth, growth, 3, padding=dilation, dilation=dilation), act())
            for i in range(layers)
        )
        self.fuse = nn.Sequential(nn.Conv2d(width + layers * growth, width, 1), act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(conv(torch.cat(feats, 1)))
        return torch.cat([x, self.fuse(torch.cat(feats, 1))], 1)
