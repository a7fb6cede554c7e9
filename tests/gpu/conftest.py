"""The CUDA device the GPU tests run on, and what they share.

Every test here is marked `gpu` (deselected by default: `pytest -m gpu` selects them) and
skipped without a CUDA device. FUSION_GPU_TESTS_ON_CPU=1 runs them on the CPU instead, with
the float16 cases skipped: it checks the tests themselves on a machine without a GPU, not
the GPU (`GPU_CHECK_ALLOW_CPU=1 scripts/gpu-check.sh` does that).
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from tests.conftest import REPO

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


@pytest.fixture
def cfg(tmp_path):
    """load_config(tiny profile, nested overrides): `cfg(**{"train.model": "cadnif"})`."""
    from fusion.config import load_config

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")

    def make(**overrides):
        tree: dict = {}
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return load_config(tmp_path, "tiny", tree)

    return make


def precision_overrides(precision: str) -> dict:
    if precision == "float32":
        return {"train.amp": False}
    return {"train.amp": True, "train.amp_dtype": precision}
