"""CADNIF: cross attention-guided dense network for image fusion (Shen et al.), unsupervised.

One network for IR-VIS, medical (MRI-PET), multi-focus and multi-exposure fusion of gray
images (C = 1; colour is fused on Y upstream). Layer sizes follow the authors' trained graph
(docs/models.md); the paper (Figs. 1-4, Eqs. 1-4) gives the structure:

- inputs mapped to [-1, 1]; each stream stacks three gray planes (`stacking`); shallow 1x1
  convs (BN + LeakyReLU 0.2): both streams 6->16 ("pair" features, c0), each stream 3->16;
- 5 cross-attention blocks, densely connected (Eqs. 1-3): per stream a gate
  sigmoid(conv3x3(ReLU(conv3x3([x, c])))), block output BN(conv3x3([x_ir*a_ir, x_vi*a_vi, c]));
  between blocks a 3x3 conv (LeakyReLU) over [block output, c0, previous convs], inputs
  32/48/64/80 channels; the last block's output and the convs make the 96-channel output;
- auxiliary branch (Eq. 4): two non-local (embedded Gaussian) cross self-attention blocks of
  1x1 convs, queries from one stream and keys/values from the other, 16 + 16 channels;
- merging network: 1x1 to 64, dilated (rate 2) residual dense block (three 3x3 convs, growth
  16, 1x1 back to 64, concatenated with its input), 1x1 to 64; global residual: concat with c0,
  3x3 (BN, LeakyReLU), 3x3 to one channel, tanh, mapped back to [0, 1].

All convolutions are 'same' padded (dilated ones by 2), so any H x W works. The non-local
branch attends over all H*W positions (SDPA: memory linear, time quadratic), so in paper mode
eval fuses images larger than 132x132 in 132x132 tiles keeping the central 120x120 (a project
choice: the authors' test script fuses whole images). K > 2 inputs are fused pairwise from left
to right, F = f(...f(f(x1, x2), x3)..., xK).

Ablations (Table 6) remove exactly what they name:
  OD-Net         plain dense net (5 densely connected 3x3 convs) on the pair features only:
                 no stream convs, no attention, no auxiliary branch, no DRDB, no global residual;
  CA-Net         + the five cross-attention blocks and the stream convs;
  CA-DRDB-Net    + the dilated residual dense block (and its 1x1 out);
  CA-DRDB-AU-Net + the auxiliary branch;
  CA-DRDB-AU-GRL-Net (proposed) + the global residual.

`released=True` is the authors' TRAINED graph (read from model-11.meta), layer for layer:
streams [ir, ir, vi] / [vi, vi, ir]; LeakyReLU(0.2) after both gate convs, then the sigmoid;
LeakyReLU in the DRDB; the dense concatenations in the graph's own channel order; an auxiliary
branch x + BN(W x_other) per stream (the graph computes the non-local attention but nothing
consumes it); every BatchNorm on batch statistics in training AND eval (tf.contrib batch_norm in
training mode; in eval each image on its own statistics, as the test script fuses one image at a
time), epsilon 1.001e-5, 1e-3 in the auxiliary branch; whole images in eval, no tiling. The
parameters and their names are the same in both modes. Each released bug has a fix option
(`OPTIONS`); `published_test_graph` rebuilds the graph that made the authors' published images.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from fusion.errors import ConfigError
from fusion.losses import CADNIFLoss
from fusion.models.cadnif_blocks import (
    _SLOPE,
    CrossAttentionBlock,
    CrossNonLocal,
    DilatedResidualDenseBlock,
    Norm,
    _conv_lrelu,
    tiled,
)
from fusion.models.registry import ModelSpec, Option, option, register

VARIANTS = {
    "OD-Net": "OD-Net",
    "CA-Net": "CA-Net",
    "CA-DRDB-Net": "CA-DRDB-Net",
    "CA-DRDB-AU-Net": "CA-DRDB-AU-Net",
    "CA-DRDB-AU-GRL-Net": "CA-DRDB-AU-GRL-Net (proposed)",
}
DEFAULT_VARIANT = "CA-DRDB-AU-GRL-Net"

# variant -> (cross attention, DRDB, auxiliary branch, global residual)
COMPONENTS = {
    "OD-Net": (False, False, False, False),
    "CA-Net": (True, False, False, False),
    "CA-DRDB-Net": (True, True, False, False),
    "CA-DRDB-AU-Net": (True, True, True, False),
    "CA-DRDB-AU-GRL-Net": (True, True, True, True),
}

TILE, TILE_BORDER = 132, 6  # project choice (paper mode): 132x132 tiles, central 120x120 kept
TF_EPS = 1.001e-5  # FusedBatchNorm raises the code's 1e-5 to its minimum, 1.001e-5
TF_AUX_EPS = 1e-3  # tf.layers.batch_normalization's default
PUBLISHED_STD = 1e-3  # the released initialiser: truncated normal, cut at 2 std

OPTIONS = {
    # None: the mode's own default (the model picks it from train.released)
    "stacking": Option(
        '"cross" (streams ir,ir,vi / vi,vi,ir: the trained graph) or "same" (ir x3 / vi x3: the paper '
        "and the released test script); default cross if released, else same",
        default=None,
        kind=str,
    ),
    "bn_running_stats": Option(
        "BatchNorm on running statistics in eval (fixes the released batch-statistics BN at "
        "test time); default true, false if released",
        default=None,
    ),
    "aux_attention": Option(
        "the auxiliary branch adds the cross non-local attention of Eq. 4 (fixes the released "
        "dead branch x + BN(W x_other)); default true, false if released",
        default=None,
    ),
    "published_test_graph": Option(
        "released only: the graph of the authors' published images: checkpoint weights "
        "for the top-level convs only, attention blocks / non-local W / DRDB re-drawn from published_seed after "
        "every load, BN scale 1 offset 0 on the image's statistics, streams ir x3 / vi x3, output min-max rescaled"
    ),
    "published_seed": Option("seed of published_test_graph's fresh draw (default 0)", default=None, kind=int),
    # a training option: the loss reads it
    "loss_crop_border": Option(
        "pixels dropped on every side before the loss; default: the mode's own, 6 in paper mode "
        "(132 windows scored on their central 120), 0 if released (the trained graph scores all)",
        default=None,
        kind=int,
        low=0,
        network=False,
    ),
}


def _after_load(module: CADNIF, incompatible_keys) -> None:
    module.redraw_published()


class CADNIF(nn.Module):
    def __init__(
        self,
        variant: str = DEFAULT_VARIANT,
        released: bool = False,
        width: int = 16,
        merge_width: int = 64,
        num_blocks: int = 5,
        in_channels: int = 1,
        stacking: str | None = None,
        bn_running_stats: bool | None = None,
        aux_attention: bool | None = None,
        published_test_graph: bool = False,
        published_seed: int = 0,
    ):
        super().__init__()
        if variant not in COMPONENTS:
            raise ValueError(f"unknown CADNIF variant {variant!r}; valid: {list(COMPONENTS)}")
        if in_channels != 1:
            raise ValueError("CADNIF fuses gray images (C = 1); fuse colour on the Y channel")
        if stacking not in (None, "cross", "same"):
            raise ConfigError(f"train.options.stacking: {stacking!r}; valid: 'cross', 'same'")
        if published_test_graph and (not released or bn_running_stats or aux_attention):
            raise ConfigError(
                "train.options.published_test_graph: needs train.released=true and neither "
                "bn_running_stats nor aux_attention"
            )
        self.variant = variant
        self.in_channels = in_channels  # read by fusion.inference and the trainer
        self.released = released
        self.attention, self.use_drdb, self.use_aux, self.global_residual = COMPONENTS[variant]
        self.stacking = stacking or ("same" if published_test_graph or not released else "cross")
        self.bn_running_stats = (not released) if bn_running_stats is None else bool(bn_running_stats)
        self.aux_attention = (not released) if aux_attention is None else bool(aux_attention)
        self.published_test_graph = published_test_graph
        self.published_seed = int(published_seed)

        batch_stats = not self.bn_running_stats
        norm = (
            partial(Norm, eps=TF_EPS, batch_stats=batch_stats) if released else partial(Norm, batch_stats=batch_stats)
        )
        # tf.layers' momentum 0.99; TF never ran these updates, so model-11 holds (0, 1) there
        aux_norm = partial(Norm, eps=TF_AUX_EPS, momentum=0.01, batch_stats=batch_stats) if released else norm

        def conv_bn_lrelu(cin: int, cout: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), norm(cout), nn.LeakyReLU(_SLOPE))

        self.shallow_pair = conv_bn_lrelu(6, width, 1)
        if self.attention:
            self.shallow_a = conv_bn_lrelu(3, width, 1)
            self.shallow_b = conv_bn_lrelu(3, width, 1)
            self.blocks = nn.ModuleList(CrossAttentionBlock(width, released, norm) for _ in range(num_blocks))
            # conv k sees [block k output, c0, conv 1..k-1]: 32/48/64/80 channels
            self.dense_convs = nn.ModuleList(_conv_lrelu((k + 2) * width, width, 3) for k in range(num_blocks - 1))
        else:
            # OD-Net: the same dense growth without the blocks, conv k sees [c0, conv 1..k-1]
            self.dense_convs = nn.ModuleList(_conv_lrelu((k + 1) * width, width, 3) for k in range(num_blocks))
        dense_out = (num_blocks + 1) * width
        if self.use_aux:
            self.aux = nn.ModuleList([CrossNonLocal(width, self.aux_attention, aux_norm) for _ in range(2)])
        merge_in = dense_out + (2 * width if self.use_aux else 0)
        self.merge_in = _conv_lrelu(merge_in, merge_width, 1)
        if self.use_drdb:
            act = partial(nn.LeakyReLU, _SLOPE) if released else nn.ReLU
            self.drdb = DilatedResidualDenseBlock(merge_width, growth=width, act=act)
            self.merge_out = _conv_lrelu(2 * merge_width, merge_width, 1)
        tail_in = merge_width + (width if self.global_residual else 0)
        self.tail = nn.Sequential(
            conv_bn_lrelu(tail_in, merge_width, 3), nn.Conv2d(merge_width, 1, 3, padding=1), nn.Tanh()
        )
        if published_test_graph:
            self.redraw_published()
            self.register_load_state_dict_post_hook(_after_load)

    # ------------------------------------------------------------ the published test graph

    def published_fresh_convs(self) -> list[nn.Conv2d]:
        """The convs the published test script created fresh (in draw order): everything but the
        top-level convs it restored by name (conv_iv, conv_i, conv_v, A_conv.., conv_1, m_conv_1,
        conv_2, conv_3)."""
        convs: list[nn.Conv2d] = []
        for block in getattr(self, "blocks", []):
            convs += [block.gate_a[0], block.gate_a[2], block.gate_b[0], block.gate_b[2], block.out[0]]
        for nl in getattr(self, "aux", []):
            convs += [nl.theta, nl.phi, nl.g, nl.w[0]]
        if self.use_drdb:
            # convs[i][0] then fuse[0]: modules() walks them in registration order
            convs += [m for m in self.drdb.modules() if isinstance(m, nn.Conv2d)]
        return convs

    @torch.no_grad()
    def redraw_published(self) -> None:
        """Re-draw what the published test script initialised afresh; deterministic in the seed.
        Runs at construction and after every load_state_dict."""
        if not self.published_test_graph:
            return
        gen = torch.Generator().manual_seed(self.published_seed)
        for conv in self.published_fresh_convs():
            w = torch.empty(conv.weight.shape, dtype=torch.float32)
            nn.init.trunc_normal_(w, std=PUBLISHED_STD, a=-2 * PUBLISHED_STD, b=2 * PUBLISHED_STD, generator=gen)
            conv.weight.copy_(w)
            if conv.bias is not None:  # the published convs all have one; nothing to zero otherwise
                conv.bias.zero_()
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()

    # ------------------------------------------------------------ forward

    def _streams(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stacking == "cross":
            return torch.cat([a, a, b], 1), torch.cat([b, b, a], 1)
        return torch.cat([a, a, a], 1), torch.cat([b, b, b], 1)

    def _concat(self, att: torch.Tensor, convs: list[torch.Tensor]) -> torch.Tensor:
        """Block output with the dense features, convs = [c0, conv 1, conv 2, ...]. The trained graph
        orders them [conv k-1, ..., conv 2, block, conv 1, c0]: only a permutation of the next conv's
        input channels, kept so that imported kernels are the TF variables, transposed."""
        if self.released:
            return torch.cat([*reversed(convs[2:]), att, *reversed(convs[:2])], 1)
        return torch.cat([att, *convs], 1)

    def _dense(self, c0: torch.Tensor, x_a: torch.Tensor | None, x_b: torch.Tensor | None) -> torch.Tensor:
        if not self.attention:
            feats = [c0]
            for conv in self.dense_convs:
                feats.append(conv(torch.cat(feats, 1)))
            return torch.cat(feats, 1)
        convs, last = [c0], c0
        for k, block in enumerate(self.blocks):
            att = block(x_a, x_b, last)
            if k == len(self.blocks) - 1:
                return self._concat(att, convs)
            last = self.dense_convs[k](self._concat(att, convs))
            convs.append(last)
        raise AssertionError("unreachable")

    def fuse_pair(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Paper mode, eval: images larger than a training window are fused in 132x132 tiles keeping
        the central 120x120 (a project choice: the non-local branch is quadratic in pixels in time,
        ~0.3 s a 132x132 tile on 2 CPU cores). Released mode fuses the whole image, as the authors'
        test script does (its batch-statistics BN depends on the whole image)."""
        h, w = a.shape[-2:]
        if self.training or self.released or not (self.use_aux and self.aux_attention) or (h <= TILE and w <= TILE):
            return self._fuse_pair(a, b)
        return tiled(self._fuse_pair, a, b, TILE, TILE_BORDER)

    def _fuse_pair(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: B x 1 x H x W in [0, 1] -> fused B x 1 x H x W in [0, 1]."""
        a, b = a * 2 - 1, b * 2 - 1
        s_a, s_b = self._streams(a, b)
        c0 = self.shallow_pair(torch.cat([s_a, s_b], 1))
        x_a = x_b = None
        if self.attention:
            x_a, x_b = self.shallow_a(s_a), self.shallow_b(s_b)
        feats = self._dense(c0, x_a, x_b)
        if self.use_aux:
            feats = torch.cat([feats, self.aux[0](x_a, x_b), self.aux[1](x_b, x_a)], 1)
        m = self.merge_in(feats)
        if self.use_drdb:
            m = self.merge_out(self.drdb(m))
        if self.global_residual:
            m = torch.cat([m, c0], 1)
        out = (self.tail(m) + 1) / 2
        if self.published_test_graph:
            # scipy.misc.imsave byte-scales each image to its own min..max
            lo = out.amin(dim=(1, 2, 3), keepdim=True)
            span = out.amax(dim=(1, 2, 3), keepdim=True) - lo
            out = (out - lo) / torch.where(span > 0, span, torch.ones_like(span))
        return out

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs: K >= 2 tensors B x 1 x H x W in [0, 1]; K > 2 are fused pairwise, left to right."""
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) < 2:
            raise ValueError(f"CADNIF needs at least 2 inputs, got {len(inputs)}")
        if any(x.shape[1] != 1 for x in inputs):
            raise ValueError("CADNIF fuses gray images (C = 1); fuse colour on the Y channel")
        fused = self.fuse_pair(inputs[0], inputs[1])
        for x in inputs[2:]:
            fused = self.fuse_pair(fused, x)
        return fused


