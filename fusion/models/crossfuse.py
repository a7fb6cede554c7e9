"""CrossFuse (Li & Wu): cross attention mechanism (CAM) for infrared-visible fusion, two-stage training.

Gray images (C = 1), inputs `forward(ir, vi)` in [0, 1]. Layer sizes follow docs/models.md
(facts from the authors' released code); structure from the paper (Figs. 2-8, Eqs. 1-6):

- Encoders (one per modality, same architecture, separate weights; no BN, no activation, only
  max-pooling is non-linear): 3x3 conv 1->32 at full resolution (the shallow skip), max-pool,
  dense block (3 layers, growth 64, 3x3 conv to 128), max-pool, dense block, max-pool. Three
  pools, so the deep features are 128 channels at 1/8 resolution. Stage-1 reconstruction
  decoders: 3x3 128->64, up, 64->64, up, 64->32, up, + shallow skip, 1x1 32->1.
- CAM on 32x32 windows of the deep map; tokens are 2x2 patches (128 x 2 x 2 = 512-dim, 256
  tokens a window), 16 heads, MLP ratio 4 (GELU), pre-norm LayerNorm eps 1e-6. Per modality:
  SA blocks, shift, SA blocks, unshift ("twice as many SA as CA"); then CA blocks (Eq. 2):
  queries from the other modality, keys/values and the residual from this one, with
  re-softmax(X) = softmax(-X) (Eq. 3), each followed by the branch's final LayerNorm. The
  fused feature is the sum of the two CA branches. `sN-cN` = N blocks in each SA stage and N
  CA blocks per branch.
- Decoder (BN, no activation): deep skip Phi = CAM + w_ir Phi_ir + w_vi Phi_vi with w from the
  3x3 local mean (Eqs. 4-6), 3x3 128->64, up, 64->64, up, 64->32, up, 32->32, shallow skip
  added with detail weights |Phi - mean3x3(Phi)| (Eq. 5 prints "1 - k*Phi"; we read it as the
  detail extractor the text describes, which is also what the released code computes), then
  1x1 32->1. Skip weights are detached (a fixed fusion rule, as in the released code).
- Output: the decoder is linear, so the paper model returns clamp(x, 0, 1) with a
  straight-through gradient (the values honour the [0, 1] contract, training sees the linear
  output); `released=True` min-max normalises every image instead, as the released code does.

Any input size: the image is padded (reflect; replicate where the image is too small to
reflect) to a multiple of 8 (at least 16), the deep map likewise to a multiple of the window;
outputs are cropped back. Shift: the deep map is rolled by half a window (16 feature pixels)
across window boundaries, Swin-style, so the second SA stage mixes neighbouring windows.
Note: rolling *within* one window only permutes that window's tokens, and attention without
position embeddings is permutation-equivariant, so such a roll cannot change the output; for
the same reason the shift is a no-op whenever the deep map is a single window (256x256
training crops). `released=True` reproduces the released code: roll inside each window, and
only in eval mode (shift off in training).

Training stages (see `CrossFuse.stages` / `parameters_for`): two-stage variants train the
auto-encoders first ("autoencoder": `autoencode(x, modality)`, loss `crossfuse_ae`), then
freeze them (`freeze_encoders()`) and train the rest ("fusion", loss `crossfuse`). The
`one-stage` variant trains encoders, fusion module and decoder together ("joint", loss
`crossfuse`) and has no reconstruction decoders.

Ablations (Tables 1-2): `no-resoftmax` uses softmax(+X) in CA, `no-shift` never rolls,
`F_CNN` replaces the CAM by 4 convs on [Phi_ir, Phi_vi] (256->128->128->128->128, ReLU between)
and `F_Dense` by a dense block (3 layers, growth 64, ReLU, 3x3 to 128) + one 3x3 conv; the
paper does not give their layers, so these widths are our choice.

`released=True` also reproduces (each deviation has a named fix, RELEASED_OPTIONS; docs/models.md):
IR shallow skip weighted by 0.5 (released decoder), local means summed over channels for the
skip weights, BN after the final 1x1 conv; the released chaining of stacked CA blocks
(crossfuse_cam.py; s2-c2, s3-c3 only); sizes not divisible by 8 as the released code handles
them: max-pooling rounds down and the decoder output is centre-padded (reflect) back to the
shallow features' size, instead of padding the input; Adam weight_decay 0.9 in every stage
(`optimizer_overrides`, read by the trainer); the released stage-1 MS-SSIM (fusion.losses,
selected from the train config). The released files' unused tensors (CA qkv, SA final norms,
conv_gra) have no place here: fusion/weights/crossfuse.py lists them as ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion.errors import ConfigError
from fusion.models import ModelSpec, register
from fusion.models.crossfuse_cam import (  # noqa: F401 - re-exported
    MODALITIES,
    Attention,
    CrossAttentionMechanism,
    TransformerBlock,
    _from_tokens,
    _from_windows,
    _to_tokens,
    _to_windows,
)

VARIANTS = {
    "full": "CrossFuse (s1-c1)",
    "s1-c1": "s1-c1",
    "s2-c2": "s2-c2",
    "s3-c3": "s3-c3",
    "no-resoftmax": "w/o re-softmax",
    "no-shift": "w/o shift",
    "F_CNN": "F_CNN",
    "F_Dense": "F_Dense",
    "one-stage": "one-stage",
}

STAGES_TWO = ("autoencoder", "fusion")
STAGES_ONE = ("joint",)
_EPS = 1e-6


@dataclass(frozen=True)
class _Config:
    fusion: str = "cam"        # cam | cnn | dense
    depth: int = 1
    resoftmax: bool = True
    shift: bool = True
    two_stage: bool = True


VARIANT_CONFIG = {
    "full": _Config(),
    "s1-c1": _Config(),
    "s2-c2": _Config(depth=2),
    "s3-c3": _Config(depth=3),
    "no-resoftmax": _Config(resoftmax=False),
    "no-shift": _Config(shift=False),
    "F_CNN": _Config(fusion="cnn"),
    "F_Dense": _Config(fusion="dense"),
    "one-stage": _Config(two_stage=False),
}


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


def centre_pad(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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


class CrossFuse(nn.Module):
    def __init__(
        self,
        variant: str = "full",
        released: bool = False,
        window: int = 32,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        in_channels: int = 1,
        **fixes: bool,
    ):
        super().__init__()
        self.fixes = released_fixes(released, fixes)
        if variant not in VARIANT_CONFIG:
            raise ValueError(f"unknown CrossFuse variant {variant!r}; valid: {list(VARIANT_CONFIG)}")
        if in_channels != 1:
            raise ValueError("CrossFuse fuses gray images (C = 1); fuse colour on the Y channel")
        cfg = VARIANT_CONFIG[variant]
        self.variant = variant
        self.in_channels = in_channels  # read by fusion.inference and the trainer
        self.released = released
        self.config = cfg
        self.two_stage = cfg.two_stage
        self.stages = STAGES_TWO if cfg.two_stage else STAGES_ONE
        self.window = window
        self.encoders = nn.ModuleDict({m: AutoEncoder(in_channels, reconstruction=cfg.two_stage) for m in MODALITIES})
        if cfg.fusion == "cam":
            self.fusion = CrossAttentionMechanism(
                window=window,
                depth=cfg.depth,
                heads=heads,
                mlp_ratio=mlp_ratio,
                resoftmax=cfg.resoftmax,
                shift=cfg.shift,
                shift_in_training=not released,
                shift_within_window=released,
                released_chaining=released and not self.fixes["fix_ca_chaining"],
            )
        elif cfg.fusion == "cnn":
            self.fusion = ConvFusion()
        else:
            self.fusion = DenseFusion()
        self.decoder = FusionDecoder(out_channels=in_channels, released=released)
        # what the released sizing does to odd sizes, and the released Adam (trainer: Trainer.__init__)
        self.released_sizing = released and not self.fixes["fix_odd_sizes"]
        self.optimizer_overrides = (
            {"weight_decay": RELEASED_WEIGHT_DECAY} if released and not self.fixes["fix_weight_decay"] else {}
        )

    # -- stage 1
    def autoencode(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Stage-1 reconstruction of x (B x 1 x H x W in [0, 1], any size) by its modality's auto-encoder."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        h, w = x.shape[-2:]
        return self.encoders[modality](pad_to_multiple(x, 8, minimum=16))[..., :h, :w]

    def freeze_encoders(self) -> "CrossFuse":
        """Stage 2: fix both auto-encoders (no gradients, eval mode)."""
        for p in self.encoders.parameters():
            p.requires_grad_(False)
        self.encoders.eval()
        return self

    def train(self, mode: bool = True) -> "CrossFuse":
        super().train(mode)
        if all(not p.requires_grad for p in self.encoders.parameters()):
            self.encoders.eval()  # frozen encoders stay in inference mode
        return self

    def parameters_for(self, stage: str) -> list[nn.Parameter]:
        """The parameters a trainer optimises in `stage` (one of `self.stages`)."""
        if stage not in self.stages:
            raise ValueError(f"variant {self.variant!r} trains stages {self.stages}, not {stage!r}")
        if stage == "autoencoder":
            return list(self.encoders.parameters())
        if stage == "fusion":
            return [*self.fusion.parameters(), *self.decoder.parameters()]
        return [*(p for ae in self.encoders.values() for p in ae.encoder.parameters()),
                *self.fusion.parameters(), *self.decoder.parameters()]

    # -- fusion
    def _output(self, x: torch.Tensor) -> torch.Tensor:
        if self.released:
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            return (x - lo) / (hi - lo + _EPS)
        # straight-through clamp: [0, 1] values, gradient of the linear output
        return x + (x.clamp(0, 1) - x).detach()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs: ir, vi, each B x 1 x H x W in [0, 1] -> fused B x 1 x H x W in [0, 1]."""
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != 2:
            raise ValueError(f"CrossFuse fuses exactly 2 inputs (ir, vi), got {len(inputs)}")
        if any(x.shape[1] != 1 for x in inputs):
            raise ValueError("CrossFuse fuses gray images (C = 1); fuse colour on the Y channel")
        h, w = inputs[0].shape[-2:]
        sh, de = {}, {}
        for m, x in zip(MODALITIES, inputs):
            # released: no input padding, pooling rounds down, the decoder centre-pads its output
            # (below 16 px the released code fails: deep maps too small for its reflect padding)
            x = pad_to_at_least(x, 16) if self.released_sizing else pad_to_multiple(x, 8, minimum=16)
            sh[m], de[m] = self.encoders[m].encoder(x)
        dh, dw = de["ir"].shape[-2:]
        if isinstance(self.fusion, CrossAttentionMechanism):
            fused = self.fusion(pad_to_multiple(de["ir"], self.window), pad_to_multiple(de["vi"], self.window))
            fused = fused[..., :dh, :dw]
        else:
            fused = self.fusion(de["ir"], de["vi"])
        out = self.decoder(fused, sh, de)[..., :h, :w]
        return self._output(out)


