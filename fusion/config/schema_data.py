"""The `data` section: the DVC stages that prepare datasets, each reading a `sources` entry."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fusion.config.base import StrictModel


class EmbeddedData(StrictModel):
    out: str = "data/embedded"


class SynthMultifocus(StrictModel):
    # a `sources` entry of layout photos (the embedded default) or duts (image + saliency mask)
    source: str = "embedded"
    skip_bad: bool = False  # drop bad inputs and write bad_inputs.txt instead of stopping
    out: str = "prepared/multifocus_synthetic"
    max_side: int = Field(256, ge=32, le=8192)
    pairs_per_image: int = Field(2, ge=1, le=64)
    blur_intervals: list[tuple[int, int]] = [(2, 3), (4, 5), (5, 7), (8, 10)]
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    test_images: int = Field(4, ge=1)
    # relative frequency of each blur interval; null = uniform (the paper)
    blur_weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self) -> SynthMultifocus:
        w = self.blur_weights
        if w is not None and (len(w) != len(self.blur_intervals) or min(w) < 0 or sum(w) <= 0):
            raise ValueError(
                f"blur_weights {w}: one non-negative weight per blur interval "
                f"({len(self.blur_intervals)}), not all zero"
            )
        return self

    @field_validator("blur_intervals")
    @classmethod
    def _intervals(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not v:
            raise ValueError("needs at least one [low, high] interval")
        for lo, hi in v:
            if not (1 <= lo <= hi <= 64):
                raise ValueError(f"interval [{lo}, {hi}] must satisfy 1 <= low <= high <= 64")
        return v


class _Stage(StrictModel):
    """A DVC stage reading one dataset of the `sources` registry (by name)."""

    source: str
    skip_bad: bool = False  # drop bad inputs and write bad_inputs.txt instead of stopping


class KaistPairs(_Stage):
    """Aligned lwir/visible training pairs sampled from a KAIST source (CrossFuse trains on 256x256 gray)."""

    pairs: int = Field(1000, ge=0)  # 0 = every frame left after the stride
    frame_stride: int = Field(1, ge=1)  # every n-th frame of a sequence: neighbours are near-duplicates
    size: int = Field(256, ge=16, le=4096)


class PatchStage(_Stage):
    """Patch augmentation of a source's training split (fusion/data/patches.py)."""

    window: int = Field(132, ge=8)
    stride: int = Field(14, ge=1)
    gray: bool = True
    flips: bool = False
    rotations: bool = False
    max_per_pair: int = Field(0, ge=0)
    shard_size: int = Field(4096, ge=1)


class TestSetStage(_Stage):
    """Evaluation pairs of a source, colour kept: every pair, or its held-out split."""

    split: Literal["all", "test"] = "all"


class DataConfig(StrictModel):
    embedded: EmbeddedData = EmbeddedData()
    synth_multifocus: SynthMultifocus = SynthMultifocus()
    kaist_pairs: dict[str, KaistPairs] = {}
    patches: dict[str, PatchStage] = {}
    test_sets: dict[str, TestSetStage] = {}

    @model_validator(mode="after")
    def _plain_names(self) -> DataConfig:
        # each name becomes a folder under prepared/<section>/: "../x" or "a/b" would write elsewhere
        for section in ("kaist_pairs", "patches", "test_sets"):
            for name in getattr(self, section):
                check_plain_name(f"data.{section}", name)
        return self


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")


def check_plain_name(where: str, name: str) -> None:
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise ValueError(
            f"{where}: {name!r} is not a plain name (letters, digits, '_', '-', inner dots; "
            f"it names a folder, so no '/', '..' or leading dot)"
        )
