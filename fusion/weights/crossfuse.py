"""CrossFuse: the authors' three `torch.save(model.state_dict())` files, in their key names.

IR_AE and VI_AE are the stage-1 auto-encoders (`Auto_Encoder_single`: `fea_encoder1.*`, the
encoder, and `recon_decoder1.*`, the reconstruction decoder), FUSION the CAM and decoder
(`Trans_FuseNet`). The network depth (s1-c1, s2-c2, s3-c3) is read from the FUSION file.

Module correspondences (from the released `network/*.py`):
- `cross_encoder.self_atten_block{1,2}` = the SA stages before / after the shift (`fusion.sa1`,
  `fusion.sa2`); in each, `self_atten1` runs on IR, `self_atten2` on VI.
- `cross_atten1(ir, vi)` takes its query from IR and key, value and residual from VI: it is the
  project's VI branch `fusion.ca.vi` (`ca[m]`: keys/values from m); `cross_atten2` is `ca.ir`.
  Their `.norm` is the per-block final norm (`fusion.ca_norm`).
- `decoder_fusion.conv1, conv_block.{0,2,4}, conv_last` = `decoder.c1..c4, last` (conv + BN).
Unused by the released forward pass, so ignored: the CA blocks' `attn.qkv` (the cross attention
has its own q/k/v linears), the SA modules' final `norm`, `conv_gra`. `decoder_fusion.weight.*`
ARE used, but are fixed 3x3 means over all channels (all 1/9, not trained), which the project
computes as a constant: they are checked, then ignored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from fusion.errors import DataError
from fusion.models.crossfuse_cam import MODALITIES
from fusion.weights.importers import Imported, check_layout, load_torch_state_dict, register_importer

DEPTHS = (1, 2, 3)
_AUTHORS_MODALITY = {"ir": "1", "vi": "2"}  # self_atten1 / self_atten2
_AUTHORS_CROSS = {"vi": "cross_atten1", "ir": "cross_atten2"}
_BLOCK_PARTS = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attn.proj", "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}
_CA_LINEARS = {"attn.q": "attn.q_linear", "attn.k": "attn.k_linear", "attn.v": "attn.v_linear"}
_FIXED_MEANS = ("decoder_fusion.weight.conv_sh.weight", "decoder_fusion.weight.conv_de.weight")


def _encoder_map() -> dict[str, str]:
    """project key under `encoders.<m>.` -> authors' key in an auto-encoder file."""
    out: dict[str, str] = {}

    def conv(ours: str, theirs: str) -> None:
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = f"{theirs}.conv2d.0.{p}"

    conv("encoder.shallow", "fea_encoder1.conv1")
    for ours, theirs in (("dense1", "0"), ("dense2", "2")):
        for i in range(3):
            conv(f"encoder.{ours}.convs.{i}", f"fea_encoder1.dense_blocks.{theirs}.dense_conv{i}")
        conv(f"encoder.{ours}.adjust", f"fea_encoder1.dense_blocks.{theirs}.adjust_conv")
    for ours, theirs in (("c1", "conv1"), ("c2", "conv_block.0"), ("c3", "conv_block.2"), ("last", "conv_last")):
        conv(f"decoder.{ours}", f"recon_decoder1.{theirs}")
    return out


def _fusion_map(depth: int) -> dict[str, str]:
    """project key -> authors' key in the FUSION file."""
    out: dict[str, str] = {}
    cab = "cross_atten_block"

    def block(ours: str, theirs: str, cross: bool) -> None:
        parts = {**_BLOCK_PARTS, **(_CA_LINEARS if cross else {"attn.qkv": "attn.qkv"})}
        for o, t in parts.items():
            for p in ("weight", "bias"):
                out[f"{ours}.{o}.{p}"] = f"{theirs}.{t}.{p}"

    for m in MODALITIES:
        for stage in (1, 2):
            for i in range(depth):
                block(
                    f"fusion.sa{stage}.{m}.{i}",
                    f"{cab}.self_atten_block{stage}.self_atten{_AUTHORS_MODALITY[m]}.blocks.{i}",
                    cross=False,
                )
        ca = f"{cab}.cross_atten_block.{_AUTHORS_CROSS[m]}"
        for i in range(depth):
            block(f"fusion.ca.{m}.{i}", f"{ca}.blocks.{i}", cross=True)
        for p in ("weight", "bias"):
            out[f"fusion.ca_norm.{m}.{p}"] = f"{ca}.norm.{p}"
    for ours, theirs in (
        ("c1", "conv1"),
        ("c2", "conv_block.0"),
        ("c3", "conv_block.2"),
        ("c4", "conv_block.4"),
        ("last", "conv_last"),
    ):
        for p in ("weight", "bias"):
            out[f"decoder.{ours}.0.{p}"] = f"decoder_fusion.{theirs}.conv2d.0.{p}"
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"decoder.{ours}.1.{p}"] = f"decoder_fusion.{theirs}.conv2d.1.{p}"
    return out


def _fusion_unused(depth: int) -> dict[str, list[int]]:
    """Tensors in the FUSION file that the released forward pass does not read (or reads as constants)."""
    d, cab = 512, "cross_atten_block"
    out: dict[str, list[int]] = {}
    for stage in (1, 2):
        for a in ("1", "2"):
            for p in ("weight", "bias"):
                out[f"{cab}.self_atten_block{stage}.self_atten{a}.norm.{p}"] = [d]
    for ca in ("cross_atten1", "cross_atten2"):
        for i in range(depth):
            out[f"{cab}.cross_atten_block.{ca}.blocks.{i}.attn.qkv.weight"] = [3 * d, d]
            out[f"{cab}.cross_atten_block.{ca}.blocks.{i}.attn.qkv.bias"] = [3 * d]
    out["conv_gra.weight"] = [32, 32, 3, 3]
    out[_FIXED_MEANS[0]] = [32, 32, 3, 3]
    out[_FIXED_MEANS[1]] = [128, 128, 3, 3]
    return out


