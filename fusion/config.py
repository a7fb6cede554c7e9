"""Typed configuration: params.yaml + a profile + command-line overrides, validated once.

`params.yaml` is the one source of truth; DVC reads the `data` section for its stages and
everything else reads the resolved `Config`. Unknown keys are errors (a typo must not be
silently ignored), and every error names the offending key.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusion.errors import ConfigError
# re-exported: callers import the workspace helpers from here
from fusion.workspace import PARAMS_FILE, WORKSPACE_ENV, project_root, read_params, resolve_workspace  # noqa: F401


class _Strict(BaseModel):
    # inf/nan pass gt=0 checks (train.lr=inf would only fail at the first step)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EmbeddedData(_Strict):
    out: str = "data/embedded"


class SynthMultifocus(_Strict):
    # a `sources` entry of layout photos (the embedded default) or duts (image + saliency mask)
    source: str = "embedded"
    skip_bad: bool = False     # drop bad inputs and write bad_inputs.txt instead of stopping
    out: str = "prepared/multifocus_synthetic"
    max_side: int = Field(256, ge=32, le=8192)
    pairs_per_image: int = Field(2, ge=1, le=64)
    blur_intervals: list[tuple[int, int]] = [(2, 3), (4, 5), (5, 7), (8, 10)]
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    test_images: int = Field(4, ge=1)
    # relative frequency of each blur interval; null = uniform (the paper)
    blur_weights: Optional[list[float]] = None

    @model_validator(mode="after")
    def _weights(self) -> "SynthMultifocus":
        w = self.blur_weights
        if w is not None and (len(w) != len(self.blur_intervals) or min(w) < 0 or sum(w) <= 0):
            raise ValueError(f"blur_weights {w}: one non-negative weight per blur interval "
                             f"({len(self.blur_intervals)}), not all zero")
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


class _Stage(_Strict):
    """A DVC stage reading one dataset of the `sources` registry (by name)."""

    source: str
    skip_bad: bool = False     # drop bad inputs and write bad_inputs.txt instead of stopping


class KaistPairs(_Stage):
    """Aligned lwir/visible training pairs sampled from a KAIST source (CrossFuse trains on 256x256 gray)."""

    pairs: int = Field(1000, ge=0)        # 0 = every frame left after the stride
    frame_stride: int = Field(1, ge=1)    # every n-th frame of a sequence: neighbours are near-duplicates
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


class DataConfig(_Strict):
    embedded: EmbeddedData = EmbeddedData()
    synth_multifocus: SynthMultifocus = SynthMultifocus()
    kaist_pairs: dict[str, KaistPairs] = {}
    patches: dict[str, PatchStage] = {}
    test_sets: dict[str, TestSetStage] = {}

    @model_validator(mode="after")
    def _plain_names(self) -> "DataConfig":
        # each name becomes a folder under prepared/<section>/: "../x" or "a/b" would write elsewhere
        for section in ("kaist_pairs", "patches", "test_sets"):
            for name in getattr(self, section):
                check_plain_name(f"data.{section}", name)
        return self


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")


def check_plain_name(where: str, name: str) -> None:
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{where}: {name!r} is not a plain name (letters, digits, '_', '-', inner dots; "
                         f"it names a folder, so no '/', '..' or leading dot)")


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
    name: Optional[str] = None     # the `sources` registry entry it came from, if any


class TrainConfig(_Strict):
    model: str = "ufa"
    variant: str = "UFA"
    released: bool = False
    # per-model named options (the model's registry entry lists them: `fusion models`), e.g.
    # {fix_spatial_softmax: true} for UFA-Fuse's released graph
    options: dict[str, Any] = {}
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
    # CADNIF: pixels dropped on every side before the loss; null = the mode's own: 6 in paper mode
    # (132 windows scored on their central 120), 0 with train.released (the trained graph scores all)
    loss_crop_border: Optional[int] = Field(None, ge=0)
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
    # Mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPU (amp_dtype: auto)
    amp: bool = False
    amp_dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    # torch.compile the model for training (seconds to compile, then faster steps; eager with a
    # warning where it cannot compile, e.g. no C++ compiler on a CPU machine)
    compile: bool = False
    checkpoint_every: int = Field(1, ge=1)
    # stop after this many epochs without a val/loss improvement of more than min_delta (0 = off)
    early_stop_patience: int = Field(0, ge=0)
    early_stop_min_delta: float = Field(0.0, ge=0)
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


class PromoteConfig(_Strict):
    """Champion rule of the model registry (fusion/promotion.py)."""

    registry_prefix: str = "fusionflow"   # registered model: <prefix>-<task>-<model>
    metric: str = "auto"                  # auto: SSIM_gt where there is a ground truth, else Qabf
    min_improvement: float = Field(0.0, ge=0)
    # @champion also needs a better `metric` than the best classical baseline scored on the same
    # test data in the same run; otherwise @challenger, with the numbers in the reason
    require_beat_baselines: bool = True

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        from fusion.metrics import METRICS

        if v != "auto" and v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; valid: auto or one of {list(METRICS)}")
        return v


class NightlyConfig(_Strict):
    """The scheduled deployment of the nightly flow (flows/deploy.py)."""

    profile: str = "smoke"
    overrides: list[str] = []             # --set style overrides, e.g. ["train.device=cuda"]
    use_ray: bool = True
    cron: str = "0 2 * * *"               # 02:00 every day
    timezone: Optional[str] = None        # IANA name, e.g. Europe/Berlin; null: this machine's zone
    concurrency: int = Field(1, ge=1)     # nightly runs at a time
    on_collision: Literal["enqueue", "cancel_new"] = "cancel_new"   # a trigger while one runs: waits, or is skipped
    retries: int = Field(2, ge=0)         # per stage, transient failures only (lost Ray node, tracking hiccup)
    retry_delay_seconds: list[float] = [10.0, 60.0]
    notify_webhook: Optional[str] = None  # POSTed a JSON summary when a nightly run fails
    sweep: Optional[str] = None           # a `sweeps:` entry run (or continued) after the configured model

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        try:
            from prefect._internal.schemas.validators import validate_cron_string  # the check the schedule gets
        except ImportError:
            # a core install (GPU machines, no orchestration stack): no schedule can run here, and
            # wherever Prefect is installed the expression is checked on every load
            return v
        try:
            return validate_cron_string(v)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected minute hour day month weekday, e.g. '0 2 * * *'") from None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin or UTC") from None
        return v


Task = Literal["multi-focus", "ir-vis", "medical", "multi-exposure"]


class SweepEntry(_Strict):
    """One row of a sweep's matrix: a model, its variants, the tasks, a grid of train.* values."""

    model: str
    variants: list[str] | Literal["all"] = "all"   # "all": every variant the papers report
    tasks: Optional[list[Task]] = None             # null: every task of the sweep's `data`
    grid: dict[str, list[Any]] = {}                # e.g. {train.lambda_l1: [0, 0.2]}: crossed with each other

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if key.split(".")[0] not in ("train", "evaluate") or "." not in key:
                raise ValueError(f"grid key {key!r}: a train.* or evaluate.* parameter, e.g. train.lambda_l1")
            if not values:
                raise ValueError(f"grid key {key!r}: needs at least one value")
        return v


