"""How each model is tiled so that the tiles give the untiled image (fusion/tiling.py).

- Local: convolutions only (CADNIF's ablations without the non-local branch, UFA-Fuse
  without channel attention): the halo is the receptive radius counted by tiling.Probe.
- ChannelMeans (UFA-Fuse, paper and released): channel attention weighs each input by a
  softmax of its features' means over the whole image; a first pass over the tiles sums the
  features, the second runs each tile with the whole image's weights in place of its own.
- CADNIFWindows: in paper mode CADNIF fuses big images in 132x132 windows keeping the
  central 120x120, on a grid from the image's corner: tiles start on that grid and carry one
  whole window of context, so every window a tile keeps sees exactly what it saw untiled.
- CrossFuseStaged: the CAM attends within 32x32 windows of the 1/8 deep map, and the
  shifted stage rolls the whole map (its edge windows wrap round to the opposite edge), so
  image tiles cannot reproduce it; instead the encoders run on tiles, the CAM on the whole
  deep map (1/64 of the pixels) a few windows at a time, and the decoder on tiles again.
  The released min-max output is taken over the assembled image.
- Whole: results that depend on whole-image statistics at every layer (batch-statistics
  BatchNorm, min-max output of CADNIF's published graph) are fused whole or refused.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import numpy as np
import torch

from fusion.device import memory_format
from fusion.tiling import Cost, Output, Tile, layout, run_tiles, tile_inputs
from fusion.tiling_probe import measure, random_planes

PROBE = 64  # side of the probe tile of fully convolutional models
CAM_CHUNK = 8  # CrossFuse windows attended at once
STAGED_IMAGE_BPP = 128  # bytes per image pixel CrossFuse's staged run keeps whole (measured: ~100)


def _ceil(x: float, m: int) -> int:
    return int(math.ceil(x / m)) * m


class Local:
    """A fully convolutional model; also the interface of every rule (fusion.tiling.plan/run)."""

    align = 1
    reason: str | None = None
    expected_global: frozenset[str] = frozenset()

    def reason_for(self, model, shape) -> str | None:
        return self.reason

    def layout(self, shape: tuple[int, int], side: int | None, halo: int) -> list[Tile]:
        return layout(*shape, side, halo, self.align)

    def passes(self, model, tiles: int) -> int:
        return tiles

    def measure(self, model, n: int, channels: int, device) -> Cost:
        fmt = memory_format(model)
        p = measure(model, lambda: random_planes(n, channels, PROBE, PROBE, device, fmt), PROBE)
        unexpected = p.global_ops - self.expected_global
        note = f"it computes {', '.join(sorted(unexpected))} over the whole image" if unexpected else None
        return Cost(whole_bpp=p.peak / PROBE**2, halo=_ceil(p.radius + 1, 8), note=note)

    def run(self, model, planes, plan, device, fmt, progress) -> np.ndarray:
        return run_tiles(model, planes, plan.tiles, device, fmt, progress).fused()


class Whole(Local):
    def __init__(self, reason: str):
        self.reason = reason

    def measure(self, model, n, channels, device) -> Cost:
        cost = super().measure(model, n, channels, device)
        cost.note = None
        return cost


class _Collected(Exception):
    """Stops a first-pass forward once the features it needs are in."""


class ChannelMeans(Local):
    expected_global = frozenset({"mean"})

    def __init__(self, released: bool):
        self.released = released

    def passes(self, model, tiles: int) -> int:
        return tiles if tiles == 1 else 2 * tiles

    def _features(self, model, inputs) -> list[torch.Tensor]:
        """The features channel attention pools: UFA's backbone output per input, or the
        released block's first conv output per input."""
        got: list[torch.Tensor] = []
        if self.released:

            def hook(module, args, out):
                got.append(out)
                if len(got) == 2:
                    raise _Collected

            handle = model.sc4.conv1.register_forward_hook(hook)
        else:

            def pre_hook(module, args):
                got.extend(args[0])
                raise _Collected

            handle = model.ufa.register_forward_pre_hook(pre_hook)
        try:
            model(*inputs)
        except _Collected:
            pass
        finally:
            handle.remove()
        return got

    @contextlib.contextmanager
    def _weights(self, model, means: torch.Tensor):
        """Channel attention with the whole image's means (K x B x C) instead of the tile's."""
        if self.released:
            from fusion.models.ufa_released import channel_masks

            block, calls = model.sc4, [0]

            def reset(module, args):
                calls[0] = 0

            def hook(module, args, out):
                m = means.to(out.dtype)[..., None, None]
                mask = channel_masks(m[0], m[1])[calls[0] % 2]
                calls[0] += 1
                return mask * out

            handles = [block.register_forward_pre_hook(reset), block.conv1.register_forward_hook(hook)]
        else:
            block = model.ufa

            def pre_hook(module, args):
                feats = args[0]
                weights = torch.softmax(means.to(feats[0].dtype)[..., None, None], dim=0)
                return ([w * f for w, f in zip(weights, feats)],)

            handles = [block.register_forward_pre_hook(pre_hook)]
        block.channel = False
        try:
            yield
        finally:
            block.channel = True
            for handle in handles:
                handle.remove()

    def run(self, model, planes, plan, device, fmt, progress) -> np.ndarray:
        if len(plan.tiles) == 1:
            return super().run(model, planes, plan, device, fmt, progress)
        sums = None
        for tile in plan.tiles:
            feats = self._features(model, tile_inputs(planes, tile, device, fmt))
            part = torch.stack([tile.crop(f).double().sum(dim=(-2, -1)) for f in feats])
            sums = part if sums is None else sums + part
            progress.advance()
        with self._weights(model, sums / (plan.shape[0] * plan.shape[1])):
            return run_tiles(model, planes, plan.tiles, device, fmt, progress).fused()