@functools.cache
def _shapes(depth: int) -> dict[str, tuple[int, ...]]:
    from fusion.models import build_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = build_model("crossfuse", f"s{depth}-c{depth}", released=True)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def autoencoder_layout() -> dict[str, list[int]]:
    """Authors' key -> shape in one stage-1 auto-encoder file."""
    ours = _shapes(1)
    return {theirs: list(ours[f"encoders.ir.{k}"]) for k, theirs in _encoder_map().items()}


def fusion_layout(depth: int) -> dict[str, list[int]]:
    """Authors' key -> shape in the FUSION file of an s{depth}-c{depth} network."""
    ours = _shapes(depth)
    used = {theirs: list(ours[k]) for k, theirs in _fusion_map(depth).items()}
    return {**used, **_fusion_unused(depth)}


def _modality_tokens(path: Path) -> set[str]:
    tokens = set(re.split(r"[^a-z0-9]+", path.name.lower()))
    return {m for m, names in (("ir", {"ir", "lwir", "infrared"}), ("vi", {"vi", "vis", "visible"})) if tokens & names}


def _read_autoencoder(path: Path, role: str) -> dict[str, torch.Tensor]:
    state = load_torch_state_dict(path)
    if any(k.startswith(("cross_atten_block.", "decoder_fusion.")) for k in state):
        raise DataError(
            f"{path}: looks like the CrossFuse FUSION file (CAM + decoder), not the {role} auto-encoder; "
            "give the files in the order IR_AE VI_AE FUSION"
        )
    check_layout(path, state, autoencoder_layout(), f"CrossFuse auto-encoder ({role})")
    return state


def _fusion_depth(path: Path, state: dict[str, torch.Tensor]) -> int:
    if any(k.startswith(("fea_encoder1.", "recon_decoder1.")) for k in state):
        raise DataError(
            f"{path}: looks like a CrossFuse auto-encoder file (fea_encoder1.*), not the FUSION file; "
            "give the files in the order IR_AE VI_AE FUSION"
        )
    pattern = re.compile(r"cross_atten_block\.cross_atten_block\.cross_atten1\.blocks\.(\d+)\.")
    blocks = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    depth = len(blocks) or 1  # none: the layout check below says what the file holds
    if depth not in DEPTHS:
        raise DataError(
            f"{path}: {depth} cross-attention blocks per branch; the project builds s1-c1, s2-c2 and s3-c3 (1 to 3)"
        )
    return depth


def _check_fixed_means(path: Path, state: dict[str, torch.Tensor]) -> None:
    for key in _FIXED_MEANS:
        t = state[key].float()
        if not torch.allclose(t, torch.full_like(t, 1 / 9), rtol=0, atol=1e-6):
            raise DataError(
                f"{path}: {key} is not the released fixed 3x3 mean (all 1/9; found values in "
                f"[{t.min().item():.4g}, {t.max().item():.4g}]), which the project computes as a constant"
            )


@register_importer(
    "crossfuse",
    ("IR_AE", "VI_AE", "FUSION"),
    help="the authors' three state dicts: auto_encoder_epoch_4_ir.model, auto_encoder_epoch_4_vi.model "
    "and the fusetrans_*.model of s1-c1, s2-c2 or s3-c3",
)
def read_crossfuse(files: Sequence[Path]) -> Imported:
    ir_path, vi_path, fusion_path = files
    if _modality_tokens(ir_path) == {"vi"} and _modality_tokens(vi_path) == {"ir"}:
        raise DataError(
            f"{ir_path}: named as the VI auto-encoder but given as IR_AE (and {vi_path.name} as VI_AE); "
            "give the files in the order IR_AE VI_AE FUSION"
        )
    auto = {"ir": _read_autoencoder(ir_path, "IR_AE"), "vi": _read_autoencoder(vi_path, "VI_AE")}
    fusion = load_torch_state_dict(fusion_path)
    depth = _fusion_depth(fusion_path, fusion)
    check_layout(fusion_path, fusion, fusion_layout(depth), f"CrossFuse FUSION network (s{depth}-c{depth})")
    _check_fixed_means(fusion_path, fusion)

    state = {f"encoders.{m}.{ours}": auto[m][theirs] for m in MODALITIES for ours, theirs in _encoder_map().items()}
    state.update({ours: fusion[theirs] for ours, theirs in _fusion_map(depth).items()})
    ignored = [k for k in fusion if k in _fusion_unused(depth)]
    return Imported(
        variant=f"s{depth}-c{depth}",
        state_dict=state,
        model_options={"released": True},
        task="ir-vis",
        stage="fusion",
        ignored=ignored,
        notes=[
            f"s{depth}-c{depth}: {depth} SA block(s) before and after the shift and {depth} CA block(s) per branch",
            "the two auto-encoders have the same layout, so their order cannot be checked: IR_AE must be the "
            "infrared (*_ir) file",
            "the stage-1 reconstruction decoders (recon_decoder1) are kept as encoders.{ir,vi}.decoder; fusing does "
            "not use them",
            "decoder_fusion.weight.conv_sh / conv_de checked to be the fixed 3x3 channel-summed mean (1/9), which the "
            "released model computes as a constant",
            "released quirks kept (train.options fix them when training): CA chaining, floor pooling with a "
            "centre-padded decoder output, min-max output",
        ],
    )
