"""The nightly pipeline as Prefect flows: prepare -> train -> evaluate -> promote -> report.

Each stage is also a flow of its own, so a user can run one alone:

    prepare(profile, overrides, workspace)        dvc add + repro + push (a no-op when nothing changed)
    train(profile, overrides, workspace, use_ray) MLflow run + training through Ray -> run id
    evaluate(run_id, workspace)                   the run's model and the baselines on its test set
    promote(run_id, workspace)                    registry version; @champion only if it beats the baselines and the champion
    sweep(name, overrides, workspace)             an experiment matrix as Ray Tune trials (params.yaml `sweeps:`)

`nightly` chains them (and the sweep named by `nightly.sweep`, if any) and publishes a summary (Prefect artifact with links + MLflow). Runs
on Prefect's ephemeral local API by default and against a server when PREFECT_API_URL is
set; flows/deploy.py schedules it. Every stage calls the same library function as the
CLI (fusion.pipeline): Prefect adds state, retries, caching and the UI, nothing else.

Retries: transient failures (a lost Ray node, a tracking-server hiccup, a network error)
are retried with back-off (`nightly.retries`, `nightly.retry_delay_seconds`);
deterministic ones (fusionflow's ConfigError/DataError: bad config, bad data) fail at
once with their message. Caching: training is keyed on the workspace, tracking store,
data version, resolved configuration and the code (git commit, plus the diff when the
tree is dirty), evaluation on the run and
its evaluation settings, so re-running a failed nightly does not redo finished stages.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.notify import notify_failure
from flows.policy import CACHE_DAYS, evaluate_key, retry_transient, stage_options, train_key
from fusion import pipeline, tracking
from fusion.config import Config, load_config, resolve_workspace

if TYPE_CHECKING:
    from fusion.evaluate import EvalResult
    from fusion.promotion import Decision
    from fusion.sweep.runner import SweepResult

log = logging.getLogger(__name__)


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


@task(name="prepare-data", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def prepare_task(workspace: Path, cfg: Config) -> pipeline.Prepared:
    prepared = pipeline.prepare(workspace, cfg)
    get_run_logger().info(
        "data %s (version %s, md5 %s): stages run %s, skipped %s; %s",
        prepared.root,
        prepared.version[:12],
        prepared.data_hash,
        prepared.stages_ran or "none",
        prepared.stages_skipped or "none",
        prepared.counts,
    )
    return prepared


@task(
    name="train",
    cache_key_fn=train_key,
    cache_expiration=timedelta(days=CACHE_DAYS),
    persist_result=True,
    retry_condition_fn=retry_transient,
)
def train_task(workspace: Path, cfg: Config, prepared: pipeline.Prepared, use_ray: bool) -> pipeline.RunInfo:
    pipeline.check_storage(workspace, cfg, prepared, use_ray)
    run = pipeline.start(workspace, cfg, prepared)
    logger = get_run_logger()
    logger.info(
        "MLflow run %s (%s); training %s %s, %d epochs%s",
        run.run_id,
        run.name,
        cfg.train.model,
        cfg.train.variant,
        cfg.train.epochs,
        " through Ray" if use_ray else "",
    )
    try:
        pipeline.train(cfg, prepared, run, use_ray)
    except BaseException:
        tracking.end_run(run.target, run.run_id, "FAILED")  # a retry starts a fresh run
        raise
    return run


@task(
    name="evaluate",
    cache_key_fn=evaluate_key,
    cache_expiration=timedelta(days=CACHE_DAYS),
    persist_result=True,
    retry_condition_fn=retry_transient,
)
def evaluate_task(cfg: Config, prepared: pipeline.Prepared, run: pipeline.RunInfo) -> EvalResult | None:
    ckpt_dir = run.dir / "checkpoints"
    if not ckpt_dir.is_dir():  # trained elsewhere (another machine, a cleaned runs/): fetch them
        tracking.download(run.target.uri, f"runs:/{run.run_id}/checkpoints", run.dir)
    return pipeline.evaluate(cfg, prepared, run, ckpt_dir)


@task(name="promote", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def promote_task(cfg: Config, prepared: pipeline.Prepared, run: pipeline.RunInfo) -> Decision:
    return pipeline.promote(cfg, prepared, run)


@task(name="sweep", cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def sweep_task(
    workspace: Path, name: str, overrides: list[str] | None = None, budget_minutes: float | None = None
) -> SweepResult:
    # no Prefect cache needed: running a sweep again continues it (finished trials are kept)
    from fusion.sweep.runner import run_sweep

    result = run_sweep(workspace, name, overrides, budget_minutes=budget_minutes)
    get_run_logger().info("sweep %s: %s (parent run %s)", name, result.counts(), result.parent_run_id)
    return result


def _sweep_markdown(result, target: tracking.TrackingTarget) -> str:
    from fusion.sweep.summary import trials_markdown

    return (
        f"## Sweep {result.name}\n\nParent run: {tracking.run_url(target, result.parent_run_id)}\n\n"
        f"{'All trials have a final status.' if result.finished else 'Unfinished trials remain: the next run continues them.'}"
        f"\n\n" + trials_markdown(result.trials)
    )


# --------------------------------------------------------------------------- stage flows


def _config(workspace: str | None, profile: str, overrides: list[str] | None) -> tuple[Path, Config]:
    ws = resolve_workspace(workspace)
    return ws, load_config(ws, profile, overrides)  # a typo fails here, before any work


def _existing_run(workspace: str | None, run_id: str) -> tuple[Path, Config, pipeline.RunInfo]:
    ws = resolve_workspace(workspace)
    target = tracking.target(load_config(ws), ws)
    cfg = pipeline.run_config(target, run_id)
    return ws, cfg, pipeline.run_info(ws, cfg, run_id)


@flow(name="prepare", log_prints=True)
def prepare(profile: str = "smoke", overrides: list[str] | None = None, workspace: str | None = None) -> dict[str, Any]:
    """DVC: track the raw data, reproduce the preparation stages, push the snapshot."""
    ws, cfg = _config(workspace, profile, overrides)
    prepared = prepare_task.with_options(**stage_options(cfg))(ws, cfg)
    return {
        "data_hash": prepared.data_hash,
        "data_version": prepared.version,
        "stages_ran": prepared.stages_ran,
        "counts": prepared.counts,
    }


@flow(name="train", log_prints=True)
def train(
    profile: str = "smoke", overrides: list[str] | None = None, workspace: str | None = None, use_ray: bool = True
) -> str:
    """Train the configured model on the prepared data (through Ray); returns the MLflow run id."""
    ws, cfg = _config(workspace, profile, overrides)
    prepared = pipeline.current_data(ws, cfg)
    run = train_task.with_options(**stage_options(cfg))(ws, cfg, prepared, use_ray)
    tracking.end_run(run.target, run.run_id)
    return run.run_id


@flow(name="evaluate", log_prints=True)
def evaluate(run_id: str, workspace: str | None = None) -> dict[str, Any]:
    """Score run `run_id`'s model beside the baselines on its test set; logs to that run."""
    ws, cfg, run = _existing_run(workspace, run_id)
    result = evaluate_task.with_options(**stage_options(cfg))(cfg, pipeline.current_data(ws, cfg), run)
    return {"run_id": run_id, "means": result.means if result else {}}