class CADNIFWindows(Local):
    """The model's own window loop (CADNIF.fuse_pair), run here window by window from the
    uint8 planes: the same windows, with the model's padding, but no float copy of the
    whole image, and a window count for the progress bar."""

    def __init__(self):
        from fusion.models.cadnif import TILE, TILE_BORDER

        self.window, self.border = TILE, TILE_BORDER
        self.align = TILE - 2 * TILE_BORDER

    def _windows(self, shape) -> list[tuple[int, int]]:
        h, w = shape
        return [
            (y, x)
            for y in range(0, h + (-h) % self.align, self.align)
            for x in range(0, w + (-w) % self.align, self.align)
        ]

    def layout(self, shape: tuple[int, int], side: int | None, halo: int) -> list[Tile]:
        h, w = shape
        if h <= self.window and w <= self.window:  # fused whole by the model too
            return layout(h, w, None, 0)
        s = self.align
        return [
            Tile(y, y + self.window, x, x + self.window, y, min(y + s, h), x, min(x + s, w))
            for y, x in self._windows(shape)
        ]

    def measure(self, model, n, channels, device) -> Cost:
        s = self.window
        p = measure(model, lambda: random_planes(n, channels, s, s, device), s)
        # one window's working set; whole-image arrays: the padded uint8 planes and the output
        return Cost(whole_bpp=n + 2, whole_const=p.peak, halo=0)

    def run(self, model, planes, plan, device, fmt, progress) -> np.ndarray:
        if len(plan.tiles) == 1:
            return super().run(model, planes, plan, device, fmt, progress)
        (h, w), b, s = plan.shape, self.border, self.align
        pad_h, pad_w = (b, b + (-h) % s), (b, b + (-w) % s)
        # the model's rule (fusion.models.cadnif.tiled): reflect unless the image is too small for it
        mode: Literal["reflect", "edge"] = "reflect" if min(h, w) > b + max(pad_h + pad_w) else "edge"
        padded = [np.pad(p, (pad_h, pad_w), mode=mode) for p in planes]
        out = Output(plan.shape)
        for tile in plan.tiles:  # y0, x0: the window's corner in the padded planes
            fused = model.fuse_pair(*tile_inputs(padded, tile, device))[0]
            out.put(tile, fused[:, b : b + tile.ky1 - tile.ky0, b : b + tile.kx1 - tile.kx0])
            progress.advance()
        return out.fused()


