"""The sweep driver: an experiment matrix as Ray Tune trials under one MLflow parent run.

1. Expand the matrix (fusion.sweep.matrix) and resolve each trial's configuration.
2. Find the sweep's parent run by its key (trial configurations + data version + code):
   an unfinished one is continued, so a re-run resumes instead of starting over.
3. Phase 1: every trial without a dependency (CrossFuse stage 1 among them); phase 2: the
   trials that start from a stage-1 checkpoint, once it exists. Ray Tune places them
   (resources per trial, a concurrency cap), restarts a trial whose worker died (it then
   continues from its last checkpoint) and enforces the wall-clock budget.
4. The parent gets the table of every trial's status and, per task, the comparison table
   of the evaluated trials (fusion.report). It ends FINISHED when every trial has a final
   status, KILLED when some are left for the next run (out of time, not started).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fusion import pipeline, stop_signals, tracking
from fusion.config import SweepConfig, load_config, resolve_workspace
from fusion.errors import ConfigError
from fusion.git_info import git_diff_hash, git_state
from fusion.sweep.matrix import Trial, expand, payload, resolve, sweep_config, sweep_key, trial_config
from fusion.sweep.summary import summarise
from fusion.sweep.trial import (
    CHECKPOINTS,
    DONE,
    FINAL,
    TAG_STATUS,
    WORKER_FILE,
    SweepContext,
    child_run,
    execute,
    find_child_run,
    record_failure,
)
from fusion.sweep.tune_phase import tune_phase

log = logging.getLogger(__name__)

SWEEPS_DIR = "sweeps"
TAG_ROLE, TAG_KEY = "sweep.role", "sweep.key"


@dataclass
class SweepResult:
    name: str
    key: str
    dir: Path
    parent_run_id: str
    trials: list[dict[str, Any]]
    resumed: bool
    seconds: float
    reports: dict[str, Path] = field(default_factory=dict)  # task -> report.md

    @property
    def finished(self) -> bool:
        return all(t["status"] in FINAL for t in self.trials)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["status"]] = out.get(t["status"], 0) + 1
        return out


def plan(
    workspace: Path | str | None, name: str, overrides: list[str] | None = None
) -> tuple[SweepConfig, list[Trial]]:
    """The sweep's trials with their resolved configurations (nothing runs)."""
    ws = resolve_workspace(workspace)
    return _plan(ws, load_config(ws), name, overrides)


def _plan(ws: Path, cfg, name: str, overrides: list[str] | None) -> tuple[SweepConfig, list[Trial]]:
    sweep = sweep_config(cfg, name)
    if overrides:
        sweep = sweep.model_copy(update={"overrides": [*sweep.overrides, *overrides]})
    for task, source in sweep.data.items():
        if source is not None and source not in cfg.sources:
            raise ConfigError(
                f"sweeps.{name}.data.{task}: {source!r} is not in the `sources` registry; "
                f"registered: {sorted(cfg.sources) or 'none'} (null = the prepared synthetic set)"
            )
    if sweep.profile != "default":
        load_config(ws, sweep.profile)  # an unknown profile fails here, not in every trial
    return sweep, resolve(ws, sweep, expand(sweep))


