"""Devices, precisions and memory layouts: what training, inference and tiling share.

No model, data or tracking code here, so any module may import it without a cycle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import torch

from fusion.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "float16")


def pick_device(name: str) -> torch.device:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise ConfigError(f"device {name!r}: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) for oneDNN to use."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch API: absent = assume yes
    return any(getattr(torch.cpu, name, lambda: True)() for name in probes)


def autocast_dtype(precision: str, device: torch.device, key: str = "precision") -> torch.dtype | None:
    """The autocast dtype of a precision name on `device` (None: plain float32); `key` names
    the setting in messages (a config key, or a CLI option such as --precision). Shared by
    train.amp and `fusion fuse --precision`."""
    setting = f"{key}{' ' if key.startswith('--') else '='}"
    if precision not in PRECISIONS:
        raise ConfigError(f"{setting}{precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "float16" and device.type == "cpu":
        raise ConfigError(f"{setting}float16 on CPU: CPUs have no fast float16 convolutions; use bfloat16")
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_bfloat16():
        log.warning(
            "%sbfloat16: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 "
            "autocast is emulated and slower than float32",
            setting,
        )
    dtype: torch.dtype | None = None if precision == "float32" else getattr(torch, precision)
    return dtype


def amp_dtype(tcfg: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of train.amp on `device`, or None for float32 training.

    auto: float16 (with loss scaling) on CUDA, bfloat16 on CPU, where oneDNN runs the
    convolutions in bfloat16 on CPUs that have it (AVX512-BF16 or AMX): ~2x faster
    UFA-Fuse steps on the development machine (benchmarks/bench_models.py).
    """
    if not tcfg.amp:
        return None
    name = tcfg.amp_dtype if tcfg.amp_dtype != "auto" else ("bfloat16" if device.type == "cpu" else "float16")
    return autocast_dtype(name, device, "train.amp_dtype")


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """Pure conv stacks run faster channels-last (oneDNN skips a reorder per layer)."""
    return torch.channels_last if getattr(model, "prefers_channels_last", False) else torch.contiguous_format


def in_layout(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.nn.Module:
    """`model` (on `device`, if given) in the memory layout it runs fastest in."""
    # torch's stubs list Module.to's overloads without the memory_format keyword it takes
    return model.to(device, memory_format=memory_format(model))  # type: ignore[call-overload]


@contextmanager
def ieee_float32(device: str | torch.device) -> Iterator[None]:
    """Float32 that is float32 on CUDA as well: on Ampere and later GPUs PyTorch runs cuDNN's
    float32 convolutions in TF32 by default (10 mantissa bits, ~1e-3 relative), which moves a
    deep model's output by more than a gray level from the CPU's. Inference asks for IEEE
    float32 convolutions and matmuls while it runs (process-wide flags, restored after);
    training keeps PyTorch's default (README "On a GPU"). Nothing changes on a CPU."""
    if torch.device(device).type != "cuda":
        yield
        return
    knobs: list[tuple[Any, str, Any]]
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9: per-operator fp32_precision
        # the new API only: reading the legacy allow_tf32 after it raises in torch 2.9+
        knobs = [
            (torch.backends.cudnn.conv, "fp32_precision", "ieee"),
            (torch.backends.cuda.matmul, "fp32_precision", "ieee"),
        ]
    else:
        knobs = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    saved = [getattr(owner, name) for owner, name, _ in knobs]
    try:
        for owner, name, value in knobs:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(knobs, saved):
            setattr(owner, name, value)


def inference_precision(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Where inference runs the model: autocast to `dtype`, or (None) IEEE float32, with any
    autocast a caller had turned on turned off."""
    if dtype is not None:
        return torch.autocast(device.type, dtype=dtype)
    stack = ExitStack()
    stack.enter_context(torch.autocast(device.type, enabled=False))
    stack.enter_context(ieee_float32(device))
    return stack
