"""Typed configuration: params.yaml + a profile + command-line overrides, validated once.

`params.yaml` is the one source of truth; DVC reads the `data` section for its stages and
everything else reads the resolved `Config`. Unknown keys are errors (a typo must not be
silently ignored), and every error names the offending key.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusion.errors import ConfigError

PARAMS_FILE = "params.yaml"
WORKSPACE_ENV = "FUSIONFLOW_WORKSPACE"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddedData(_Strict):
    out: str = "data/embedded"


class SynthMultifocus(_Strict):
    raw: str = "data/embedded"
    out: str = "prepared/multifocus_synthetic"
    max_side: int = Field(256, ge=32, le=8192)
    pairs_per_image: int = Field(2, ge=1, le=64)
    blur_intervals: list[tuple[int, int]] = [(2, 3), (4, 5), (5, 7), (8, 10)]
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    test_images: int = Field(4, ge=1)

    @field_validator("blur_intervals")
    @classmethod
    def _intervals(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not v:
            raise ValueError("needs at least one [low, high] interval")
        for lo, hi in v:
            if not (1 <= lo <= hi <= 64):
                raise ValueError(f"interval [{lo}, {hi}] must satisfy 1 <= low <= high <= 64")
        return v


class DataConfig(_Strict):
    embedded: EmbeddedData = EmbeddedData()
    synth_multifocus: SynthMultifocus = SynthMultifocus()


class RayConfig(_Strict):
    cpus_per_worker: float = Field(2, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    max_failures: int = Field(2, ge=0)


class SourceSpec(_Strict):
    """A dataset in a published layout, read by path (see fusion/data/sources.py)."""

    layout: str
    path: str
    test_fraction: float = Field(0.25, gt=0, lt=1)   # held out by group (scene, case, sequence)
    options: dict[str, Any] = {}


class TrainConfig(_Strict):
    model: str = "ufa"
    variant: str = "UFA"
    released: bool = False
    # the fusion task: picks CADNIF's Eq. 7 loss weights; "multi-focus" for the embedded data
    task: Literal["multi-focus", "ir-vis", "medical", "multi-exposure"] = "multi-focus"
    # null: the prepared (DVC) dataset; otherwise unsupervised training on source pairs
    source: Optional[SourceSpec] = None
    # a patch folder cut from train.source's training split (`fusion data patches`); its
    # held-out split still validates and evaluates the run
    patches: Optional[str] = None
    # CrossFuse: auto = autoencoder without init_from, fusion with it (joint for one-stage)
    stage: Literal["auto", "autoencoder", "fusion", "joint"] = "auto"
    # checkpoint (file, run folder or MLflow URI) whose stage-1 encoders start the fusion stage
    init_from: Optional[str] = None
    loss_crop_border: int = Field(6, ge=0)   # CADNIF: loss on the central window (132 -> 120)
    lambda_l1: float = Field(0.2, ge=0.0, le=1.0)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_step_epochs: int = Field(200, ge=1)
    epochs: int = Field(300, ge=1)
    steps_per_epoch: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(256, ge=16)
    hflip: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False
    checkpoint_every: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    ray: RayConfig = RayConfig()


class EvaluateConfig(_Strict):
    # ["all"] = every metric of docs/metrics.md that applies to the test set
    metrics: list[str] = ["all"]
    baselines: list[str] = ["all"]
    grid_pairs: int = Field(3, ge=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        from fusion.metrics import METRICS

        unknown = [n for n in v if n not in METRICS and n != "all"]
        if unknown or not v or ("all" in v and len(v) > 1):
            raise ValueError(f"unknown or mixed metric names {unknown or v}; valid: ['all'] or names from {list(METRICS)}")
        return v

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, v: list[str]) -> list[str]:
        from fusion.baselines import BASELINES

        unknown = [n for n in v if n not in BASELINES and n != "all"]
        if unknown or ("all" in v and len(v) > 1):
            raise ValueError(f"unknown or mixed baseline names {unknown or v}; valid: ['all'], [] or names from {list(BASELINES)}")
        return v


class TrackingConfig(_Strict):
    experiment: str = "fusionflow"
    default_uri: str = "sqlite:///mlflow/store/mlflow.db"
    artifact_root: str = "mlflow/store/artifacts"


class Config(_Strict):
    seed: int = 0
    profile: str = "default"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _known_names(self) -> "Config":
        # Deferred imports: the registries import torch, config must stay cheap to load.
        from fusion.models import MODELS

        if self.train.model not in MODELS:
            raise ValueError(f"train.model: unknown model {self.train.model!r}; valid: {sorted(MODELS)}")
        variants = MODELS[self.train.model].variants
        if self.train.variant not in variants:
            raise ValueError(
                f"train.variant: unknown variant {self.train.variant!r} of {self.train.model}; "
                f"valid: {list(variants)}"
            )
        return self

    def flat(self) -> dict[str, Any]:
        """Flattened `section.key` -> value, as logged to MLflow."""
        return flatten(self.model_dump(mode="json"))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def project_root() -> Path:
    """The checkout this package was installed from (editable install), if it has params.yaml."""
    return Path(__file__).resolve().parents[1]


def resolve_workspace(workspace: str | Path | None = None) -> Path:
    """Workspace = the directory holding params.yaml, dvc.yaml and the pipeline outputs.

    Explicit argument, then $FUSIONFLOW_WORKSPACE, then the project checkout. Never the
    current directory, so a command behaves the same wherever it is started.
    """
    candidate = Path(workspace or os.environ.get(WORKSPACE_ENV) or project_root()).expanduser().resolve()
    if not (candidate / PARAMS_FILE).is_file():
        raise ConfigError(
            f"workspace {candidate}: no {PARAMS_FILE} there; pass --workspace or set {WORKSPACE_ENV} "
            f"to a directory created by `fusion init` or a fusionflow checkout"
        )
    return candidate


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key.sub=value` strings -> nested dict; values parsed as YAML (numbers, lists, bools)."""
    tree: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=2e-4")
        key, raw = item.split("=", 1)
        if key.split(".")[0] == "data":
            raise ConfigError(
                f"--set {key}: data parameters are versioned by DVC; edit them in {PARAMS_FILE} instead"
            )
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def read_params(workspace: Path) -> dict[str, Any]:
    path = workspace / PARAMS_FILE
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return tree


def load_config(
    workspace: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    ws = resolve_workspace(workspace)
    tree = read_params(ws)
    profiles = tree.pop("profiles", {}) or {}
    if profile and profile != "default":  # "default": params.yaml as written, no profile
        if profile not in profiles:
            raise ConfigError(f"profile {profile!r} is not defined in {ws / PARAMS_FILE}; valid: {sorted(profiles)}")
        chosen = profiles[profile] or {}
        if "data" in chosen:
            raise ConfigError(f"profile {profile!r}: profiles may not change `data` (the DVC data version)")
        tree = _merge(tree, chosen)
        tree["profile"] = profile
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    tree = _merge(tree, extra)
    # Paths relative to the workspace, never the current directory: Ray workers and Prefect
    # runs start elsewhere, and the recorded config must name one place.
    train = tree.get("train") or {}
    source = train.get("source")
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        source["path"] = _in_workspace(ws, source["path"])
    if isinstance(train.get("patches"), str):
        train["patches"] = _in_workspace(ws, train["patches"])
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, ws / PARAMS_FILE)) from None


def _in_workspace(ws: Path, path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (ws / p).resolve())


def _describe(exc: ValidationError, source: Path) -> str:
    lines = [f"invalid configuration ({source} + profile/overrides):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter (typo?)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)