class SweepResources(_Strict):
    cpus: float = Field(1, gt=0)     # per trial; also its torch threads
    gpus: float = Field(0, ge=0)     # per trial; a fraction (0.25) packs several trials on one GPU


class SweepConfig(_Strict):
    """An experiment matrix run as Ray Tune trials (fusion/sweep, `fusion sweep NAME`)."""

    profile: str = "smoke"
    overrides: list[str] = []                # --set style, applied to every trial
    seeds: list[int] = [0]
    # task -> `sources` registry name to train on; null = the prepared synthetic multi-focus set
    data: dict[Task, Optional[str]] = {"multi-focus": None}
    matrix: list[SweepEntry]
    resources: SweepResources = SweepResources()
    max_concurrent: int = Field(0, ge=0)     # trials at a time; 0 = as many as the resources allow
    budget_minutes: float = Field(0, ge=0)   # wall clock for the whole sweep; 0 = no limit
    max_failures: int = Field(2, ge=0)       # restarts of a trial whose worker died (from its last checkpoint)
    evaluate: bool = True                    # score each trial on its test split (the comparison table)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds {v}: at least one, no repeats")
        return v


class Config(_Strict):
    seed: int = 0
    profile: str = "default"
    # dataset registry: name -> {layout, path, [test_fraction], loader options}; paths are
    # kept as written (relative = to the workspace), see source_spec()
    sources: dict[str, dict[str, Any]] = {}
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    promote: PromoteConfig = PromoteConfig()
    nightly: NightlyConfig = NightlyConfig()
    sweeps: dict[str, SweepConfig] = {}

    @model_validator(mode="after")
    def _known_names(self) -> "Config":
        # Deferred imports: the registries import torch, config must stay cheap to load.
        from fusion.data.sources import LAYOUT_TASKS, validate_spec
        from fusion.models import MODELS, check_options

        for name, entry in self.sources.items():
            spec = registry_spec(name, entry)
            validate_spec(name, {"layout": spec["layout"], "path": spec["path"], **spec["options"]})
            try:
                SourceSpec.model_validate({**spec, "path": str(spec["path"])})
            except ValidationError as exc:
                raise ValueError(f"sources.{name}.test_fraction: {exc.errors()[0]['msg']}") from None
        stages = [("synth_multifocus", "", self.data.synth_multifocus.source, ("duts", "photos"))]
        stages += [("kaist_pairs", k, v.source, ("kaist",)) for k, v in self.data.kaist_pairs.items()]
        stages += [(sec, k, v.source, None) for sec in ("patches", "test_sets") for k, v in getattr(self.data, sec).items()]
        for section, key, source, layout in stages:
            where = f"data.{section}{'.' + key if key else ''}.source"
            if source not in self.sources:
                raise ValueError(f"{where}: {source!r} is not in the `sources` registry; registered: {sorted(self.sources) or 'none'}")
            got = self.sources[source]["layout"]
            if layout and got not in layout:
                raise ValueError(f"{where}: {source!r} has layout {got}; this stage reads layout {' or '.join(layout)}")
            if layout is None and LAYOUT_TASKS.get(got, "") is None and "task" not in self.sources[source]:
                raise ValueError(f"{where}: {source!r} (layout {got}) holds no fusion pairs")
        if self.nightly.sweep is not None and self.nightly.sweep not in self.sweeps:
            raise ValueError(f"nightly.sweep: {self.nightly.sweep!r} is not under `sweeps:`; defined: {sorted(self.sweeps)}")
        if self.train.model not in MODELS:
            raise ValueError(f"train.model: unknown model {self.train.model!r}; valid: {sorted(MODELS)}")
        variants = MODELS[self.train.model].variants
        if self.train.variant not in variants:
            raise ValueError(
                f"train.variant: unknown variant {self.train.variant!r} of {self.train.model}; "
                f"valid: {list(variants)}"
            )
        check_options(self.train.model, self.train.options)   # a ConfigError is a ValueError
        return self

    def flat(self) -> dict[str, Any]:
        """Flattened `section.key` -> value, as logged to MLflow (secrets redacted). The sweep
        definitions are left out: a sweep's parent run records its own."""
        return flatten({k: v for k, v in self.loggable().items() if k != "sweeps"})

    def loggable(self) -> dict[str, Any]:
        """The configuration as recorded with a run: a webhook URL carries its token, so it is
        never written to MLflow (the run only says whether one was set)."""
        tree = self.model_dump(mode="json")
        for section, key in SECRET_KEYS:
            if tree[section].get(key):
                tree[section][key] = REDACTED
        return tree


