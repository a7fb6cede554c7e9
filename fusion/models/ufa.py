"""UFA-Fuse (supervised multi-focus fusion with unity fusion attention).

Paper: feature extraction (7 FEBs, shared weights) -> UFA (channel then spatial attention,
each a softmax across the K inputs, Eqs. 5-10) -> concat -> 1x1 FFB -> reconstruction
(Table II: ICB1-3 64->64 LeakyReLU, ICB4 64->3 sigmoid). Fully convolutional, so any
input size works without padding tricks.

`released=True` builds the authors' released network instead (fusion/models/ufa_released.py:
their module names, their layer split, their attention formulas and its spatial-softmax bug;
`fix_spatial_softmax=True` fixes that bug).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fusion.errors import ConfigError
from fusion.losses import L1SSIMLoss
from fusion.models.registry import ModelSpec, Option, option, register
from fusion.models.ufa_released import ReleasedUFAFuse

VARIANTS = {
    "UFA": "UFA",  # channel + spatial attention (the paper's model)
    "NO-UFA": "NO-UFA",  # features concatenated without attention
    "NO-SA": "NO-SA",  # channel attention only
    "NO-CA": "NO-CA",  # spatial attention only
}


def _conv_lrelu(cin: int, cout: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(slope, inplace=True))


class UnityFusionAttention(nn.Module):
    """Eqs. 5-10: F' = Mc(F) * F, F'' = Ms(F') * F', softmaxes taken across the K inputs."""

    def __init__(self, num_inputs: int, channel: bool, spatial: bool):
        super().__init__()
        self.channel = channel
        self.spatial = spatial
        self.spatial_convs = nn.ModuleList(nn.Conv2d(2, 1, 7, padding=3) for _ in range(1 if spatial else 0))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.channel:
            pooled = torch.stack([f.mean(dim=(2, 3), keepdim=True) for f in feats])  # K,B,C,1,1
            weights = torch.softmax(pooled, dim=0)
            feats = [w * f for w, f in zip(weights, feats)]
        if self.spatial:
            maps = []
            for f in feats:
                conv = self.spatial_convs[0]
                desc = torch.cat([f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)], dim=1)
                maps.append(conv(desc))
            weights = torch.softmax(torch.stack(maps), dim=0)  # K,B,1,H,W
            feats = [w * f for w, f in zip(weights, feats)]
        return feats


class UFAFuse(nn.Module):
    def __init__(
        self,
        variant: str = "UFA",
        in_channels: int = 3,
        out_channels: int = 3,
        num_inputs: int = 2,
        width: int = 64,
        slope: float = 0.01,
    ):
        super().__init__()
        if num_inputs < 2:
            raise ValueError(f"num_inputs must be >= 2, got {num_inputs}")
        self.variant = variant
        self.prefers_channels_last = True  # pure conv stack: see fusion.train.loop.memory_format
        self.num_inputs = num_inputs
        self.in_channels = in_channels
        self.features = nn.Sequential(
            _conv_lrelu(in_channels, width, slope), *[_conv_lrelu(width, width, slope) for _ in range(6)]
        )
        self.ufa = UnityFusionAttention(
            num_inputs,
            channel=variant in ("UFA", "NO-SA"),
            spatial=variant in ("UFA", "NO-CA"),
        )
        self.ffb = nn.Conv2d(width * num_inputs, width, 1)
        hidden = 3
        self.reconstruct = nn.Sequential(
            *[_conv_lrelu(width, width, slope) for _ in range(hidden)],
            nn.Conv2d(width, out_channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs: K tensors B x C x H x W in [0, 1] (C = in_channels); returns B x out x H x W in [0, 1]."""
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != self.num_inputs:
            raise ValueError(f"UFA-Fuse was built for {self.num_inputs} inputs, got {len(inputs)}")
        # One pass through the shared backbone for all inputs: same weights, better batching.
        stacked = self.features(torch.cat(inputs, dim=0))
        feats = list(stacked.chunk(self.num_inputs, dim=0))
        fused = torch.cat(self.ufa(feats), dim=1)
        return self.reconstruct(self.ffb(fused))


def build_ufa(
    variant: str = "UFA", released: bool = False, fix_spatial_softmax: bool = False, luma: bool = False, **options
) -> nn.Module:
    if released:
        if luma:
            raise ConfigError(
                "train.options.luma: the released network is the authors' RGB graph; set "
                "train.options.luma=false with train.released=true (the smoke profile sets luma)"
            )
        return ReleasedUFAFuse(variant=variant, fix_spatial_softmax=fix_spatial_softmax, **options)
    if fix_spatial_softmax:
        raise ConfigError(
            "train.options.fix_spatial_softmax: fixes a bug of the released graph; "
            "set train.released=true with it (the paper's model has a true softmax)"
        )
    if luma:
        return UFAFuse(variant=variant, in_channels=1, out_channels=1, **options)
    return UFAFuse(variant=variant, **options)


register(
    ModelSpec(
        name="ufa",
        display_name="UFA-Fuse",
        builder=build_ufa,
        loss=lambda stage, cfg: L1SSIMLoss(option(cfg, "lambda_l1", "ufa"), released=getattr(cfg, "released", False)),
        variants=VARIANTS,
        task="multi-focus",
        paper="UFA-Fuse (Zang et al.), unity fusion attention, supervised multi-focus fusion",
        notes={
            "released": "the authors' AF network (455,111 parameters, RGB), their spatial-softmax bug kept; "
            "loss SSIM with a zero-padded window; xavier-normal init"
        },
        options={
            "fix_spatial_softmax": Option(
                "released graph only: spatial mask 1 divided by exp(a1)+exp(a2) (released: exp(a2) twice)"
            ),
            # Not in the paper. Twelve convolutions without a skip learn the small differences
            # between R, G and B long after the structure: after the CPU main job's 250 steps an
            # RGB network paints every image in its training set's mean tint (sepia).
            "luma": Option(
                "paper network on Y of YCrCb, one channel in and out; the chroma is restored "
                "from the sources at inference, as for the gray models (not in the paper, which "
                "fuses RGB; the smoke profile's CPU main job uses it)"
            ),
            "lambda_l1": Option(
                "L = lambda * L1 + (1 - lambda) * (1 - SSIM)", default=0.2, kind=float, low=0.0, high=1.0, network=False
            ),
        },
        supervised=True,
    )
)

__all__ = ["UFAFuse", "UnityFusionAttention", "build_ufa"]
