"""Fusion in overlapping tiles under a memory budget (`fusion fuse --tile/--max-memory`).

A fused pixel depends only on the source pixels within the model's receptive field, so a
tile that carries that much context (its halo) on every side gives exactly the untiled
pixels in its centre, and the centres are cropped and laid side by side; nothing is blended.
What is not local (UFA-Fuse's channel means, CrossFuse's attention windows and min-max
output, CADNIF's non-local tiles) is handled by a rule per model (fusion/tiling_rules.py);
a model whose result needs whole-image statistics on every layer is fused whole or refused.

Memory is estimated before anything large is allocated: the model runs once on a small
probe tile under a dispatch mode that records the peak of live tensor storage (and the
receptive field of its convolutions and pools); that cost per pixel, the full-resolution
images fuse() holds and the process's own memory must stay under the budget.
"""

from __future__ import annotations

import os
import re
import weakref
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fusion.data.dataset import to_image, to_tensor
from fusion.errors import ConfigError, DataError

GB = 1024**3
# The probe counts live tensors; kernels' scratch space and the allocator add to that (RSS
# of a tiled 12 MP UFA-Fuse fusion: 1.25x the count), hence the margin.
SLACK = 1.5
FIXED_SLACK = 128 * 2**20
MIN_TILE = 32
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": GB, "GB": GB, "T": 2**40, "TB": 2**40}


def parse_memory(text: str | int | None, key: str = "--max-memory") -> int | None:
    """Bytes of '4GB', '512MB', '1.5G' or a plain number of bytes (binary units)."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", str(text).upper().replace("I", ""))
    if not m:
        raise ConfigError(f"{key} {text}: give a size such as 4GB, 512MB or 2.5G")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size < 2**20:
        raise ConfigError(f"{key} {text}: too small to fuse anything; give at least 1MB (e.g. 4GB)")
    return size


def parse_tile(text: str | int | None, key: str = "--tile") -> str | int | None:
    """'auto', 'none' (whole image) or the side of a tile in pixels."""
    if text is None or isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif str(text).strip().lower() in ("auto", "none"):
        return None if str(text).strip().lower() == "none" else "auto"
    else:
        try:
            value = int(str(text))
        except ValueError:
            raise ConfigError(f"{key} {text}: use auto, none or a tile side in pixels (e.g. 1024)") from None
    if value is not None and value < MIN_TILE:
        raise ConfigError(f"{key} {text}: a tile side must be at least {MIN_TILE} pixels")
    return value


def format_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 2**20:.0f} MB"


def current_rss() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0


def available_memory() -> int | None:
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return None


def default_budget() -> int:
    """This process plus three quarters of the memory still available, else 4 GB."""
    free = available_memory()
    return current_rss() + int(0.75 * free) if free else 4 * GB


# ------------------------------------------------------------------ what a model costs


@dataclass
class Cost:
    """Bytes: whole image = whole_const + whole_bpp * pixels; tiled = tile_const + tile_bpp *
    (tile pixels, halo included) + image_bpp * image pixels (what a tiled run keeps whole)."""

    whole_bpp: float
    halo: int = 0
    whole_const: float = 0.0
    tile_bpp: float | None = None
    tile_const: float = 0.0
    image_bpp: float = 0.0
    note: str | None = None  # a probe's reason why this model cannot be tiled after all

    def tiled(self, tile_px: float, image_px: float) -> float:
        bpp = self.whole_bpp if self.tile_bpp is None else self.tile_bpp
        return SLACK * (self.tile_const + bpp * tile_px) + self.image_bpp * image_px


_COSTS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def cost_of(rule, model, n_inputs: int, channels: int, device: torch.device) -> Cost:
    """The rule's measurement, once per model and input layout (evaluation fuses many pairs)."""
    key = (
        n_inputs,
        channels,
        device.type,
        torch.is_autocast_enabled(device.type),
        torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None,
    )
    per_model = _COSTS.setdefault(model, {})
    if key not in per_model:
        per_model[key] = rule.measure(model, n_inputs, channels, device)
    return per_model[key]


# ------------------------------------------------------------------ tile layout and plan


