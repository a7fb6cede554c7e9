"""Cross-checks of a configuration against the registries it names: models, dataset layouts,
metrics and baselines, and the nightly schedule against Prefect's own cron check.

Deferred imports: the registries import torch, config must stay cheap to load. They raise
ValueError (a ConfigError is one), which pydantic reports under the key being validated.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fusion.config.schema_data import DataConfig
from fusion.config.source_registry import SourceSpec, registry_spec

# (section, key, source name, layouts the stage reads: None = any layout holding fusion pairs)
StageSource = tuple[str, str, str, tuple[str, ...] | None]


def check_metric_list(v: list[str]) -> list[str]:
    from fusion.metrics import ALL, METRICS, select_metrics

    unknown = [n for n in select_metrics(v).unknown if n != ALL]
    if unknown or not v or (ALL in v and len(v) > 1):
        raise ValueError(f"unknown or mixed metric names {unknown or v}; valid: ['all'] or names from {list(METRICS)}")
    return v


def check_promote_metric(v: str) -> str:
    from fusion.metrics import METRICS

    if v != "auto" and v not in METRICS:
        raise ValueError(f"unknown metric {v!r}; valid: auto or one of {list(METRICS)}")
    return v


def check_baseline_list(v: list[str]) -> list[str]:
    from fusion.baselines import BASELINES

    unknown = [n for n in v if n not in BASELINES and n != "all"]
    if unknown or ("all" in v and len(v) > 1):
        raise ValueError(
            f"unknown or mixed baseline names {unknown or v}; valid: ['all'], [] or names from {list(BASELINES)}"
        )
    return v


def check_cron(v: str) -> str:
    """nightly.cron as the deployed schedule will check it: Prefect's CronSchedule rule, on
    Prefect's own cron parser."""
    reason = _cron_problem(v)
    if reason:
        raise ValueError(f"{reason}; expected minute hour day month weekday, e.g. '0 2 * * *'")
    return v


def _cron_problem(v: str) -> str | None:
    croniter = _prefect_croniter()
    if croniter is not None:
        # the two rules of prefect._internal.schemas.validators.validate_cron_string
        if not croniter.is_valid(v):
            return f'Invalid cron string: "{v}"'
        if any(field.casefold() in ("r", "h") for field in v.split()):
            return f'Random and Hashed expressions are unsupported, received: "{v}"'
        return None
    try:
        from prefect.client.schemas.schedules import CronSchedule
    except ImportError:
        # a core install (GPU machines, no orchestration stack): no schedule can run here, and
        # wherever Prefect is installed the expression is checked on every load
        return None
    try:
        CronSchedule(cron=v)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


@functools.cache
def _prefect_croniter() -> Any:
    """The croniter class Prefect vendors, loaded from its file: importing it the usual way runs
    Prefect's package import first, 2 s in every command that loads a configuration. None where
    Prefect is not installed or that file is gone or no longer loads alone (then the caller asks
    Prefect's CronSchedule)."""
    try:
        spec = importlib.util.find_spec("prefect")
    except ImportError:
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "_vendor" / "croniter" / "croniter.py"
        loaded = importlib.util.spec_from_file_location("fusion.config._prefect_croniter", path)
        if path.is_file() and loaded is not None and loaded.loader is not None:
            module = importlib.util.module_from_spec(loaded)
            sys.modules[loaded.name] = module
            try:
                loaded.loader.exec_module(module)
                return module.croniter
            except Exception:  # a Prefect whose file no longer stands alone
                del sys.modules[loaded.name]
    return None


def check_registry_entries(sources: dict[str, dict[str, Any]]) -> None:
    """Each `sources` entry: a known layout with its loader's options, a usable test_fraction."""
    from fusion.data.sources import validate_spec

    for name, entry in sources.items():
        spec = registry_spec(name, entry)
        validate_spec(name, {"layout": spec["layout"], "path": spec["path"], **spec["options"]})
        try:
            SourceSpec.model_validate({**spec, "path": str(spec["path"])})
        except ValidationError as exc:
            raise ValueError(f"sources.{name}.test_fraction: {exc.errors()[0]['msg']}") from None


def stage_sources(data: DataConfig) -> list[StageSource]:
    """Every DVC stage of the `data` section with the `sources` entry it reads."""
    stages: list[StageSource] = [("synth_multifocus", "", data.synth_multifocus.source, ("duts", "photos"))]
    stages += [("kaist_pairs", k, v.source, ("kaist",)) for k, v in data.kaist_pairs.items()]
    stages += [("patches", k, v.source, None) for k, v in data.patches.items()]
    stages += [("test_sets", k, v.source, None) for k, v in data.test_sets.items()]
    return stages


def check_stage_sources(sources: dict[str, dict[str, Any]], data: DataConfig) -> None:
    """Each data stage reads a registered source of a layout it can read."""
    from fusion.data.sources import LAYOUT_TASKS

    for section, key, source, layout in stage_sources(data):
        where = f"data.{section}{'.' + key if key else ''}.source"
        if source not in sources:
            raise ValueError(
                f"{where}: {source!r} is not in the `sources` registry; registered: {sorted(sources) or 'none'}"
            )
        got = sources[source]["layout"]
        if layout and got not in layout:
            raise ValueError(f"{where}: {source!r} has layout {got}; this stage reads layout {' or '.join(layout)}")
        if layout is None and LAYOUT_TASKS.get(got, "") is None and "task" not in sources[source]:
            raise ValueError(f"{where}: {source!r} (layout {got}) holds no fusion pairs")


def check_model(model: str, variant: str, options: dict[str, Any], stage: str = "auto") -> None:
    """train.model, train.variant, train.options and train.stage against the model registry
    (whether the stage fits this model and train.init_from is the trainer's to say)."""
    from fusion.models import MODELS, check_options

    known = [
        "auto",
        *sorted({s.name for spec in MODELS.values() for v in spec.variants for s in spec.stages(v)} - {"single"}),
    ]
    if stage not in known:
        raise ValueError(f"train.stage: {stage!r} is no model's stage; valid: {', '.join(known)}")

    if model not in MODELS:
        raise ValueError(f"train.model: unknown model {model!r}; valid: {sorted(MODELS)}")
    variants = MODELS[model].variants
    if variant not in variants:
        raise ValueError(f"train.variant: unknown variant {variant!r} of {model}; valid: {list(variants)}")
    check_options(model, options)  # a ConfigError is a ValueError
