"""Run a trained model on images: load it from a checkpoint or an MLflow URI, fuse any colour.

Colour follows the field's convention: a model trained on gray images fuses the Y channel
of YCrCb and the chroma is put back from the colour sources; a model trained on RGB gets
gray sources repeated to three channels. The output is gray only when every source is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from fusion.checkpoint import inference_payload, model_from_checkpoint, resolve_checkpoint
from fusion.device import autocast_dtype, in_layout, inference_precision, memory_format
from fusion.errors import DataError
from fusion.models import MODELS, checkpoint_stage

log = logging.getLogger(__name__)


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint payload). Checkpoints load as data only."""
    path = resolve_checkpoint(spec)
    model, payload = model_from_checkpoint(path, device)  # eval mode, in the layout it trained in
    stage = checkpoint_stage(payload)
    if not stage.fuses:
        nxt = [s.name for s in MODELS[payload["model"]].stages(payload["variant"]) if s.starts_from == stage.name]
        raise DataError(
            f"--model {spec}: a {model_label(payload, variant=False)} {stage.label or stage.name} checkpoint "
            f"does not fuse; train the {' or '.join(nxt)} stage from it (train.init_from={spec}) and use "
            "that checkpoint"
        )
    return model, inference_payload(payload, path)


def prepare_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """A freshly built model in eval mode and the layout it runs fastest in (channels-last for
    pure convolution stacks such as UFA-Fuse; measured in benchmarks/bench_models.py), as
    model_from_checkpoint returns a loaded one."""
    return in_layout(model.eval())


def model_label(payload: dict, variant: bool = True) -> str:
    """How tables and logs name a checkpoint's model: "UFA-Fuse (UFA)", "CADNIF (..., released)"."""
    spec = MODELS.get(payload.get("model", ""))
    name = spec.display_name if spec else payload.get("model", "model")
    if not variant:
        return name
    tag = str(payload.get("variant") or "")
    paper = spec.variants.get(tag, tag) if spec else tag
    if (payload.get("model_options") or {}).get("released"):
        paper = f"{paper}, released" if paper else "released"
    return f"{name} ({paper})" if paper else name


def _is_colour(img: np.ndarray) -> bool:
    if img.ndim == 2:
        return False
    return not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def fuse_chroma(ycrcb: Sequence[np.ndarray], rows: int = 256) -> np.ndarray:
    """Cr, Cb of the fused image: each source's chroma weighted by its distance from neutral
    (128). A gray source has neutral chroma and weight 0, so an IR + colour-VIS pair keeps
    the visible image's colours; where every source is neutral the result is neutral.
    Computed `rows` rows at a time: the float64 stacks would be 32 bytes a pixel per source."""
    h, w = ycrcb[0].shape[:2]
    out = np.empty((h, w, 2), np.uint8)
    for y in range(0, h, rows):
        chroma = np.stack([s[y : y + rows, :, 1:].astype(np.float64) for s in ycrcb])  # K x rows x W x 2
        weight = np.abs(chroma - 128.0)
        total = weight.sum(axis=0)
        mixed = np.where(total > 0, (chroma * weight).sum(axis=0) / np.where(total > 0, total, 1.0), 128.0)
        out[y : y + rows] = np.clip(np.floor(mixed + 0.5), 0, 255)
    return out


def _max_inputs(model: torch.nn.Module) -> int:
    return getattr(model, "num_inputs", 2)


def _array_bytes(h: int, w: int, sources: int) -> int:
    """The full-resolution uint8 arrays fuse() allocates besides the sources: a YCrCb or RGB
    copy of each, the fused image, its chroma and colour conversions, the pairwise result."""
    return h * w * (3 * sources + 14)