RELEASED_WEIGHT_DECAY = 0.9   # Adam(..., weight_decay=0.9) in both released training scripts

# train.options.NAME: each fixes one bug of the released code (with train.released=true)
RELEASED_OPTIONS = {
    "fix_ca_chaining": "released only (s2-c2, s3-c3): every CA block takes its query from the other "
                       "modality's SA output and key/value from the previous block's normalised output "
                       "(released: query from the previous block's norm1 output, key from its output "
                       "before the final norm)",
    "fix_odd_sizes": "released only: reflect-pad the input to a multiple of 8 and crop the output "
                     "(released: pooling rounds down, the decoder output is centre-padded back)",
    "fix_weight_decay": "released only: Adam with train.weight_decay (released: weight_decay 0.9)",
    "fix_ms_ssim": "released only: stage-1 loss with the standard MS-SSIM (released: pytorch_msssim "
                   "normalize=True, factors (x+1)/2, last scale's SSIM to the power 4 w5, data range "
                   "guessed from the image)",
}


def released_fixes(released: bool, given: dict[str, object]) -> dict[str, bool]:
    unknown = sorted(set(given) - set(RELEASED_OPTIONS))
    if unknown:
        raise ConfigError(f"train.options.{unknown[0]}: not an option of crossfuse; valid: {sorted(RELEASED_OPTIONS)}")
    for name, value in given.items():
        if not isinstance(value, bool):
            raise ConfigError(f"train.options.{name}: expected true or false, got {value!r}")
        if value and not released:
            raise ConfigError(f"train.options.{name}: fixes a bug of the released code; set train.released=true "
                              "with it (the paper's model does not have the bug)")
    return {name: bool(given.get(name, False)) for name in RELEASED_OPTIONS}


