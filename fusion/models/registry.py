"""Model registry: what a model is and how it trains (BasicSR's model layer, as data).

A model module registers one ModelSpec: its builder and variant names, and its training
recipe, that is, its stages, the parameters each stage trains, its loss and what a step
computes. The trainer, inference and the pipeline read the recipe and never name a model,
so a new model is one module plus its import in fusion/models/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from fusion.errors import ConfigError

# what a training step calls (the model, or a part of it such as an auto-encoder)
StepFn = Callable[..., torch.Tensor]
Losses = dict[str, torch.Tensor]


def fusion_objective(
    step: StepFn,
    sources: Sequence[torch.Tensor],
    gt: torch.Tensor | None,
    loss_fn: nn.Module,
    autocast: Callable[[], Any],
    supervised: bool,
) -> Losses:
    """The fused image's loss: against the ground truth (supervised) or the sources."""
    with autocast():
        pred = step(*sources)
    # Losses in float32: the model runs in reduced precision under train.amp, not its loss.
    pred = pred.float()
    if supervised:
        assert gt is not None  # the trainer refuses a supervised model on data without ground truth
        return loss_fn(pred, gt)
    return loss_fn(pred, *sources)


def _the_model(model: nn.Module) -> StepFn:
    return model


@dataclass(frozen=True)
class Stage:
    """One training stage of a model."""

    name: str
    fuses: bool = True  # its checkpoints fuse images (a stage of auto-encoders does not)
    starts_from: str | None = None  # trains from a checkpoint of that stage (train.init_from)
    label: str = ""  # how messages name its checkpoints, e.g. "stage-1 (auto-encoder)"
    forward: Callable[[nn.Module], StepFn] = _the_model  # what a step calls; compiled under train.compile
    objective: Callable[..., Losses] = fusion_objective  # (step, sources, gt, loss_fn, autocast, supervised)


SINGLE = (Stage("single"),)


@dataclass(frozen=True)
class Option:
    """A model's named setting, `train.options.NAME`. A network option (a switch such as a
    released-code bug fix) goes to the builder and into the checkpoint's tags; a training
    option (a loss weight) is read by the model's loss factory."""

    help: str
    default: bool | int | float | None = False
    kind: type = bool  # bool, str, int or float
    low: float | None = None
    high: float | None = None
    network: bool = True

    def check(self, key: str, value: Any) -> None:
        if value is None and self.default is None:
            return
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is str:
            ok = isinstance(value, str)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            expected = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}[self.kind]
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"{key}: {value} is outside [{self.low}, {self.high}]")


def switches(helps: dict[str, str]) -> dict[str, Option]:
    """Network on/off options, false unless set, from name -> what each switches."""
    return {name: Option(text) for name, text in helps.items()}


def _all_parameters(model: nn.Module, stage: str) -> Iterable[nn.Parameter]:
    return model.parameters()


def _one_stage(variant: str) -> tuple[Stage, ...]:
    return SINGLE


@dataclass(frozen=True)
class ModelSpec:
    name: str
    display_name: str  # as papers and result tables name it
    builder: Callable[..., nn.Module]
    variants: dict[str, str]  # config identifier -> name in the paper
    task: str  # the task the model is trained for by default
    paper: str
    # (stage name, train config) -> the loss module; unsupervised losses take (fused, *sources),
    # supervised ones (pred, target)
    loss: Callable[[str, Any], nn.Module]
    notes: dict[str, str] = field(default_factory=dict)
    supervised: bool = False  # trained against a ground truth (else on the sources alone)
    # variants trained in two stages whose stage 1 (per-modality auto-encoders) is the same
    # for all of them: a sweep trains it once and starts every such variant from it
    shared_stage1: frozenset[str] = frozenset()
    aliases: frozenset[str] = frozenset()  # identifiers naming another variant (left out of "all")
    # named options beyond `released` (train.options.NAME): each released-code bug is a
    # network switch, so a user can measure what fixing it changes; loss weights are training
    # options with their defaults
    options: dict[str, Option] = field(default_factory=dict)
    stages: Callable[[str], tuple[Stage, ...]] = _one_stage  # variant -> its stages, in training order
    trainable: Callable[[nn.Module, str], Iterable[nn.Parameter]] = _all_parameters  # (model, stage)
    # (model, checkpoint state_dict) -> None: a stage with `starts_from` begins here
    start_from: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None

    def sweep_variants(self) -> list[str]:
        return [v for v in self.variants if v not in self.aliases]

    def stage(self, variant: str, name: str) -> Stage:
        for s in self.stages(variant):
            if s.name == name:
                return s
        raise ConfigError(f"train.stage={name}: {self.name} {variant} trains {[s.name for s in self.stages(variant)]}")


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    return spec


