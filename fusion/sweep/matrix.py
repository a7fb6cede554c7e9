"""An experiment matrix (params.yaml `sweeps:`) expanded into trials: pure functions, no Ray.

Each trial is a set of overrides on the sweep's profile with a stable, readable id. CrossFuse
two-stage variants depend on one stage-1 trial (both modality auto-encoders) per task and
seed, shared by all of them; a trial that cannot be configured (unknown model or variant)
keeps its error so it fails alone instead of stopping the sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.config import Config, SweepConfig, SweepEntry, load_config, merge_trees, nest_dotted, parse_overrides
from fusion.errors import ConfigError, FusionError

STAGE1 = "stage1"


@dataclass(frozen=True)
class TrialSpec:
    id: str
    overrides: dict[str, Any]  # nested, on top of the sweep's profile and overrides
    depends_on: str | None = None  # the stage-1 trial whose checkpoint this one starts from
    label: str = ""  # the paper's name of the variant, for tables


@dataclass
class Trial:
    spec: TrialSpec
    config: dict[str, Any] | None = None  # the resolved Config (JSON), None when it failed to resolve
    error: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id


def sweep_config(cfg: Config, name: str) -> SweepConfig:
    if name not in cfg.sweeps:
        raise ConfigError(
            f"sweep {name!r} is not defined under `sweeps:` in params.yaml; defined: {sorted(cfg.sweeps) or 'none'}"
        )
    return cfg.sweeps[name]


def slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def expand(sweep: SweepConfig) -> list[TrialSpec]:
    """Every trial of the matrix, stage-1 trials first, each id once."""
    from fusion.models import MODELS

    stage1: dict[str, TrialSpec] = {}
    trials: list[TrialSpec] = []
    for entry in sweep.matrix:
        spec = MODELS.get(entry.model)
        variants = _variants(entry, spec)
        tasks = entry.tasks or list(sweep.data)
        keys = list(entry.grid)
        for task, seed, variant in itertools.product(tasks, sweep.seeds, variants):
            base: dict[str, Any] = {
                "seed": seed,
                "train": {"model": entry.model, "variant": variant, "task": task, "source": sweep.data.get(task)},
            }
            depends = None
            if spec is not None and variant in spec.shared_stage1:
                first, then = spec.stages(variant)[:2]  # the shared stage, and the one starting from it
                depends = slug(entry.model, STAGE1, task, f"s{seed}")
                base["train"]["stage"] = then.name  # its init_from is filled in when the sweep runs
                stage1.setdefault(
                    depends,
                    TrialSpec(
                        depends,
                        merge_trees(base, {"train": {"stage": first.name}}),
                        label=f"{entry.model} stage 1 ({first.name})",
                    ),
                )
            label = spec.variants.get(variant, variant) if spec else variant
            for values in itertools.product(*(entry.grid[k] for k in keys)):
                overrides = merge_trees(base, nest_dotted(dict(zip(keys, values)), "sweep grid key"))
                grid_part = [f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values)]
                tid = slug(entry.model, variant, task, f"s{seed}", *grid_part)
                trials.append(TrialSpec(tid, overrides, depends, " ".join([label, *grid_part])))
    out = [*stage1.values(), *trials]
    seen: set[str] = set()
    for t in out:
        if t.id in seen:
            raise ConfigError(
                f"sweep: trial {t.id} appears twice in the matrix (the same model, variant, task, "
                f"seed and grid values in two rows)"
            )
        seen.add(t.id)
    return out


def _variants(entry: SweepEntry, spec) -> list[str]:
    if entry.variants != "all":
        return list(entry.variants)
    return spec.sweep_variants() if spec is not None else ["all"]  # an unknown model fails in its trial


def resolve(workspace: Path, sweep: SweepConfig, specs: list[TrialSpec]) -> list[Trial]:
    """Each trial's full configuration, or the error that makes it fail (recorded, not raised)."""
    common = parse_overrides(sweep.overrides)
    out = []
    for spec in specs:
        try:
            cfg = load_config(workspace, sweep.profile, merge_trees(common, spec.overrides))
            tree = cfg.model_dump(mode="json", exclude={"sweeps"})  # a trial is one training run, not a sweep
            tree["nightly"]["sweep"] = None
            out.append(Trial(spec, tree))
        except FusionError as exc:
            out.append(Trial(spec, error=str(exc)))
    return out


def sweep_key(name: str, trials: list[Trial], data_version: str, code: str) -> str:
    """Identity of a sweep: its trials' configurations, the data and the code. A re-run with
    the same key continues the same sweep (resumes what did not finish)."""
    body = {
        "name": name,
        "data": data_version,
        "code": code,
        "trials": [[t.id, t.config, t.error, t.spec.depends_on] for t in trials],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def payload(t: Trial) -> dict[str, Any]:
    """What a trial's process receives (JSON-able: it travels to Ray workers)."""
    return {
        "id": t.id,
        "config": t.config,
        "error": t.error,
        "depends_on": t.spec.depends_on,
        "overrides": t.spec.overrides,
    }


def trial_config(t: Trial):
    """The trial's validated Config, or None for a trial whose configuration did not resolve."""
    from fusion.config import Config

    return Config.model_validate(t.config) if t.config else None