def run_sweep(
    workspace: Path | str | None,
    name: str,
    overrides: list[str] | None = None,
    *,
    new: bool = False,
    budget_minutes: float | None = None,
    max_concurrent: int | None = None,
    use_ray: bool = True,
) -> SweepResult:
    started = time.time()
    ws = resolve_workspace(workspace)
    base = load_config(ws)
    sweep, trials = _plan(ws, base, name, overrides)
    updates = {
        k: v for k, v in (("budget_minutes", budget_minutes), ("max_concurrent", max_concurrent)) if v is not None
    }
    sweep = sweep.model_copy(update=updates)
    prepared = pipeline.prepare(ws, base)
    git = git_state()
    code = git["git.commit"] + (":" + git_diff_hash() if git["git.dirty"] == "true" else "")
    key = sweep_key(name, trials, prepared.version, f"{code}@{time.time()}" if new else code)
    sdir = ws / pipeline.RUNS_DIR / SWEEPS_DIR / f"{name}-{key[:12]}"
    sdir.mkdir(parents=True, exist_ok=True)
    target = tracking.target(base, ws)
    store = None
    if base.storage.uri and base.storage.object_store and use_ray:
        # the nodes share no disk: trial folders persist in the bucket (fusion/sweep/store.py), the
        # data comes from the DVC remote; checked before the parent run is made
        from fusion.train.distributed import preflight

        preflight(base, prepared.root, ws, asdict(target))
        store = f"{base.storage.uri.rstrip('/')}/{SWEEPS_DIR}/{sdir.name}"
    parent, resumed = _parent_run(target, name, key, sweep, trials, prepared, git)
    threads = max(1, int(sweep.resources.cpus))
    ctx = SweepContext(
        name,
        str(sdir),
        str(ws),
        parent,
        asdict(target),
        {**asdict(prepared), "root": str(prepared.root)},
        threads,
        started + sweep.budget_minutes * 60 if sweep.budget_minutes else None,
        sweep.evaluate,
        store,
        base.storage.cache,
    )
    status = {t.id: ctx.status(t.id) for t in trials}
    if resumed and all(_final(status[t.id]) for t in trials):
        log.info(
            "sweep %s: every trial already has a final status (parent run %s); nothing to do (--new starts it again)",
            name,
            parent,
        )
        rows = json.loads((sdir / "trials.json").read_text()) if (sdir / "trials.json").is_file() else []
        return SweepResult(name, key, sdir, parent, rows, True, time.time() - started)
    if resumed:
        tracking.client(target).update_run(parent, status="RUNNING")
    for t in trials:  # stage 2 starts from its stage-1 trial's best checkpoint
        if t.spec.depends_on and t.config and not store:
            t.config["train"]["init_from"] = str(sdir / t.spec.depends_on / CHECKPOINTS / "best.pt")
    log.info(
        "sweep %s: %d trials in %s (parent run %s%s)", name, len(trials), sdir, parent, ", resumed" if resumed else ""
    )
    try:
        for t in trials:  # a configuration error fails its trial alone, without taking a Ray slot
            if t.error and not status[t.id]:
                status[t.id] = execute(payload(t), ctx)
        todo = [t for t in trials if not t.spec.depends_on and not _final(status[t.id])]
        _run(todo, ctx, sweep, sdir, "phase1", use_ray, status)
        todo = []
        for t in trials:
            if not t.spec.depends_on or _final(status[t.id]):
                continue
            dep = status.get(t.spec.depends_on) or {}
            if dep.get("status") in DONE:
                if store and t.config:  # every node downloads it from the stage-1 trial's MLflow run
                    t.config["train"]["init_from"] = f"runs:/{dep['run_id']}/checkpoints/best.pt"
                todo.append(t)
            elif dep.get("status") == "failed":
                run = child_run(ctx, payload(t), trial_config(t))
                status[t.id] = record_failure(
                    ctx, payload(t), run, f"stage-1 trial {t.spec.depends_on} failed", "skipped"
                )
        _run(todo, ctx, sweep, sdir, "phase2", use_ray, status)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (fusion/stop_signals.py)
        stop_signals.ignore_further()
        _finish_rows(trials, status, sdir, ctx)  # trial runs say "interrupted" rather than stay RUNNING
        tracking.end_run(target, parent, "KILLED")
        log.warning("sweep %s interrupted; run it again to resume the unfinished trials", name)
        raise
    rows = _finish_rows(trials, status, sdir, ctx)
    result = SweepResult(name, key, sdir, parent, rows, resumed, time.time() - started)
    summarise(result, target, sweep)
    return result


def _final(record: dict | None) -> bool:
    return bool(record and record["status"] in FINAL)


