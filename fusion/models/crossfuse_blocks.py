"""CrossFuse's convolutional parts: the per-modality auto-encoders, the CNN and dense fusion
layers of the ablations, the skip weights and the decoder (Li & Wu; docs/models.md).

The cross-attention mechanism is in crossfuse_cam.py; the network that joins them, its
variants and its training recipe in crossfuse.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_EPS = 1e-6


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Pad bottom/right so H and W are multiples of `multiple` (and >= minimum)."""
    h, w = x.shape[-2:]
    th = max(-(-h // multiple) * multiple, -(-minimum // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-minimum // multiple) * multiple)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="reflect" if k > 1 else "zeros")


# ---------------------------------------------------------------- stage 1: auto-encoders


class DenseBlock(nn.Module):
    """`layers` densely connected 3x3 convs of `growth` channels, then a 3x3 conv to `out`."""

    def __init__(self, cin: int, growth: int = 64, layers: int = 3, out: int = 128, act: bool = False):
        super().__init__()
        self.convs = nn.ModuleList(_conv(cin + i * growth, growth) for i in range(layers))
        self.adjust = _conv(cin + layers * growth, out)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.cat([x, self.act(conv(x))], 1)
        return self.adjust(x)


class Encoder(nn.Module):
    def __init__(self, in_channels: int = 1, shallow: int = 32, deep: int = 128):
        super().__init__()
        self.shallow = _conv(in_channels, shallow)
        self.pool = nn.MaxPool2d(2)
        self.dense1 = DenseBlock(shallow, out=deep)
        self.dense2 = DenseBlock(deep, out=deep)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: B x 1 x H x W, H and W multiples of 8 -> (shallow B x 32 x H x W, deep B x 128 x H/8 x W/8)."""
        sh = self.shallow(x)
        de = self.pool(self.dense2(self.pool(self.dense1(self.pool(sh)))))
        return sh, de


class ReconstructionDecoder(nn.Module):
    def __init__(self, deep: int = 128, shallow: int = 32, out_channels: int = 1):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c1 = _conv(deep, deep // 2)
        self.c2 = _conv(deep // 2, deep // 2)
        self.c3 = _conv(deep // 2, shallow)
        self.last = _conv(shallow, out_channels, 1)

    def forward(self, sh: torch.Tensor, de: torch.Tensor) -> torch.Tensor:
        x = self.up(self.c3(self.up(self.c2(self.up(self.c1(de))))))
        return self.last(x + sh)


class AutoEncoder(nn.Module):
    def __init__(self, in_channels: int = 1, reconstruction: bool = True):
        super().__init__()
        self.encoder = Encoder(in_channels)
        self.decoder = ReconstructionDecoder(out_channels=in_channels) if reconstruction else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stage-1 reconstruction of x (H, W multiples of 8); linear output, not clamped."""
        if self.decoder is None:
            raise RuntimeError("this variant has no reconstruction decoder (one-stage training)")
        return self.decoder(*self.encoder(x))


# ---------------------------------------------------------------- stage 2: CAM ablations


class ConvFusion(nn.Module):
    """F_CNN ablation: the CAM replaced by 4 convs on the concatenated deep features."""

    def __init__(self, channels: int = 128):
        super().__init__()
        layers: list[nn.Module] = [_conv(2 * channels, channels)]
        for _ in range(3):
            layers += [nn.ReLU(), _conv(channels, channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([ir, vi], 1))


class DenseFusion(nn.Module):
    """F_Dense ablation: one dense block and one conv on the concatenated deep features."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.dense = DenseBlock(2 * channels, out=channels, act=True)
        self.conv = _conv(channels, channels)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.dense(torch.cat([ir, vi], 1))))


# ---------------------------------------------------------------- decoder


def _local_mean(x: torch.Tensor, k: int, sum_channels: bool) -> torch.Tensor:
    m = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True)
    return m.sum(1, keepdim=True) if sum_channels else m


def skip_weights(a: torch.Tensor, b: torch.Tensor, level: str, sum_channels: bool = False):
    """Eq. 4-6: w_a = g(a) / (g(a) + g(b)); g = 3x3 local mean (deep) or |x - local mean| (shallow)."""
    ga, gb = _local_mean(a, 3, sum_channels), _local_mean(b, 3, sum_channels)
    if level == "shallow":
        ga, gb = (a - ga).abs(), (b - gb).abs()
    elif level != "deep":
        raise ValueError(f"level must be 'deep' or 'shallow', got {level!r}")
    denom = ga + gb + _EPS
    return (ga / denom).detach(), (gb / denom).detach()


def centre_pad(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Reflect-pad x to `size`, the extra pixel of an odd difference at the bottom/right (the
    released `UpsampleReshape_eval`)."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot centre-pad {tuple(x.shape[-2:])} to the smaller {tuple(size)}")
    mode = "reflect" if dh < x.shape[-2] and dw < x.shape[-1] else "replicate"
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode=mode)


def pad_to_at_least(x: torch.Tensor, side: int) -> torch.Tensor:
    """Replicate-pad bottom/right only where H or W is below `side`."""
    ph, pw = max(0, side - x.shape[-2]), max(0, side - x.shape[-1])
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, k), nn.BatchNorm2d(cout))


class FusionDecoder(nn.Module):
    def __init__(self, deep: int = 128, shallow: int = 32, out_channels: int = 1, released: bool = False):
        super().__init__()
        self.released = released
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c1 = _conv_bn(deep, deep // 2)
        self.c2 = _conv_bn(deep // 2, deep // 2)
        self.c3 = _conv_bn(deep // 2, shallow)
        self.c4 = _conv_bn(shallow, shallow)
        self.last = _conv_bn(shallow, out_channels, 1) if released else _conv(shallow, out_channels, 1)

    def forward(self, fused: torch.Tensor, sh: dict[str, torch.Tensor], de: dict[str, torch.Tensor]) -> torch.Tensor:
        w_ir, w_vi = skip_weights(de["ir"], de["vi"], "deep", sum_channels=self.released)
        x = fused + w_ir * de["ir"] + w_vi * de["vi"]
        x = self.c4(self.up(self.c3(self.up(self.c2(self.up(self.c1(x)))))))
        if x.shape[-2:] != sh["ir"].shape[-2:]:  # released sizing: pooling rounded down
            x = centre_pad(x, sh["ir"].shape[-2:])
        s_ir, s_vi = skip_weights(sh["ir"], sh["vi"], "shallow", sum_channels=self.released)
        ir_gain = 0.5 if self.released else 1.0
        x = x + ir_gain * s_ir * sh["ir"] + s_vi * sh["vi"]
        return self.last(x)


# ---------------------------------------------------------------- the model