class CrossFuseStaged(Local):
    align = 8

    def reason_for(self, model, shape) -> str | None:
        if model.released_sizing and (shape[0] % 8 or shape[1] % 8 or min(shape) < 16):
            return (
                "the released sizing (pooling rounded down, output centre-padded) shifts sides that are not "
                "multiples of 8; train.options.fix_odd_sizes lifts it"
            )
        return None

    def layout(self, shape: tuple[int, int], side: int | None, halo: int) -> list[Tile]:
        return layout(*shape, None, 0) if side is None else layout(*_padded(shape), side, halo, self.align)

    def passes(self, model, tiles: int) -> int:
        return tiles if tiles == 1 else 2 * tiles + 1

    def measure(self, model, n, channels, device) -> Cost:
        s, d = PROBE, PROBE // 8
        enc = measure(model.encoders["ir"].encoder, lambda: random_planes(1, channels, s, s, device), s)

        def decoder_inputs():
            fused, de_ir, de_vi = random_planes(3, 128, d, d, device)
            sh_ir, sh_vi = random_planes(2, 32, s, s, device)
            return fused, {"ir": sh_ir, "vi": sh_vi}, {"ir": de_ir, "vi": de_vi}

        dec = measure(model.decoder, decoder_inputs, s)
        cam = 0
        if _is_cam(model):
            w = model.window
            cam = measure(model.fusion, lambda: random_planes(2, 128, w, w, device), w * 8).peak
        tile_bpp = max(enc.peak + 2 * 4 * s * s, dec.peak) / s**2
        # whole image: the worst stage plus what lives across stages (both shallow skips, 32
        # float channels each, the deep maps) and the CAM over every window at once
        whole_bpp = tile_bpp + 2 * 32 * 4 + 32 + cam / (model.window * 8) ** 2
        return Cost(
            whole_bpp=whole_bpp,
            halo=_ceil(max(enc.radius, dec.radius) + 8, 8),
            tile_bpp=tile_bpp,
            tile_const=CAM_CHUNK * cam,
            image_bpp=STAGED_IMAGE_BPP,
        )

    def run(self, model, planes, plan, device, fmt, progress) -> np.ndarray:
        if plan.side is None:
            return super().run(model, planes, plan, device, fmt, progress)
        from fusion.models.crossfuse import MODALITIES, pad_to_multiple

        h, w = plan.shape
        hp, wp = _padded(plan.shape)
        # the model's own first step: reflect-pad to a multiple of 8 (replicate when too small)
        mode: Literal["reflect", "edge"] = "reflect" if hp - h < h and wp - w < w else "edge"
        padded = [np.pad(p, ((0, hp - h), (0, wp - w)), mode=mode) for p in planes]
        deep = {}
        for tile in plan.tiles:
            for m, x in zip(MODALITIES, tile_inputs(padded, tile, device)):
                part = tile.crop(model.encoders[m].encoder(x)[1], 8)
                if m not in deep:
                    deep[m] = part.new_empty(part.shape[:2] + (hp // 8, wp // 8))
                deep[m][..., tile.ky0 // 8 : tile.ky1 // 8, tile.kx0 // 8 : tile.kx1 // 8] = part
            progress.advance()
        if _is_cam(model):
            win = model.window
            fused = _cam_in_chunks(model.fusion, pad_to_multiple(deep["ir"], win), pad_to_multiple(deep["vi"], win))
            fused = fused[..., : hp // 8, : wp // 8]
        else:
            fused = model.fusion(deep["ir"], deep["vi"])
        progress.advance()
        raw: torch.Tensor | None = None
        for tile in plan.tiles:
            sh = {
                m: model.encoders[m].encoder.shallow(x) for m, x in zip(MODALITIES, tile_inputs(padded, tile, device))
            }
            cut = (slice(None), slice(None), slice(tile.y0 // 8, tile.y1 // 8), slice(tile.x0 // 8, tile.x1 // 8))
            part = tile.crop(model.decoder(fused[cut], sh, {m: deep[m][cut] for m in MODALITIES}))
            if raw is None:  # float32: the released output is min-max scaled over the whole image
                raw = torch.empty(part.shape[:2] + (hp, wp), dtype=torch.float32)
            raw[..., tile.ky0 : tile.ky1, tile.kx0 : tile.kx1] = part.float().cpu()
            progress.advance()
        del deep, fused
        if raw is None:
            raise RuntimeError("no tile was decoded (an empty tile layout)")
        out = Output(plan.shape)
        out.put(Tile(0, h, 0, w, 0, h, 0, w), model._output(raw[..., :h, :w])[0])
        return out.fused()


def _padded(shape) -> tuple[int, int]:
    return max(-(-shape[0] // 8) * 8, 16), max(-(-shape[1] // 8) * 8, 16)


def _is_cam(model) -> bool:
    from fusion.models.crossfuse import CrossAttentionMechanism

    return isinstance(model.fusion, CrossAttentionMechanism)


def _cam_in_chunks(cam, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """CrossAttentionMechanism.forward, CAM_CHUNK windows at a time: every block is
    window-local (the batch dimension is the windows); only the shift rolls the whole map."""
    from fusion.models.crossfuse_cam import _from_tokens, _from_windows, _to_tokens, _to_windows

    b, c, h, w = ir.shape
    p, win, shape = cam.patch, cam.window, (b, h, w)

    def blocks(stack, xw: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(xw)
        for i in range(0, len(xw), CAM_CHUNK):
            t = _to_tokens(xw[i : i + CAM_CHUNK], p)
            for blk in stack:
                t = blk(t)
            out[i : i + CAM_CHUNK] = _from_tokens(t, p, c, win)
        return out

    tok = {}
    for m, x in (("ir", ir), ("vi", vi)):
        xw = blocks(cam.sa1[m], _to_windows(x, win))
        if cam.shifting():
            xw = cam._roll(xw, -1, shape)
        xw = blocks(cam.sa2[m], xw)
        tok[m] = cam._roll(xw, 1, shape) if cam.shifting() else xw
    fused = torch.empty_like(tok["ir"])
    for i in range(0, len(fused), CAM_CHUNK):
        t_ir, t_vi = _to_tokens(tok["ir"][i : i + CAM_CHUNK], p), _to_tokens(tok["vi"][i : i + CAM_CHUNK], p)
        both = cam.cross_branch(t_ir, t_vi, "ir") + cam.cross_branch(t_vi, t_ir, "vi")
        fused[i : i + CAM_CHUNK] = _from_tokens(both, p, c, win)
    return _from_windows(fused, win, b, h, w)


def rule_for(model) -> Local:
    from fusion.models.cadnif import CADNIF
    from fusion.models.crossfuse import CrossFuse
    from fusion.models.ufa import UFAFuse
    from fusion.models.ufa_released import ReleasedUFAFuse

    if isinstance(model, UFAFuse):
        return ChannelMeans(released=False) if model.ufa.channel else Local()
    if isinstance(model, ReleasedUFAFuse):
        return ChannelMeans(released=True) if model.sc4.channel else Local()
    if isinstance(model, CADNIF):
        if model.published_test_graph:
            return Whole("the published graph min-max scales the whole image and normalises on its statistics")
        if model.use_aux and model.aux_attention:
            if model.released:
                return Whole("its non-local branch attends over the whole image")
            return CADNIFWindows()
        if not model.bn_running_stats:
            return Whole("its BatchNorm normalises on the whole image's statistics")
        return Local()
    if isinstance(model, CrossFuse):
        return CrossFuseStaged()
    return Whole(f"{type(model).__name__} is not known to be local")
