"""The CUDA device the GPU tests run on, and what they share.

Every test here is marked `gpu` (deselected by default: `pytest -m gpu` selects them) and
skipped without a CUDA device. FUSION_GPU_TESTS_ON_CPU=1 runs them on the CPU instead, with
the float16 cases skipped: it checks the tests themselves on a machine without a GPU, not
the GPU (`GPU_CHECK_ALLOW_CPU=1 scripts/gpu-check.sh` does that).
"""

from __future__ import annotations

import os

import pytest
import torch

ON_CPU = os.environ.get("FUSION_GPU_TESTS_ON_CPU") == "1"


@pytest.fixture(scope="session")
def gpu() -> torch.device:
    if ON_CPU:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (FUSION_GPU_TESTS_ON_CPU=1 runs these tests on the CPU)")
    return torch.device("cuda")


def precisions(device: torch.device) -> list[str]:
    """The training precisions of train.amp on `device`: float32 (amp off), float16 with
    loss scaling (CUDA only) and bfloat16."""
    out = ["float32"]
    if device.type == "cuda":
        out.append("float16")
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        out.append("bfloat16")
    return out


def precision_overrides(precision: str) -> dict:
    if precision == "float32":
        return {"train.amp": False}
    return {"train.amp": True, "train.amp_dtype": precision}