@flow(name="promote", log_prints=True)
def promote(run_id: str, workspace: str | None = None) -> dict[str, Any]:
    """Register run `run_id`'s model; it becomes @champion only if it beats the best baseline and the current one."""
    ws, cfg, run = _existing_run(workspace, run_id)
    from dataclasses import asdict

    return asdict(promote_task.with_options(**stage_options(cfg))(cfg, pipeline.current_data(ws, cfg), run))


@flow(name="sweep", log_prints=True)
def sweep(
    name: str = "smoke",
    overrides: list[str] | None = None,
    workspace: str | None = None,
    budget_minutes: float | None = None,
) -> dict[str, Any]:
    """Run (or continue) the experiment matrix `name` from params.yaml as Ray Tune trials."""
    ws = resolve_workspace(workspace)
    cfg = load_config(ws)
    result = sweep_task.with_options(**stage_options(cfg))(ws, name, overrides, budget_minutes)
    create_markdown_artifact(
        key=f"sweep-{name}".lower().replace("_", "-"),
        markdown=_sweep_markdown(result, tracking.target(cfg, ws)),
        description=f"How each trial of sweep {name} ended",
    )
    return {
        "parent_run_id": result.parent_run_id,
        "counts": result.counts(),
        "finished": result.finished,
        "dir": str(result.dir),
    }


# --------------------------------------------------------------------------- the nightly flow


