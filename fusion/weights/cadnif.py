"""Importer of the authors' CADNIF weights: their TensorFlow 1 checkpoint (e.g. `model/IV/model/model-11`).

Read without TensorFlow (fusion/weights/tf_checkpoint.py). Every live variable under
`fusion_model/` maps to one tensor of the released model (`released=True`); which layer is
which was read from the trained graph (`model-11.meta`), not from the variable names alone:
inside each attention block the IR gate is w_a_1 -> w_a_3 with biases b_a_1, b_a_2 and the VIS
gate w_a_2 -> w_a_4 with b_a_3, b_a_4; conv_1 is the 1x1 before the DRDB and m_conv_1 the one
after it. Kernels are HWIO in TF and OIHW in PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fusion.errors import DataError
from fusion.weights.importers import Imported, check_layout, register_importer
from fusion.weights.tf_checkpoint import read_checkpoint, resolve_prefix

VARIANT = "CA-DRDB-AU-GRL-Net"
ROOT = "fusion_model/"
DEAD_PREFIXES = (ROOT + "merging/dilation1_", ROOT + "merging/dilation2_")  # DRDB1, DRDB2: no consumer
OPTIMISER_MARKERS = ("/Adam", "beta1_power", "beta2_power", "global_step")


def _bn(ours: str, tf: str) -> dict[str, str]:
    return {
        f"{ours}.weight": f"{tf}/gamma",
        f"{ours}.bias": f"{tf}/beta",
        f"{ours}.running_mean": f"{tf}/moving_mean",
        f"{ours}.running_var": f"{tf}/moving_variance",
    }


def _conv(ours: str, w: str, b: str) -> dict[str, str]:
    return {f"{ours}.weight": w, f"{ours}.bias": b}


def name_map(num_blocks: int = 5) -> dict[str, str]:
    """Our state-dict key -> TF variable name (without the `fusion_model/` root)."""
    m: dict[str, str] = {}
    for ours, scope, w, b in (
        ("shallow_pair", "conv_iv", "w_iv", "b_iv"),
        ("shallow_a", "conv_i", "w_i", "b_i"),
        ("shallow_b", "conv_v", "w_v", "b_iv"),
    ):  # conv_v's bias is named b_iv
        m |= _conv(f"{ours}.0", f"{scope}/{w}", f"{scope}/{b}") | _bn(f"{ours}.1", f"{scope}/BatchNorm")
    for k in range(num_blocks):
        s = f"attention_layer{k + 1}/attention"
        # the graph pairs w_a_3 with b_a_2 and w_a_2 with b_a_3
        m |= _conv(f"blocks.{k}.gate_a.0", f"{s}/w_a_1", f"{s}/b_a_1")
        m |= _conv(f"blocks.{k}.gate_a.2", f"{s}/w_a_3", f"{s}/b_a_2")
        m |= _conv(f"blocks.{k}.gate_b.0", f"{s}/w_a_2", f"{s}/b_a_3")
        m |= _conv(f"blocks.{k}.gate_b.2", f"{s}/w_a_4", f"{s}/b_a_4")
        m |= _conv(f"blocks.{k}.out.0", f"{s}/w_a_5", f"{s}/b_a_5") | _bn(f"blocks.{k}.out.1", f"{s}/BatchNorm")
    for k in range(num_blocks - 1):
        name = "A_conv" if k == 0 else f"A_conv{k + 1}"
        m |= _conv(f"dense_convs.{k}.0", f"{name}/{name}_w", f"{name}/{name}_b")
    for k in range(2):  # non_local1: x_ir + BN(W x_vi); non_local2: x_vi + BN(W x_ir)
        s = f"non_local{k + 1}/non_conv"
        # by role in the graph's (dead) attention: query w_a_3, key w_a_2, value w_a_1
        m |= _conv(f"aux.{k}.theta", f"{s}/w_a_3", f"{s}/b_a_3")
        m |= _conv(f"aux.{k}.phi", f"{s}/w_a_2", f"{s}/b_a_2")
        m |= _conv(f"aux.{k}.g", f"{s}/w_a_1", f"{s}/b_a_1")
        m |= _conv(f"aux.{k}.w.0", f"{s}/w/w_a_4", f"{s}/w/b_a_4") | _bn(f"aux.{k}.w.1", f"{s}/w/batch_normalization")
    m |= _conv("merge_in.0", "conv_1/w_conv_1", "conv_1/b_conv_1")
    for i in range(3):
        m |= _conv(
            f"drdb.convs.{i}.0", f"merging/dilation_conv{i + 1}/w{i + 1}", f"merging/dilation_conv{i + 1}/b{i + 1}"
        )
    m |= _conv("drdb.fuse.0", "merging/dilation_conv4/w4", "merging/dilation_conv4/b4")
    m |= _conv("merge_out.0", "m_conv_1/w_m_1", "m_conv_1/b_m_1")
    m |= _conv("tail.0.0", "conv_2/w_conv_2", "conv_2/b_conv_2") | _bn("tail.0.1", "conv_2/BatchNorm")
    m |= _conv("tail.1", "conv_3/w_conv_3", "conv_3/b_conv_2")  # conv_3's bias is named b_conv_2
    return {k: ROOT + v for k, v in m.items()}


def to_torch(value: np.ndarray) -> torch.Tensor:
    """HWIO kernels -> OIHW; vectors as they are."""
    if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(value))


def tf_shape(shape: Sequence[int]) -> list[int]:
    return [shape[2], shape[3], shape[1], shape[0]] if len(shape) == 4 else list(shape)


def _released_shapes() -> dict[str, list[int]]:
    from fusion.models import build_model

    return {k: list(v.shape) for k, v in build_model("cadnif", VARIANT, released=True).state_dict().items()}


def is_ignored(name: str) -> bool:
    return name.startswith(DEAD_PREFIXES) or any(m in name for m in OPTIMISER_MARKERS)


@register_importer(
    "cadnif",
    ("PREFIX",),
    help="the authors' TensorFlow 1 checkpoint: its prefix (.../model-11) or its .index file; the .index "
    "and .data-00000-of-00001 are read without TensorFlow",
)
def read_cadnif(files: Sequence[Path]) -> Imported:
    prefix = resolve_prefix(files[0])
    index = prefix.with_name(prefix.name + ".index")
    tensors = read_checkpoint(prefix)
    ignored = sorted(k for k in tensors if is_ignored(k))
    live = {k: v for k, v in tensors.items() if k not in ignored}
    shapes = _released_shapes()
    names = name_map()
    expected = {names[k]: tf_shape(s) for k, s in shapes.items() if not k.endswith("num_batches_tracked")}
    check_layout(index, live, expected, "CADNIF released model")
    wrong = [k for k, v in live.items() if v.dtype != np.float32]
    if wrong:
        raise DataError(f"{index}: not float32: {', '.join(wrong[:4])}")
    state: dict[str, torch.Tensor] = {}
    for key in shapes:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        else:
            state[key] = to_torch(live[names[key]])
    dead = [k for k in ignored if k.startswith(DEAD_PREFIXES)]
    notes = [
        f"{len(dead)} variables of the two dense blocks DRDB1/DRDB2 (merging/dilation1_*, dilation2_*) ignored: "
        "the trained graph never uses their output",
        (
            f"{len(ignored) - len(dead)} optimiser variables (Adam slots, beta powers, global step) ignored"
            if len(ignored) > len(dead)
            else "no optimiser variables in the file (the authors' Saver kept the model's only)"
        ),
        "theta/phi/g of the non-local branch imported at their untrained initial values: the trained graph "
        "computes that attention but nothing consumes it (released: x + BN(W x_other))",
        "the non-local BNs' moving statistics were never updated (0 and 1 in the file); the other BNs' are "
        "the training's, but the released model normalises on each image's own statistics",
    ]
    return Imported(
        variant=VARIANT, state_dict=state, model_options={"released": True}, task="ir-vis", ignored=ignored, notes=notes
    )


__all__ = ["name_map", "read_cadnif", "to_torch", "tf_shape"]
