"""Model registry: name -> builder and the paper's variant names.

Models register themselves on import (BasicSR style); a config picks one by `train.model`
and `train.variant`. `variants` maps the identifier a config uses to the paper's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    variants: dict[str, str]          # config identifier -> name in the paper
    task: str                         # the task the model is trained for by default
    paper: str
    notes: dict[str, str] = field(default_factory=dict)
    supervised: bool = False          # trained against a ground truth (else on the sources alone)
    # variants trained in two stages whose stage 1 (per-modality auto-encoders) is the same
    # for all of them: a sweep trains it once and starts every such variant from it
    shared_stage1: frozenset[str] = frozenset()
    aliases: frozenset[str] = frozenset()   # identifiers naming another variant (left out of "all")
    # named options beyond `released` (train.options.NAME): name -> what it switches. Each
    # released-code bug is one of these, so a user can measure what fixing it changes.
    options: dict[str, str] = field(default_factory=dict)

    def sweep_variants(self) -> list[str]:
        return [v for v in self.variants if v not in self.aliases]


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    return spec


def build_model(name: str, variant: str, **options) -> nn.Module:
    from fusion.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"train.model: unknown model {name!r}; valid: {sorted(MODELS)}")
    spec = MODELS[name]
    if variant not in spec.variants:
        raise ConfigError(f"train.variant: unknown variant {variant!r} of {name}; valid: {list(spec.variants)}")
    check_options(name, [k for k in options if k != "released"])
    return spec.builder(variant=variant, **options)


def check_options(name: str, keys) -> None:
    """train.options names must be options of the model (its registry entry lists them)."""
    from fusion.errors import ConfigError

    known = MODELS[name].options
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ConfigError(f"train.options.{unknown[0]}: not an option of {name}; valid: {sorted(known) or 'none'}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Import for the side effect of registration.
from fusion.models import ufa  # noqa: E402,F401
from fusion.models import cadnif  # noqa: E402,F401
from fusion.models import crossfuse  # noqa: E402,F401
