"""One phase of a sweep as Ray Tune experiments: the trials' resources checked against the
cluster, their payloads (and, on object storage, their MLflow runs and data) prepared here,
the data-parallel trials after the others and no more at a time than fit with their workers,
Tune's failure handling and wall-clock budget; returns the trials that errored."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from fusion.config import RayConfig, SweepConfig
from fusion.errors import ConfigError
from fusion.sweep.matrix import Trial, payload, trial_config
from fusion.sweep.trial import SweepContext, child_run

log = logging.getLogger(__name__)
GRACE_SECONDS = 120  # after the budget, Ray stops trials still running (they stop themselves first)


def tune_phase(trials: list[Trial], ctx: SweepContext, sweep: SweepConfig, sdir: Path, phase: str) -> dict[str, str]:
    """Run `trials` as a Ray Tune experiment, the data-parallel ones as a second; returns trial
    id -> error of those that errored."""
    from fusion.train.distributed import check_fits, init_ray

    available = init_ray()
    res = sweep.resources
    for kind, want in (("CPU", res.cpus), ("GPU", res.gpus)):
        if want > available.get(kind, 0):
            raise ConfigError(
                f"sweeps.{ctx.name}.resources.{kind.lower()}s={want} but the Ray cluster has "
                f"{available.get(kind, 0):g} {kind}s: no trial could ever start"
            )
    errors: dict[str, str] = {}
    single: list[Trial] = []
    parallel: list[Trial] = []
    workers: list[RayConfig] = []
    for t in trials:
        cfg = trial_config(t)
        if cfg is None or cfg.train.ray.num_workers == 1:
            single.append(t)
            continue
        try:  # a data-parallel trial whose workers can never be placed fails alone
            check_fits(cfg, available, besides={"CPU": res.cpus, "GPU": res.gpus})
        except ConfigError as exc:
            errors[t.id] = f"ConfigError: {exc}"
            continue
        parallel.append(t)
        workers.append(cfg.train.ray)
    payloads = {t.id: payload(t) for t in [*single, *parallel]}
    if ctx.store:
        _on_object_storage([*single, *parallel], payloads, ctx)
    # Tune reserves a trial's own resources only: Ray Train's workers ask for theirs once the
    # trial runs. Data-parallel trials started beside others could each hold a CPU and wait for
    # workers that never fit (two on a 2-CPU node did, retrying every 60 s for good), so they
    # run after the rest, as many at a time as fit with their workers.
    if single:
        errors |= _fit(single, payloads, ctx, sweep, sdir, phase, sweep.max_concurrent)
    if parallel:
        if ctx.deadline is not None and time.time() >= ctx.deadline:
            log.warning("sweep budget spent: %d data-parallel trial(s) of %s not started", len(parallel), phase)
            return errors
        cap = min(sweep.max_concurrent or len(parallel), side_by_side(workers, res.cpus, res.gpus, available))
        errors |= _fit(parallel, payloads, ctx, sweep, sdir, f"{phase}-parallel", cap)
    return errors


def side_by_side(workers: list[RayConfig], cpus: float, gpus: float, available: dict[str, float]) -> int:
    """How many data-parallel trials with these `train.ray` settings fit on the cluster at once,
    each with its own resources and its workers' (the largest such footprint counted for all)."""
    cpu = max(cpus + w.num_workers * w.cpus_per_worker for w in workers)
    gpu = max(gpus + w.num_workers * w.gpus_per_worker for w in workers)
    cap = len(workers)
    for kind, need in (("CPU", cpu), ("GPU", gpu)):
        if need > 0:
            cap = min(cap, int((available.get(kind, 0) + 1e-9) // need))
    return max(1, cap)


def _fit(
    trials: list[Trial],
    payloads: dict[str, dict],
    ctx: SweepContext,
    sweep: SweepConfig,
    sdir: Path,
    name: str,
    cap: int,
) -> dict[str, str]:
    """One Ray Tune experiment of `trials`, at most `cap` at a time (0: as many as fit);
    returns trial id -> error of those that errored."""
    from ray import tune

    from fusion.sweep.trial import ray_trainable

    res = sweep.resources
    budget = None
    if ctx.deadline is not None:
        budget = max(1.0, ctx.deadline - time.time()) + GRACE_SECONDS
    payloads = {t.id: payloads[t.id] for t in trials}
    # the grid is over trial ids (Tune's progress table shows them); the payloads travel once
    # through the object store
    trainable = tune.with_parameters(ray_trainable, trials=payloads, sweep=asdict(ctx))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": res.cpus, "gpu": res.gpus}),
        param_space={"trial": tune.grid_search([t.id for t in trials])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cap or None,
            time_budget_s=budget,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=f"{ctx.store}/ray" if ctx.store else str(sdir / "ray"),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            verbose=1,
        ),
    )
    # Tune's own SIGINT handler only asks the experiment to end and returns from fit as if it
    # had: the sweep would go on to its next phase. Without it Ctrl-C (and SIGTERM, which takes
    # Ctrl-C's path) raise in fit, and the sweep records its unfinished trials as interrupted.
    previous = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        grid = tuner.fit()
    finally:
        if previous is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous
    errors: dict[str, str] = {}
    for i in range(len(grid)):  # ResultGrid is indexable but declares no __iter__
        r = grid[i]
        if r.error is not None:
            if r.config is None:  # param_space gives every trial its id; Ray lost it
                raise RuntimeError(f"a Ray trial failed without its config, so without its id: {r.error}")
            errors[r.config["trial"]] = f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1][:2000]}"
    return errors


def _on_object_storage(trials: list[Trial], payloads: dict[str, dict], ctx: SweepContext) -> None:
    """What trials on nodes without the workspace's disk need from this machine: their MLflow
    runs made here (making one reads the workspace), and the DVC outputs each one reads,
    checked on the remote; a trial whose data is not there fails alone, saying so."""
    from fusion.data.node_cache import data_ref
    from fusion.data.stages import output_dir
    from fusion.train.distributed import training_reads

    ws, prepared = Path(ctx.workspace), ctx.prepared_data()
    refs: dict[tuple, dict | str] = {}  # one remote check per set of folders (most trials read the same)
    for t in trials:
        cfg = trial_config(t)
        if cfg is None:
            continue
        child_run(ctx, payloads[t.id], cfg)
        reads = training_reads(cfg, prepared.root)
        if ctx.evaluate:  # the prepared test sets the evaluation scores on
            for name in sorted(cfg.data.test_sets):
                folder = output_dir(ws, "test_sets", name)
                if (folder / "manifest.json").is_file():
                    reads[f"data.test_sets.{name}"] = folder
        key = tuple(sorted((k, str(v)) for k, v in reads.items()))
        if key not in refs:
            try:
                refs[key] = data_ref(ws, reads).to_dict()
            except ConfigError as exc:
                refs[key] = str(exc)
        found = refs[key]
        payloads[t.id]["data" if isinstance(found, dict) else "error"] = found


def _trial_name(trial) -> str:
    return trial.config["trial"]