def _run(
    trials: list[Trial],
    ctx: SweepContext,
    sweep: SweepConfig,
    sdir: Path,
    phase: str,
    use_ray: bool,
    status: dict[str, dict | None],
) -> None:
    if not trials:
        return
    if ctx.deadline is not None and time.time() >= ctx.deadline:
        log.warning("sweep budget spent: %d trial(s) of %s not started", len(trials), phase)
        return
    if not use_ray:
        for t in trials:
            if ctx.deadline is not None and time.time() >= ctx.deadline:
                break  # the rest stay not_started, as under Ray
            status[t.id] = execute(payload(t), ctx)
        return
    errors = tune_phase(trials, ctx, sweep, sdir, phase)
    for t in trials:
        status[t.id] = ctx.status(t.id)
        if t.id in errors and not _final(status[t.id]):
            # the worker died more than max_failures times, or a bug raised: recorded, the rest goes on
            status[t.id] = record_failure(ctx, payload(t), child_run(ctx, payload(t), trial_config(t)), errors[t.id])


def _finish_rows(trials: list[Trial], status: dict, sdir: Path, ctx: SweepContext) -> list[dict[str, Any]]:
    """One row per trial; those without a final record are out_of_time or interrupted (they
    have a checkpoint to continue from) or not_started, and their child runs say so."""
    rows = []
    for t in trials:
        rec = status.get(t.id) or ctx.status(t.id) or {}
        state = rec.get("status")
        if state is None:  # stopped from outside: the budget's hard stop, Ctrl-C, or never started
            late = ctx.deadline is not None and time.time() >= ctx.deadline
            started = ctx.has(t.id, f"{CHECKPOINTS}/last.pt")
            state = ("out_of_time" if late else "interrupted") if started else "not_started"
            rec = {**rec, "status": state}
            began = ctx.has(t.id, WORKER_FILE)
            # on object storage the driver made the trial's run before Tune placed it
            made = bool(ctx.store) and rec.get("run_id") is None and bool(find_child_run(ctx, t.id))
            if rec.get("run_id") is None and (began or made):
                run = child_run(ctx, payload(t), trial_config(t))
                tracking.set_tags(run.target, run.run_id, {TAG_STATUS: state})
                tracking.end_run(run.target, run.run_id, "KILLED")
                rec["run_id"] = run.run_id
            if began:
                ctx.record(t.id, rec)
        rows.append(
            {
                "trial": t.id,
                "label": t.spec.label or t.id,
                "status": state,
                "epochs": rec.get("epochs", 0),
                "attempts": rec.get("attempts", 0),
                "best_val_loss": rec.get("best_val_loss"),
                "depends_on": t.spec.depends_on or "",
                "run_id": rec.get("run_id", ""),
                "task": (t.config or {}).get("train", {}).get("task", ""),
                "error": rec.get("error", ""),
            }
        )
    return rows


def _parent_run(
    target, name: str, key: str, sweep: SweepConfig, trials: list[Trial], prepared, git
) -> tuple[str, bool]:
    client = tracking.client(target)
    found = client.search_runs(
        [tracking.experiment_id(target)],
        max_results=1,
        order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`{TAG_ROLE}` = 'parent' and tags.`{TAG_KEY}` = '{key}'",
    )
    if found:
        return found[0].info.run_id, True
    run = client.create_run(
        tracking.experiment_id(target),
        run_name=f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            TAG_ROLE: "parent",
            TAG_KEY: key,
            "sweep.name": name,
            "data.version": prepared.version,
            "data.dvc_md5": prepared.data_hash,
            **git,
            **tracking.environment_tags(),
            "mlflow.note.content": f"Sweep `{name}`: {len(trials)} trials (profile {sweep.profile}). The child runs are the "
            "trials; `sweep/trials.md` says how each ended, `report/<task>/report.md` compares them.",
        },
    )
    definition = sweep.model_dump(mode="json")
    params = {"sweep.name": name, "sweep.trials": len(trials), **{f"sweep.{k}": v for k, v in definition.items()}}
    for k, v in params.items():
        client.log_param(run.info.run_id, k, tracking.param_value(v))
    client.log_text(
        run.info.run_id,
        json.dumps({"sweep": definition, "trials": [payload(t) for t in trials]}, indent=2, default=str),
        "sweep/plan.json",
    )
    return run.info.run_id, False
