"""Measuring a model on a probe tile: peak tensor memory and receptive field (fusion/tiling.py).

A TorchDispatchMode sees every tensor operation: the storages its outputs create (freed
when their last reference goes, which StorageWeakRef tells) give the live bytes at each
step, and convolutions, pools and upsamplings give the receptive radius.
"""

from __future__ import annotations

import math

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_NONLOCAL = ("scaled_dot_product_attention", "instance_norm", "_native_multi_head_attention")


class Probe(TorchDispatchMode):
    """Peak bytes of live tensor storage while it is active, and the receptive radius (in
    pixels of a `ref`-pixel-wide output) of the convolutions, pools and upsamplings run:
    every one is summed, so parallel branches make it an upper bound."""

    def __init__(self, ref: int):
        super().__init__()
        self.ref = ref
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = self.peak = 0
        self.radius = 0.0
        self.global_ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._spatial(func.__name__.split(".")[0], args)
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live and storage.nbytes():
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        return out

    def _spatial(self, name: str, args) -> None:
        if name in _NONLOCAL or (name in ("mean", "amax", "amin", "sum") and len(args) > 1 and _spatial_dims(args)):
            self.global_ops.add(name)
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 3:
            return
        scale = self.ref / args[0].shape[-1]

        def at(i: int, default: int = 1) -> int:
            v = args[i] if len(args) > i else default
            return int(v[-1] if isinstance(v, (list, tuple)) else v)

        if name in ("conv2d", "convolution", "_convolution"):
            k = args[1].shape[-1]
            self.radius += (math.ceil((k - 1) * at(5) / 2) + at(3) - 1) * scale
        elif "pool2d" in name and "adaptive" not in name:
            self.radius += (at(1) - 1) * scale
        elif name.startswith("upsample"):
            self.radius += scale


def _spatial_dims(args) -> bool:
    dims = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
    nd = args[0].dim()
    return {d % nd for d in dims if isinstance(d, int)} >= {nd - 2, nd - 1}


def measure(fn, make_inputs, ref: int) -> Probe:
    """Run fn(*make_inputs()) under a Probe (the inputs are made inside it, so they count)."""
    with Probe(ref) as probe:
        fn(*make_inputs())
    return probe


def random_planes(n: int, channels: int, h: int, w: int, device, fmt=torch.contiguous_format) -> list[torch.Tensor]:
    # a private generator: probing must not move the user's seeded random stream
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(1, channels, h, w, generator=gen).to(device).contiguous(memory_format=fmt) for _ in range(n)]
