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
auto-encoders first ("autoencoder": `autoencode(x, modality)`, the reconstruction loss `CrossFuseAELoss`), then
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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn

from fusion.errors import ConfigError
from fusion.losses import CrossFuseAELoss, CrossFuseLoss
from fusion.models.crossfuse_blocks import (  # noqa: F401 - re-exported
    AutoEncoder,
    ConvFusion,
    DenseBlock,
    DenseFusion,
    Encoder,
    FusionDecoder,
    ReconstructionDecoder,
    _conv,
    _conv_bn,
    _local_mean,
    centre_pad,
    pad_to_at_least,
    pad_to_multiple,
    skip_weights,
)
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
from fusion.models.registry import ModelSpec, Stage, register, switches

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
    fusion: str = "cam"  # cam | cnn | dense
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
            self.fusion: nn.Module = CrossAttentionMechanism(
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
    def autoencoder(self, modality: str) -> AutoEncoder:
        return cast(AutoEncoder, self.encoders[modality])  # ModuleDict types its values as Module

    def autoencode(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Stage-1 reconstruction of x (B x 1 x H x W in [0, 1], any size) by its modality's auto-encoder."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        h, w = x.shape[-2:]
        return self.encoders[modality](pad_to_multiple(x, 8, minimum=16))[..., :h, :w]

    def freeze_encoders(self) -> CrossFuse:
        """Stage 2: fix both auto-encoders (no gradients, eval mode)."""
        for p in self.encoders.parameters():
            p.requires_grad_(False)
        self.encoders.eval()
        return self

    def train(self, mode: bool = True) -> CrossFuse:
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
        return [
            *(p for m in MODALITIES for p in self.autoencoder(m).encoder.parameters()),
            *self.fusion.parameters(),
            *self.decoder.parameters(),
        ]

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
            sh[m], de[m] = self.autoencoder(m).encoder(x)
        dh, dw = de["ir"].shape[-2:]
        if isinstance(self.fusion, CrossAttentionMechanism):
            fused = self.fusion(pad_to_multiple(de["ir"], self.window), pad_to_multiple(de["vi"], self.window))
            fused = fused[..., :dh, :dw]
        else:
            fused = self.fusion(de["ir"], de["vi"])
        out = self.decoder(fused, sh, de)[..., :h, :w]
        return self._output(out)


RELEASED_WEIGHT_DECAY = 0.9  # Adam(..., weight_decay=0.9) in both released training scripts

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


def released_fixes(released: bool, given: Mapping[str, object]) -> dict[str, bool]:
    unknown = sorted(set(given) - set(RELEASED_OPTIONS))
    if unknown:
        raise ConfigError(f"train.options.{unknown[0]}: not an option of crossfuse; valid: {sorted(RELEASED_OPTIONS)}")
    for name, value in given.items():
        if not isinstance(value, bool):
            raise ConfigError(f"train.options.{name}: expected true or false, got {value!r}")
        if value and not released:
            raise ConfigError(
                f"train.options.{name}: fixes a bug of the released code; set train.released=true "
                "with it (the paper's model does not have the bug)"
            )
    return {name: bool(given.get(name, False)) for name in RELEASED_OPTIONS}


def build_crossfuse(variant: str = "full", **options) -> CrossFuse:
    return CrossFuse(variant=variant, **options)


# -- the training recipe: stage 1 trains each modality's auto-encoder to reconstruct itself,
# stage 2 the fusion layers and decoder on the frozen encoders; one-stage variants train jointly


def _reconstruction(step, sources, gt, loss_fn, autocast, supervised) -> dict[str, torch.Tensor]:
    """Stage 1: each modality reconstructs itself; the loss is the mean over modalities."""
    with autocast():
        outs = [step(x, m) for x, m in zip(sources, MODALITIES)]
    # Losses in float32: the model runs in reduced precision under train.amp, not its loss.
    parts = [loss_fn(out.float(), x) for out, x in zip(outs, sources)]
    return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}


_AUTOENCODER = Stage(
    "autoencoder",
    fuses=False,
    label="stage-1 (auto-encoder)",
    forward=lambda model: cast(CrossFuse, model).autoencode,
    objective=_reconstruction,
)
_TWO_STAGES = (_AUTOENCODER, Stage("fusion", starts_from="autoencoder"))
_ONE_STAGE = (Stage("joint"),)


def _stages(variant: str) -> tuple[Stage, ...]:
    return _TWO_STAGES if VARIANT_CONFIG[variant].two_stage else _ONE_STAGE


def _loss(stage: str, cfg) -> nn.Module:
    released = getattr(cfg, "released", False)
    if stage == "autoencoder":  # train.options.fix_ms_ssim: the standard MS-SSIM in released mode
        return CrossFuseAELoss(
            released=released and not (getattr(cfg, "options", None) or {}).get("fix_ms_ssim", False)
        )
    return CrossFuseLoss(released=released)


def _start_from_encoders(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Stage 2 starts from a stage-1 checkpoint's auto-encoders, then freezes them."""
    model = cast(CrossFuse, module)
    prefix = "encoders."
    model.encoders.load_state_dict({k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)})
    model.freeze_encoders()


register(
    ModelSpec(
        name="crossfuse",
        display_name="CrossFuse",
        builder=build_crossfuse,
        loss=_loss,
        stages=_stages,
        trainable=lambda model, stage: cast(CrossFuse, model).parameters_for(stage),
        start_from=_start_from_encoders,
        variants=VARIANTS,
        shared_stage1=frozenset(v for v, c in VARIANT_CONFIG.items() if c.two_stage),
        aliases=frozenset({"full"}),  # = s1-c1
        task="ir-vis",
        paper="CrossFuse (Li & Wu), cross attention mechanism with re-softmax, two-stage IR-VIS fusion",
        notes={
            "stages": "('autoencoder', 'fusion') or ('joint',) for one-stage; model.parameters_for(stage); "
            "stage 1 uses model.autoencode(x, 'ir'|'vi') and the MSE + MS-SSIM reconstruction loss",
            "released": "shift only in eval and within windows, min-max output, 0.5 IR shallow skip, "
            "channel-summed skip weights, BN on the last conv, released CA chaining (s2-c2, s3-c3), "
            "floor pooling + centre-padded decoder output, Adam weight_decay 0.9, released stage-1 MS-SSIM "
            "(the released lr 1e-3 is not set: use train.lr)",
        },
        options=switches(RELEASED_OPTIONS),
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
