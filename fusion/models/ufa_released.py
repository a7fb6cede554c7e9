"""UFA-Fuse as the authors released it (`Code/model/model.py`, class `AF`): `released=True`.

Module names are the authors' own, so the authors' state dict loads key for key
(`fusion import-weights ufa FILE`). Layer by layer (docs/models.md; every conv 3x3 64->64 with
bias unless said; LReLU = LeakyReLU(0.01); all inputs share the weights up to `fusion`):

  conv1        3x3 in->64 + LReLU
  rb1..rb3     conv, LReLU, conv: no skip connection, no activation after the second conv
  sc4          conv1 (+LReLU) on each input, channel attention, spatial attention,
               conv2 (+LReLU) on each input; returns the post-conv2 features
  fusion       concat (128) -> 1x1 to 64, no activation
  EX3.0..3     conv + LReLU
  restruction  3x3 64->3, then sigmoid

Attention (no softmax module; written out with exp as the released code does):
  channel  p_k = global average pool of input k; mask_k = exp(p_k) / (exp(p_1) + exp(p_2) + 1e-10)
  spatial  a_k = att_k.conv([channel mean; channel max]) (7x7 2->1, no bias, one conv per input,
           no sigmoid: the released Sigmoid module is never called);
           mask_1 = exp(a_1) / (exp(a_2) + exp(a_2) + 1e-10)   <- released bug: a_2 twice
           mask_2 = exp(a_2) / (exp(a_1) + exp(a_2) + 1e-10)
  The channel mask is applied first, the spatial one to the channel-weighted features.

`fix_spatial_softmax=True` divides mask_1 by exp(a_1) + exp(a_2) + 1e-10, so a user can measure
what the bug costs. Two inputs only: the released attention has exactly two spatial convs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_SLOPE = 0.01  # nn.LeakyReLU's default, which the released code uses
_EPS = 1e-10


def _conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class ConvLReLU(nn.Module):
    """The released `body = Sequential(conv, LeakyReLU)` wrapper (keys `*.body.0.*`)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout), nn.LeakyReLU(_SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConvBlock(nn.Module):
    """The released "Resblock": conv, LReLU, conv, and nothing else (no skip, no final activation)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv(width, width), nn.LeakyReLU(_SLOPE), _conv(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SpatialConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv(2, 1, 7, bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)], dim=1))


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att1 = SpatialConv()
        self.att2 = SpatialConv()


def channel_masks(f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e1, e2 = f1.mean(dim=(2, 3), keepdim=True).exp(), f2.mean(dim=(2, 3), keepdim=True).exp()
    return e1 / (e1 + e2 + _EPS), e2 / (e1 + e2 + _EPS)


def spatial_masks(a1: torch.Tensor, a2: torch.Tensor, fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    e1, e2 = a1.exp(), a2.exp()
    return e1 / ((e1 if fixed else e2) + e2 + _EPS), e2 / (e1 + e2 + _EPS)


class AttentionBlock(nn.Module):
    """The released `sc4`: shared conv, channel then spatial attention, shared conv."""

    def __init__(self, width: int, channel: bool, spatial: bool, fix_spatial_softmax: bool):
        super().__init__()
        self.channel, self.spatial, self.fixed = channel, spatial, fix_spatial_softmax
        self.conv1 = ConvLReLU(width, width)
        if spatial:
            self.att_sp = SpatialAttention()
        self.conv2 = ConvLReLU(width, width)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1, f2 = self.conv1(f1), self.conv1(f2)
        if self.channel:
            m1, m2 = channel_masks(f1, f2)
            f1, f2 = m1 * f1, m2 * f2
        if self.spatial:
            m1, m2 = spatial_masks(self.att_sp.att1(f1), self.att_sp.att2(f2), self.fixed)
            f1, f2 = m1 * f1, m2 * f2
        return self.conv2(f1), self.conv2(f2)


class ReleasedUFAFuse(nn.Module):
    """The authors' `AF(in_ch=3, out_ch=64)`: 455,111 parameters with the full attention."""

    def __init__(
        self,
        variant: str = "UFA",
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        fix_spatial_softmax: bool = False,
    ):
        super().__init__()
        self.variant = variant
        self.released = True
        self.prefers_channels_last = True  # pure conv stack: see fusion.train.loop.memory_format
        self.num_inputs = 2
        self.in_channels = in_channels
        self.conv1 = nn.Sequential(_conv(in_channels, width), nn.LeakyReLU(_SLOPE))
        self.rb1, self.rb2, self.rb3 = ConvBlock(width), ConvBlock(width), ConvBlock(width)
        self.sc4 = AttentionBlock(
            width,
            channel=variant in ("UFA", "NO-SA"),
            spatial=variant in ("UFA", "NO-CA"),
            fix_spatial_softmax=fix_spatial_softmax,
        )
        self.fusion = _conv(2 * width, width, 1)
        self.EX3 = nn.Sequential(*[ConvLReLU(width, width) for _ in range(4)])
        self.restruction = _conv(width, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released training script's initialisation: xavier-normal conv weights (biases keep
        PyTorch's default)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.rb3(self.rb2(self.rb1(self.conv1(x))))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != 2:
            raise ValueError(f"the released UFA-Fuse graph fuses exactly 2 inputs, got {len(inputs)}")
        f1, f2 = self.features(torch.cat(inputs, dim=0)).chunk(2, dim=0)
        f1, f2 = self.sc4(f1, f2)
        return torch.sigmoid(self.restruction(self.EX3(self.fusion(torch.cat([f1, f2], dim=1)))))


__all__ = ["ReleasedUFAFuse", "AttentionBlock", "channel_masks", "spatial_masks"]