SECRET_KEYS = (("nightly", "notify_webhook"),)
REDACTED = "<redacted>"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


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
        if key.split(".")[0] in ("data", "sources"):
            raise ConfigError(
                f"--set {key}: data parameters and the sources registry are versioned by DVC; "
                f"edit them in {PARAMS_FILE} instead"
            )
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
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
        chosen = dict(profiles[profile] or {})
        if "data" in chosen:
            raise ConfigError(f"profile {profile!r}: profiles may not change `data` (the DVC data version)")
        per_model = chosen.pop("models", None) or {}
        tree = _merge(tree, chosen)
        tree["profile"] = profile
    else:
        per_model = {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    tree = _merge(tree, extra)
    if per_model:
        # a profile's per-model part (each paper's own schedule) applies to the model the
        # overrides chose; the overrides still win over it
        for key in _schedule_keys(profile, per_model, tree.get("train") or {}):
            tree = _merge(tree, per_model[key])
        tree = _merge(tree, extra)
    # Paths relative to the workspace, never the current directory: Ray workers and Prefect
    # runs start elsewhere, and the recorded config must name one place.
    train = tree.get("train") or {}
    source = train.get("source")
    if isinstance(source, str):  # a name from the `sources` registry
        registry = tree.get("sources") or {}
        if source not in registry or not isinstance(registry[source], dict):
            raise ConfigError(f"train.source: {source!r} is not in the `sources` registry of {ws / PARAMS_FILE}; "
                              f"registered: {sorted(registry) or 'none'} (or give {{layout: ..., path: ...}})")
        source = train["source"] = registry_spec(source, registry[source])
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        source["path"] = _in_workspace(ws, source["path"])
    if isinstance(train.get("patches"), str):
        train["patches"] = _in_workspace(ws, train["patches"])
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, ws / PARAMS_FILE)) from None


