"""The runs a configuration schedules: the nightly deployment and the sweep matrices."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from fusion.config.base import StrictModel
from fusion.config.validation import check_cron
from fusion.tasks import Task


class NightlyConfig(StrictModel):
    """The scheduled deployment of the nightly flow (flows/deploy.py)."""

    profile: str = "smoke"
    overrides: list[str] = []  # --set style overrides, e.g. ["train.device=cuda"]
    use_ray: bool = True
    cron: str = "0 2 * * *"  # 02:00 every day
    timezone: str | None = None  # IANA name, e.g. Europe/Berlin; null: this machine's zone
    concurrency: int = Field(1, ge=1)  # nightly runs at a time
    on_collision: Literal["enqueue", "cancel_new"] = "cancel_new"  # a trigger while one runs: waits, or is skipped
    retries: int = Field(2, ge=0)  # per stage, transient failures only (lost Ray node, tracking hiccup)
    retry_delay_seconds: list[float] = [10.0, 60.0]
    notify_webhook: str | None = None  # POSTed a JSON summary when a nightly run fails
    sweep: str | None = None  # a `sweeps:` entry run (or continued) after the configured model

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin or UTC") from None
        return v


class SweepEntry(StrictModel):
    """One row of a sweep's matrix: a model, its variants, the tasks, a grid of train.* values."""

    model: str
    variants: list[str] | Literal["all"] = "all"  # "all": every variant the papers report
    tasks: list[Task] | None = None  # null: every task of the sweep's `data`
    grid: dict[str, list[Any]] = {}  # e.g. {train.options.lambda_l1: [0, 0.2]}: crossed with each other

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if key.split(".")[0] not in ("train", "evaluate") or "." not in key:
                raise ValueError(f"grid key {key!r}: a train.* or evaluate.* parameter, e.g. train.options.lambda_l1")
            if not values:
                raise ValueError(f"grid key {key!r}: needs at least one value")
        return v


class SweepResources(StrictModel):
    # per trial; also its torch threads. A data-parallel trial's workers take train.ray.* on top
    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)  # per trial; a fraction (0.25) packs several trials on one GPU


class SweepConfig(StrictModel):
    """An experiment matrix run as Ray Tune trials (fusion/sweep, `fusion sweep NAME`)."""

    profile: str = "smoke"
    overrides: list[str] = []  # --set style, applied to every trial
    seeds: list[int] = [0]
    # task -> `sources` registry name to train on; null = the prepared synthetic multi-focus set
    data: dict[Task, str | None] = {"multi-focus": None}
    matrix: list[SweepEntry]
    resources: SweepResources = SweepResources()
    max_concurrent: int = Field(0, ge=0)  # trials at a time; 0 = as many as the resources allow
    budget_minutes: float = Field(0, ge=0)  # wall clock for the whole sweep; 0 = no limit
    max_failures: int = Field(2, ge=0)  # restarts of a trial whose worker died (from its last checkpoint)
    evaluate: bool = True  # score each trial on its test split (the comparison table)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds {v}: at least one, no repeats")
        return v