def check_fits(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    device: str | torch.device = "cpu",
    precision: str = "float32",
    tile: str | int | None = "auto",
    max_memory: str | int | None = None,
) -> None:
    """Refuse images that cannot be fused within the memory budget before decoding them, from
    their headers' sizes (read_image holds each as 3 bytes a pixel). No-op where Pillow cannot
    read a header, or the sizes differ (fuse() names that)."""
    try:
        from PIL import Image
    except ImportError:
        return
    sizes = set()
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # a size check, not a decode
    try:
        for p in paths:
            with Image.open(p) as im:
                sizes.add(im.size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if len(sizes) != 1:
        return
    w, h = sizes.pop()
    _plan(model, (h, w), len(paths), torch.device(device), precision, tile, max_memory, extra=3 * h * w * len(paths))


def _plan(model, shape, sources: int, device: torch.device, precision: str, tile, max_memory, extra: int = 0):
    from fusion.tiling import parse_memory, parse_tile, plan
    from fusion.tiling_rules import rule_for

    dtype = autocast_dtype(precision, device)
    with torch.inference_mode(), inference_precision(device, dtype):
        return plan(
            model,
            rule_for(model),
            shape,
            min(_max_inputs(model), sources),
            getattr(model, "in_channels", 3),
            device,
            parse_tile(tile),
            parse_memory(max_memory),
            arrays=_array_bytes(shape[0], shape[1], sources) + extra,
        )


@torch.inference_mode()
def fuse(
    model: torch.nn.Module,
    sources: Sequence[np.ndarray],
    device: str | torch.device = "cpu",
    precision: str = "float32",
    tile: str | int | None = "auto",
    max_memory: str | int | None = None,
    progress=False,
) -> np.ndarray:
    """Fuse uint8 source images (H x W or H x W x 3 RGB, same size) with `model`.

    More sources than the model takes (a multi-exposure sequence) are fused pairwise from
    left to right: F = f(...f(f(x1, x2), x3)..., xK); the papers' models are all trained
    on pairs. Raises DataError when the model returns NaN or inf (a diverged checkpoint),
    rather than letting the uint8 conversion hide it. precision bfloat16 (CPU or GPU) or
    float16 (GPU) runs the model under autocast: faster where the hardware has those
    types, with outputs a few gray levels from float32's at most; float32 is IEEE float32 on
    a GPU too (no TF32: fusion.device.ieee_float32), so it matches the CPU's output.

    tile: "auto" fuses the whole image when it fits in max_memory (bytes or "4GB"; default:
    most of the free RAM) and overlapping tiles otherwise, None the whole image, an int
    tiles of that side (fusion/tiling.py); tiled results are the untiled ones within a gray
    level. What cannot fit is refused (DataError) before the model runs. progress: True (or
    a rich Console) for a tiles-done bar on stderr once a fusion takes more than a few seconds.
    """
    from fusion.tiling_progress import TileProgress

    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    if len(sources) < 2:
        raise DataError(f"fusion needs at least 2 source images, got {len(sources)}")
    shapes = {s.shape[:2] for s in sources}
    if len(shapes) != 1:
        raise DataError(f"sources differ in size: {[s.shape[:2] for s in sources]}")
    k = _max_inputs(model)
    plan = _plan(model, sources[0].shape[:2], len(sources), device, precision, tile, max_memory)
    steps = 1 + max(0, len(sources) - k)
    console = None if isinstance(progress, bool) else progress
    with (
        TileProgress(plan.passes * steps, enabled=bool(progress), console=console) as bar,
        inference_precision(device, dtype),
    ):
        fused = _fuse_once(model, sources[:k], plan, device, bar)
        for s in sources[k:]:
            fused = _fuse_once(model, [fused, s], plan, device, bar)
    return fused


def _fuse_once(model: torch.nn.Module, sources: Sequence[np.ndarray], plan, device: torch.device, bar) -> np.ndarray:
    from fusion.tiling import run

    in_channels = getattr(model, "in_channels", 3)
    colour = [s.ndim == 3 and _is_colour(s) for s in sources]
    if in_channels == 1:
        ycrcb = [
            cv2.cvtColor(s if s.ndim == 3 else np.repeat(s[..., None], 3, 2), cv2.COLOR_RGB2YCrCb) for s in sources
        ]
        planes = [y[..., 0] for y in ycrcb]
    else:
        planes = [s if s.ndim == 3 else np.repeat(s[..., None], 3, 2) for s in sources]
    # inputs in the model's layout: no reorder before the first conv
    fused = run(model, planes, plan, device, memory_format(model), bar)
    if in_channels == 1:
        if not any(colour):
            return fused if fused.ndim == 2 else fused[..., 0]
        y = fused if fused.ndim == 2 else fused[..., 0]
        return cv2.cvtColor(np.dstack([y, fuse_chroma(ycrcb)]), cv2.COLOR_YCrCb2RGB)
    if not any(colour) and fused.ndim == 3:
        return cv2.cvtColor(fused, cv2.COLOR_RGB2GRAY)
    return fused