@flow(name="fusionflow-nightly", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def nightly(
    profile: str = "smoke",
    overrides: list[str] | None = None,
    workspace: str | None = None,
    use_ray: bool = True,
) -> dict[str, Any]:
    """Prepare the data version, train the configured model through Ray, evaluate it beside the
    baselines, promote it if it beats the champion, and publish the summary (also a Prefect
    artifact with links to the runs)."""
    start = time.perf_counter()
    ws, cfg = _config(workspace, profile, overrides)
    opts = stage_options(cfg)
    # Prefect's sync/async dispatch returns the id itself outside an event loop
    progress = cast(
        UUID,
        create_progress_artifact(0.0, key="nightly-progress", description="prepare -> train -> evaluate -> promote"),
    )

    def step(done: float, label: str) -> None:
        update_progress_artifact(progress, done)
        get_run_logger().info("nightly: %s (%.0f%%)", label, done)

    prepared, t_prepare = _timed(prepare_task.with_options(**opts), ws, cfg)
    step(20, "data ready")
    run, t_train = _timed(train_task.with_options(**opts), ws, cfg, prepared, use_ray)
    step(70, "trained")
    try:
        result, t_eval = _timed(evaluate_task.with_options(**opts), cfg, prepared, run)
        step(90, "evaluated")
        decision = promote_task.with_options(**opts)(cfg, prepared, run) if result is not None else None
    except BaseException:
        tracking.end_run(run.target, run.run_id, "FAILED")
        raise
    step(100, "promoted" if decision else "done (stage-1 run: nothing to evaluate)")
    tracking.end_run(run.target, run.run_id)
    swept = None
    if cfg.nightly.sweep:  # the configured model first (it is what gets promoted), then the matrix
        swept, t_sweep = _timed(sweep_task.with_options(**opts), ws, cfg.nightly.sweep)
        create_markdown_artifact(
            key="nightly-sweep",
            markdown=_sweep_markdown(swept, run.target),
            description=f"How each trial of sweep {cfg.nightly.sweep} ended",
        )
    stage_seconds = {
        "prepare": t_prepare,
        "train": t_train,
        "evaluate": t_eval,
        **({"sweep": t_sweep} if swept else {}),
        "total": time.perf_counter() - start,
    }
    tracking.log_metrics(run.target, run.run_id, {f"pipeline/seconds_{k}": v for k, v in stage_seconds.items()})
    summary = _summary(prepared, run, result, decision, stage_seconds)
    summary["sweep"] = (
        {"name": swept.name, "parent_run_id": swept.parent_run_id, "counts": swept.counts(), "finished": swept.finished}
        if swept
        else None
    )
    create_markdown_artifact(
        key="nightly-summary",
        markdown=summary.pop("markdown"),
        description="Test metrics of the trained model beside the classical baselines",
    )
    return summary


def _summary(prepared, run, result, decision, stage_seconds) -> dict[str, Any]:
    from fusion.evaluate import markdown_table

    url = tracking.run_url(run.target, run.run_id)
    table = (
        markdown_table(result.means, result.metric_names, result.seconds_per_pair)
        if result is not None
        else "Stage-1 (auto-encoder) run: nothing to evaluate."
    )
    promoted = (
        f"Registry: `{decision.model_name}` v{decision.version} -> **@{decision.alias}** ({decision.reason})"
        if decision
        else "Not registered."
    )
    markdown = (
        f"## {run.name}\n\nMLflow run: {url}\n\n{promoted}\n\nData version `{prepared.version[:16]}` "
        f"(dvc md5 `{prepared.data_hash}`)\n\n" + table
    )
    return {
        "run_name": run.name,
        "run_id": run.run_id,
        "run_dir": str(run.dir),
        "tracking_uri": run.target.uri,
        "run_url": url,
        "ui_command": tracking.ui_command(run.target),
        "data_hash": prepared.data_hash,
        "data_version": prepared.version,
        "stages_ran": prepared.stages_ran,
        "methods": result.methods if result else [],
        "metrics": result.metric_names if result else [],
        "means": result.means if result else {},
        "seconds_per_pair": result.seconds_per_pair if result else {},
        "stage_seconds": stage_seconds,
        "promotion": (
            {
                "model": decision.model_name,
                "version": decision.version,
                "alias": decision.alias,
                "reason": decision.reason,
            }
            if decision
            else None
        ),
        "markdown": markdown,
    }


if __name__ == "__main__":
    nightly()
