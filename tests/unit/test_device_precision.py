"""Inference precision flags: float32 is IEEE float32 on a GPU too, and nothing leaks out."""

from __future__ import annotations

import pytest
import torch

from fusion.device import ieee_float32, inference_precision


def _flags() -> tuple:
    if hasattr(torch.backends.cudnn, "conv"):
        return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


IEEE = ("ieee", "ieee") if hasattr(torch.backends.cudnn, "conv") else (False, False)


def test_float32_inference_on_cuda_turns_tf32_off_while_it_runs_and_restores_the_flags():
    # the flags are process-wide and settable in a CPU build: the context can be checked here
    before = _flags()
    assert before != IEEE  # PyTorch's default: TF32 cuDNN convolutions
    with inference_precision(torch.device("cuda"), None):
        assert _flags() == IEEE
    assert _flags() == before
    with pytest.raises(RuntimeError, match="boom"), ieee_float32("cuda"):
        raise RuntimeError("boom")
    assert _flags() == before


def test_cpu_inference_and_reduced_precision_leave_the_flags_alone():
    before = _flags()
    with ieee_float32("cpu"):
        assert _flags() == before
    with inference_precision(torch.device("cpu"), torch.bfloat16):
        assert _flags() == before and torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16), inference_precision(torch.device("cpu"), None):
        assert not torch.is_autocast_enabled("cpu")  # float32 asked for: a caller's autocast is off inside
