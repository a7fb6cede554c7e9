"""`fusion fuse`: image files in, one fused PNG out, with a trained model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion.errors import FusionError


@dataclass(frozen=True)
class FusedFile:
    label: str  # the model, as model_label names it
    device: torch.device
    seconds: float  # the fusion alone: not loading the model, decoding or writing


def check_out(images: Sequence[Path], out: Path, overwrite: bool) -> None:
    """Refuse an --out that would lose data or alter the fused values, before any work."""
    if len(images) < 2:
        raise FusionError(f"give at least 2 images to fuse, got {len(images)}")
    if out.suffix.lower() != ".png":
        raise FusionError(f"--out {out}: write a .png (lossless); other formats would alter the fused values")
    for k, src in enumerate(images, 1):
        if out.exists() and src.exists() and out.resolve() == src.resolve():
            raise FusionError(f"--out {out}: is source image {k}; write the fused image to another file")
    if out.exists() and not overwrite:
        raise FusionError(f"--out {out}: already exists; pass --overwrite to replace it")


def fuse_files(
    images: Sequence[Path],
    model: str,
    out: Path,
    device: str = "auto",
    precision: str = "float32",
    overwrite: bool = False,
    tile: str = "auto",
    max_memory: str | None = None,
    progress: bool = False,
) -> FusedFile:
    from fusion.device import autocast_dtype, pick_device
    from fusion.inference import check_fits, fuse, load_model, model_label
    from fusion.io import read_image, write_image
    from fusion.tiling import parse_memory, parse_tile

    check_out(images, out, overwrite)
    dev = pick_device(device)
    autocast_dtype(precision, dev, "--precision")  # refuse a bad value before loading anything
    tile_side, budget = parse_tile(tile), parse_memory(max_memory)
    net, payload = load_model(model, dev)
    check_fits(net, images, dev, precision, tile_side, budget)  # from the headers, before decoding
    sources = [read_image(p) for p in images]
    start = time.perf_counter()
    fused = fuse(net, sources, dev, precision, tile_side, budget, progress=progress)
    seconds = time.perf_counter() - start
    write_image(out, fused)
    return FusedFile(model_label(payload), dev, seconds)