def build_crossfuse(variant: str = "full", **options) -> CrossFuse:
    return CrossFuse(variant=variant, **options)


register(
    ModelSpec(
        name="crossfuse",
        builder=build_crossfuse,
        variants=VARIANTS,
        shared_stage1=frozenset(v for v, c in VARIANT_CONFIG.items() if c.two_stage),
        aliases=frozenset({"full"}),   # = s1-c1
        task="ir-vis",
        paper="CrossFuse (Li & Wu), cross attention mechanism with re-softmax, two-stage IR-VIS fusion",
        notes={
            "stages": "model.stages: ('autoencoder', 'fusion') or ('joint',) for one-stage; "
            "model.parameters_for(stage); stage 1 uses model.autoencode(x, 'ir'|'vi') and loss crossfuse_ae",
            "released": "shift only in eval and within windows, min-max output, 0.5 IR shallow skip, "
            "channel-summed skip weights, BN on the last conv, released CA chaining (s2-c2, s3-c3), "
            "floor pooling + centre-padded decoder output, Adam weight_decay 0.9, released stage-1 MS-SSIM "
            "(the released lr 1e-3 is not set: use train.lr)",
        },
        options=RELEASED_OPTIONS,
    )
)

__all__ = [
    "CrossFuse",
    "CrossAttentionMechanism",
    "Attention",
    "TransformerBlock",
    "AutoEncoder",
    "Encoder",
    "FusionDecoder",
    "skip_weights",
    "pad_to_multiple",
    "centre_pad",
    "RELEASED_OPTIONS",
    "build_crossfuse",
]