def build_model(name: str, variant: str, **options: Any) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"train.model: unknown model {name!r}; valid: {sorted(MODELS)}")
    spec = MODELS[name]
    if variant not in spec.variants:
        raise ConfigError(f"train.variant: unknown variant {variant!r} of {name}; valid: {list(spec.variants)}")
    check_options(name, {k: v for k, v in options.items() if k != "released"})
    network = {k: v for k, v in options.items() if k == "released" or spec.options[k].network}
    return spec.builder(variant=variant, **network)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """train.options must be options of the model (its registry entry lists them) with values
    of their kind."""
    known = MODELS[name].options
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(f"train.options.{unknown[0]}: not an option of {name}; valid: {sorted(known) or 'none'}")
    for key, value in options.items():
        known[key].check(f"train.options.{key}", value)


def with_defaults(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` over the defaults of model `name`'s training options (network switches stay
    as given: a checkpoint's tags name only what was switched)."""
    spec = MODELS.get(name)
    defaults = {k: o.default for k, o in spec.options.items() if not o.network} if spec else {}
    return {**defaults, **options}


def network_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that change the network (what the builder takes and a checkpoint records)."""
    spec = MODELS[name]
    return {k: v for k, v in options.items() if k in spec.options and spec.options[k].network}


def option(cfg: Any, name: str, model: str) -> Any:
    """Training option `name` of `model` from a train config (its default when unset or when
    `cfg` is a partial stand-in without options)."""
    given = getattr(cfg, "options", None) or {}
    return given.get(name, MODELS[model].options[name].default)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_loss(model: str, train_cfg: Any, stage: str = "single") -> nn.Module:
    """The loss `model` trains `stage` with; fields missing from train_cfg take their defaults."""
    return MODELS[model].loss(stage, train_cfg)


def multi_stage_models() -> list[str]:
    return sorted(n for n, s in MODELS.items() if any(len(s.stages(v)) > 1 for v in s.variants))


def resolve_stage(spec: ModelSpec, variant: str, stage: str, init_from: str | None) -> Stage:
    """The stage a run trains: train.stage, or for "auto" the first stage, or the stage that
    starts from a checkpoint when train.init_from names one."""
    stages = spec.stages(variant)
    if stages == SINGLE:
        if stage != "auto" or init_from:
            raise ConfigError(
                f"train.stage / train.init_from apply to two-stage models ({', '.join(multi_stage_models())}), "
                f"not {spec.name}"
            )
        return SINGLE[0]
    if stage == "auto":
        starting = [s for s in stages if s.starts_from]
        chosen = starting[0] if init_from and starting else stages[0]
    else:
        chosen = spec.stage(variant, stage)
    if chosen.starts_from and not init_from:
        prior = spec.stage(variant, chosen.starts_from)
        raise ConfigError(
            f"train.stage={chosen.name} needs train.init_from: the {prior.label or prior.name} checkpoint "
            "(a .pt file, a run folder or runs:/RUN_ID)"
        )
    if init_from and not chosen.starts_from:
        readers = [s.name for s in stages if s.starts_from]
        raise ConfigError(f"train.init_from is only read by the {' or '.join(readers)} stage, not {chosen.name}")
    return chosen


def checkpoint_stage(payload: dict[str, Any]) -> Stage:
    """The stage a checkpoint's tags name (checkpoints before stages were tagged: single)."""
    spec = MODELS.get(payload.get("model", ""))
    name = payload.get("stage", "single")
    if spec is None or name == "single":
        return SINGLE[0]
    return spec.stage(payload.get("variant", ""), name)