@dataclass(frozen=True)
class Tile:
    y0: int  # input region (kept region plus halo, clipped to the image)
    y1: int
    x0: int
    x1: int
    ky0: int  # kept region, image coordinates
    ky1: int
    kx0: int
    kx1: int

    def crop(self, t: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """The kept part of a tensor computed on this tile's input region (at 1/scale)."""
        return t[
            ...,
            (self.ky0 - self.y0) // scale : (self.ky1 - self.y0) // scale,
            (self.kx0 - self.x0) // scale : (self.kx1 - self.x0) // scale,
        ]


def _spans(length: int, side: int, halo: int, align: int) -> list[tuple[int, int, int, int]]:
    if side >= length:
        return [(0, length, 0, length)]
    spans = []
    for k0 in range(0, length, side):
        k1 = min(k0 + side, length)
        # a short last tile reaches further back (more context is harmless; origins stay aligned)
        i0 = max(0, min(k0 - halo, (length - side - 2 * halo) // align * align))
        spans.append((i0, min(length, k1 + halo), k0, k1))
    return spans


def layout(h: int, w: int, side: int | None, halo: int, align: int = 1) -> list[Tile]:
    if side is None:
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    return [
        Tile(y0, y1, x0, x1, ky0, ky1, kx0, kx1)
        for (y0, y1, ky0, ky1) in _spans(h, side, halo, align)
        for (x0, x1, kx0, kx1) in _spans(w, side, halo, align)
    ]


class Rule(Protocol):
    """How one model is measured, laid out and run (the rules live in fusion/tiling_rules.py)."""

    align: int

    def reason_for(self, model, shape) -> str | None: ...

    def layout(self, shape: tuple[int, int], side: int | None, halo: int) -> list[Tile]: ...

    def passes(self, model, tiles: int) -> int: ...

    def measure(self, model, n: int, channels: int, device) -> Cost: ...

    def run(self, model, planes, plan: Plan, device, fmt, progress) -> np.ndarray: ...


@dataclass
class Plan:
    shape: tuple[int, int]
    side: int | None  # kept tile side; None = the whole image in one call
    halo: int
    tiles: list[Tile]
    rule: Rule
    cost: Cost
    need: int  # estimated peak bytes of the process
    budget: int
    model_bytes: int  # the part of `need` for tensors (what the model runs on)
    passes: int = 1  # progress steps: tiles times the model's passes over them


def plan(
    model,
    rule,
    shape: tuple[int, int],
    n_inputs: int,
    channels: int,
    device: torch.device,
    tile: str | int | None = "auto",
    max_memory: int | None = None,
    arrays: int = 0,
) -> Plan:
    """Choose whole image or tiles so the estimated peak stays under max_memory (bytes; default:
    this process plus most of the free RAM). `arrays`: the full-resolution images the caller
    will allocate. Raises DataError naming the sizes when nothing fits."""
    h, w = shape
    px = h * w
    given = max_memory is not None
    budget = max_memory if max_memory is not None else default_budget()
    base = current_rss() + arrays + FIXED_SLACK
    cost = cost_of(rule, model, n_inputs, channels, device)
    whole = int(base + SLACK * (cost.whole_const + cost.whole_bpp * px))
    limit = (
        f"--max-memory {format_bytes(budget)}"
        if given
        else f"the memory available ({format_bytes(budget)}; see --max-memory)"
    )
    what = f"fusing {w}x{h} with {type(model).__name__}"
    images = f" (this process {format_bytes(base - arrays - FIXED_SLACK)}, full-size images {format_bytes(arrays)})"
    reason = rule.reason_for(model, shape) or cost.note
    gpu = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    halo = cost.halo

    def fits(side: int | None) -> tuple[bool, int]:
        if side is None:
            need, dev = whole, whole - base
        else:
            span = min(h, side + 2 * halo) * min(w, side + 2 * halo)
            dev = int(cost.tiled(span, px))
            need = int(base + dev)
        if gpu is not None:  # the model's memory is on the GPU, the images stay on the host
            return dev <= 0.9 * gpu and base <= budget, need
        return need <= budget, need

    if tile == "auto" or tile is None:
        ok, need = fits(None)
        if ok or tile is None:
            if not ok:
                hint = f"this model cannot be tiled ({reason})" if reason else "use --tile auto"
                raise DataError(
                    f"{what} needs ~{format_bytes(need)} as one tile (--tile none){images}, above {limit}; "
                    f"{hint} or raise --max-memory"
                )
            return _made(model, rule, shape, None, 0, cost, need, budget, base)
        if reason:
            raise DataError(
                f"{what} needs ~{format_bytes(need)} as one tile{images}, above {limit}, and this model "
                f"cannot be tiled: {reason}"
            )
        side = _largest_side(fits, rule.align, max(h, w), halo)
        if side is None:
            _, need = fits(max(MIN_TILE, rule.align))
            raise DataError(
                f"{what} needs ~{format_bytes(need)} even in {max(MIN_TILE, rule.align)}-px tiles, "
                f"~{format_bytes(whole)} whole{images}, above {limit}"
            )
    else:
        if reason:
            raise DataError(
                f"--tile {tile}: {type(model).__name__} cannot be tiled ({reason}); use --tile auto or none"
            )
        if not isinstance(tile, int):  # parse_tile gives "auto", None or a side in pixels
            raise ConfigError(f"--tile {tile}: use auto, none or a tile side in pixels (e.g. 1024)")
        side = -(-tile // rule.align) * rule.align
        ok, need = fits(side if side < max(h, w) else None)
        if not ok:
            raise DataError(
                f"{what} needs ~{format_bytes(need)} at tile {side} px{images}, above {limit}; use a smaller "
                f"--tile or --tile auto"
            )
        if side >= max(h, w):
            return _made(model, rule, shape, None, 0, cost, need, budget, base)
    return _made(model, rule, shape, side, halo, cost, fits(side)[1], budget, base)


def _made(model, rule, shape, side, halo, cost, need, budget, base) -> Plan:
    tiles = rule.layout(shape, side, halo)
    return Plan(shape, side, halo, tiles, rule, cost, need, budget, need - base, passes=rule.passes(model, len(tiles)))


def _largest_side(fits, align: int, longest: int, halo: int) -> int | None:
    lo = max(MIN_TILE, align) // align
    hi = max(lo, -(-longest // align))
    if not fits(lo * align)[0]:
        return None
    while lo < hi:  # the largest kept side (a multiple of align) that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid * align)[0] else (lo, mid - 1)
    return lo * align


# ------------------------------------------------------------------ running


class Output:
    """The fused uint8 image, written tile by tile (allocated when the first tile says its channels)."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.image: np.ndarray | None = None

    def put(self, tile: Tile, t: torch.Tensor) -> None:
        """t: C x h x w float in [0, 1], the kept part of the tile."""
        t = t.float()
        if not torch.isfinite(t).all():
            raise DataError("the model's output contains NaN or inf (diverged or corrupt checkpoint?)")
        part = to_image(t)
        if self.image is None:
            self.image = np.empty(self.shape + part.shape[2:], np.uint8)
        self.image[tile.ky0 : tile.ky1, tile.kx0 : tile.kx1] = part

    def fused(self) -> np.ndarray:
        """The finished image; every layout has at least one tile, so one was put."""
        if self.image is None:
            raise RuntimeError("no tile was fused into this output (an empty tile layout)")
        return self.image


def tile_inputs(planes, tile: Tile, device, fmt=torch.contiguous_format) -> list[torch.Tensor]:
    return [
        to_tensor(p[tile.y0 : tile.y1, tile.x0 : tile.x1])[None].to(device).contiguous(memory_format=fmt)
        for p in planes
    ]


def run_tiles(model, planes, tiles: list[Tile], device, fmt, progress, out: Output | None = None) -> Output:
    """The model on each tile; the kept centres go into `out`."""
    out = out or Output(planes[0].shape[:2])
    for tile in tiles:
        fused = model(*tile_inputs(planes, tile, device, fmt))
        out.put(tile, tile.crop(fused[0]))
        progress.advance()
    return out


def run(model, planes, p: Plan, device, fmt, progress) -> np.ndarray:
    try:
        return p.rule.run(model, planes, p, device, fmt, progress)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise DataError(
            f"out of memory fusing {p.shape[1]}x{p.shape[0]} ({'whole' if p.side is None else f'tile {p.side} px'}, "
            f"estimated {format_bytes(p.need)}): give a smaller --max-memory or --tile"
        ) from exc