def _schedule_keys(profile: str, per_model: dict[str, Any], train: dict[str, Any]) -> list[str]:
    """Which entries of `profiles.<profile>.models` apply: `<model>`, then `<model>.<stage>`
    (autoencoder, fusion or joint for CrossFuse)."""
    from fusion.models import MODELS

    for key, entry in per_model.items():
        model = key.split(".")[0]
        if model not in MODELS or not isinstance(entry, dict) or set(entry) - {"train", "evaluate"}:
            raise ConfigError(f"profiles.{profile}.models.{key}: expected <model>[.<stage>] with train/evaluate "
                              f"sections; models: {sorted(MODELS)}")
    model, variant = train.get("model", "ufa"), train.get("variant", "")
    stage = train.get("stage", "auto")
    if stage == "auto" and model in MODELS:
        spec = MODELS[model]
        if train.get("init_from"):
            stage = "fusion"
        elif variant in spec.shared_stage1:
            stage = "autoencoder"
        elif spec.shared_stage1:
            stage = "joint"   # a two-stage model's one-stage variant
    return [k for k in (model, f"{model}.{stage}") if k in per_model]


def registry_spec(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A `sources` registry entry as a train.source mapping (SourceSpec fields)."""
    entry = dict(entry)
    spec = {"layout": entry.pop("layout", None), "path": entry.pop("path", None), "name": name}
    if "test_fraction" in entry:
        spec["test_fraction"] = entry.pop("test_fraction")
    return {**spec, "options": entry}


def source_spec(cfg: Config, name: str, ws: Path) -> SourceSpec:
    """Registry entry `name` with its path resolved against the workspace."""
    spec = registry_spec(name, cfg.sources[name])
    return SourceSpec.model_validate({**spec, "path": _in_workspace(ws, str(spec["path"]))})


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