def build_cadnif(variant: str = DEFAULT_VARIANT, **options) -> CADNIF:
    return CADNIF(variant=variant, **options)


register(
    ModelSpec(
        name="cadnif",
        display_name="CADNIF",
        builder=build_cadnif,
        # task is read with a default: the model's losses do not need a full TrainConfig
        loss=lambda stage, cfg: CADNIFLoss(
            task=getattr(cfg, "task", "ir-vis"),
            released=getattr(cfg, "released", False),
            # None (unset): the mode's default, 6 in paper mode, 0 (the whole window) if released
            crop_border=option(cfg, "loss_crop_border", "cadnif"),
        ),
        variants=VARIANTS,
        task="ir-vis,medical,multi-focus,multi-exposure",
        paper="CADNIF (Shen et al.), cross attention-guided dense network, unsupervised unified fusion",
        notes={
            "released": "the authors' trained graph: streams ir,ir,vi / vi,vi,ir, LeakyReLU after both "
            "gate convs and in the DRDB, auxiliary branch x + BN(W x_other), BN on batch statistics in eval "
            "(eps 1.001e-5, 1e-3 aux), whole images; loss 100 x [MSE + 3 x Laplacian MSE] on the whole "
            "window (losses.CADNIFLoss)",
            "inputs": "gray; K > 2 inputs fused pairwise left to right",
            "training": "paper: 132x132 windows, loss on the central 120x120 (loss_crop_border 6); released: "
            "the authors feed the central 120x120 of each 132x132 window and score all of it (crop 120, border 0)",
            "weights": "fusion import-weights cadnif PREFIX (the authors' TF1 checkpoint, e.g. model-11)",
        },
        options=dict(OPTIONS),
    )
)

__all__ = ["CADNIF", "CrossAttentionBlock", "CrossNonLocal", "DilatedResidualDenseBlock", "Norm", "build_cadnif"]
