"""The configuration as a whole (`Config`) and its model-facing sections: train, evaluate,
tracking, promote. Every key is typed, unknown keys are errors, and the names a section holds
(models, metrics, baselines, sources) are checked against their registries (validation.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fusion.config.base import StrictModel
from fusion.config.dotted import flatten
from fusion.config.schema_data import DataConfig
from fusion.config.schema_jobs import NightlyConfig, SweepConfig
from fusion.config.source_registry import SourceSpec
from fusion.config.validation import (
    check_baseline_list,
    check_metric_list,
    check_model,
    check_promote_metric,
    check_registry_entries,
    check_stage_sources,
)
from fusion.tasks import Task


class RayConfig(StrictModel):
    # data-parallel workers training one model (Ray Train, gloo on CPU, NCCL on GPU);
    # train.batch_size stays the global batch, split equally across them
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(2, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    max_failures: int = Field(2, ge=0)
    # with num_workers > 1 on CUDA, plain BatchNorm layers normalise over the global batch
    sync_batchnorm: bool = True


class TrainConfig(StrictModel):
    model: str = "ufa"
    variant: str = "UFA"
    released: bool = False
    # per-model named options (the model's registry entry lists them with their kinds and
    # defaults: `fusion models`), e.g. {fix_spatial_softmax: true} for UFA-Fuse's released
    # graph, {lambda_l1: 0.4} for its loss; training options not given take the model's default
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _option_defaults(cls, data: Any) -> Any:
        # filled in here so that runs log them and a sweep can vary them (train.options.NAME)
        if isinstance(data, dict):
            from fusion.models import with_defaults

            data = {**data, "options": with_defaults(data.get("model", "ufa"), data.get("options") or {})}
        return data

    # the fusion task: picks CADNIF's Eq. 7 loss weights; "multi-focus" for the embedded data
    task: Task = "multi-focus"
    # null: the prepared (DVC) dataset; otherwise unsupervised training on source pairs
    source: SourceSpec | None = None
    # a patch folder cut from train.source's training split (`fusion data patches`); its
    # held-out split still validates and evaluates the run
    patches: str | None = None
    # a stage of the model's recipe (fusion.models.registry.Stage); auto: its first stage, or
    # the stage that starts from train.init_from (CrossFuse: autoencoder, then fusion; joint
    # for its one-stage variant)
    stage: str = "auto"
    # checkpoint (file, run folder or MLflow URI) the stage starts from (CrossFuse: stage-1 encoders)
    init_from: str | None = None
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


class EvaluateConfig(StrictModel):
    # ["all"] = every metric of docs/metrics.md that applies to the test set
    metrics: list[str] = ["all"]
    baselines: list[str] = ["all"]
    grid_pairs: int = Field(3, ge=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        return check_metric_list(v)

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, v: list[str]) -> list[str]:
        return check_baseline_list(v)


class TrackingConfig(StrictModel):
    experiment: str = "fusionflow"
    default_uri: str = "sqlite:///mlflow/store/mlflow.db"
    artifact_root: str = "mlflow/store/artifacts"


class PromoteConfig(StrictModel):
    """Champion rule of the model registry (fusion/promotion.py)."""

    registry_prefix: str = "fusionflow"  # registered model: <prefix>-<task>-<model>
    metric: str = "auto"  # auto: SSIM_gt where there is a ground truth, else Qabf
    min_improvement: float = Field(0.0, ge=0)
    # @champion also needs a better `metric` than the best classical baseline scored on the same
    # test data in the same run; otherwise @challenger, with the numbers in the reason
    require_beat_baselines: bool = True

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_promote_metric(v)


class StorageConfig(StrictModel):
    """Where Ray Train persists a run's checkpoints, and so whether the nodes share a disk."""

    # null: runs/<name>/ray in the workspace, which every node must mount at the same path;
    # s3://bucket/prefix (gs://, any pyarrow URI): object storage, no shared disk: each worker
    # pulls the run's data version from the DVC remote into a node-local cache
    uri: str | None = None
    # the node-local cache of DVC data versions, on each worker node (~ is that node's home)
    cache: str = "~/.cache/fusionflow"

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import re

        if not v.strip():
            raise ValueError("empty; null keeps checkpoints in the workspace")
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", v)
        if scheme is None and "://" in v:
            raise ValueError(f"{v!r}: not a URI (expected scheme://bucket/prefix, e.g. s3://team-bucket/fusionflow)")
        if scheme is not None and scheme.group(1) != "file" and not scheme.group(2).strip("/"):
            raise ValueError(f"{v!r}: names no bucket (expected {scheme.group(1)}://bucket/prefix)")
        return v.rstrip("/")

    @property
    def object_store(self) -> bool:
        """True when the URI is not a local path: the nodes are assumed to share no disk."""
        return self.uri is not None and "://" in self.uri and not self.uri.startswith("file://")


class Config(StrictModel):
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
    storage: StorageConfig = StorageConfig()

    @model_validator(mode="after")
    def _known_names(self) -> Config:
        check_registry_entries(self.sources)
        check_stage_sources(self.sources, self.data)
        if self.nightly.sweep is not None and self.nightly.sweep not in self.sweeps:
            raise ValueError(
                f"nightly.sweep: {self.nightly.sweep!r} is not under `sweeps:`; defined: {sorted(self.sweeps)}"
            )
        check_model(self.train.model, self.train.variant, self.train.options, self.train.stage)
        workers = self.train.ray.num_workers
        if self.train.batch_size % workers:
            raise ValueError(
                f"train.batch_size={self.train.batch_size}: not a multiple of train.ray.num_workers={workers} "
                "(the global batch is split equally across the data-parallel workers)"
            )
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
