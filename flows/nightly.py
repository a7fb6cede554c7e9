"""The nightly pipeline as one Prefect flow: prepare -> train -> evaluate -> report.

Runs on Prefect's ephemeral local API by default and against a server when
PREFECT_API_URL is set. Each stage is a task calling the same library function the CLI
calls (fusion.pipeline); Prefect adds state, retries and the UI, nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from fusion import pipeline, tracking
from fusion.config import Config, load_config, resolve_workspace


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(workspace: Path, cfg: Config) -> tuple[pipeline.Prepared, float]:
    prepared, seconds = _timed(pipeline.prepare, workspace, cfg)
    logger = get_run_logger()
    logger.info("data %s (md5 %s): stages run %s, skipped %s; %s", prepared.root, prepared.data_hash,
                prepared.stages_ran or "none", prepared.stages_skipped or "none", prepared.counts)
    return prepared, seconds


@task(name="train", cache_policy=NO_CACHE)
def train_model(cfg: Config, prepared: pipeline.Prepared, run: pipeline.RunInfo, use_ray: bool) -> tuple[Path, float]:
    return _timed(pipeline.train, cfg, prepared, run, use_ray)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(cfg: Config, prepared: pipeline.Prepared, run: pipeline.RunInfo, ckpt_dir: Path):
    return _timed(pipeline.evaluate, cfg, prepared, run, ckpt_dir)


@flow(name="fusionflow-nightly", log_prints=True)
def nightly(
    profile: str = "smoke",
    overrides: list[str] | None = None,
    workspace: str | None = None,
    use_ray: bool = True,
) -> dict[str, Any]:
    """Prepare the data version, train the configured model through Ray, evaluate it beside
    the baselines and log everything to MLflow. Returns a summary (also a Prefect artifact)."""
    start = time.perf_counter()
    ws = resolve_workspace(workspace)
    cfg = load_config(ws, profile, overrides)  # a typo fails here, before any work
    prepared, t_prepare = prepare_data(ws, cfg)
    run, t_start = _timed(pipeline.start, ws, cfg, prepared)
    try:
        ckpt_dir, t_train = train_model(cfg, prepared, run, use_ray)
        result, t_eval = evaluate_model(cfg, prepared, run, ckpt_dir)
    except BaseException:
        tracking.end_run(run.target, run.run_id, "FAILED")
        raise
    stage_seconds = {"prepare": t_prepare, "track": t_start, "train": t_train, "evaluate": t_eval,
                     "total": time.perf_counter() - start}
    tracking.log_metrics(run.target, run.run_id, {f"pipeline/seconds_{k}": v for k, v in stage_seconds.items()})
    tracking.end_run(run.target, run.run_id)
    from fusion.evaluate import markdown_table

    url = tracking.run_url(run.target, run.run_id)
    table = (markdown_table(result.means, result.metric_names, result.seconds_per_pair) if result is not None
             else "Stage-1 (auto-encoder) run: nothing to evaluate.")
    create_markdown_artifact(
        key="nightly-summary",
        markdown=f"## {run.name}\n\nMLflow run: {url}\n\nData md5 `{prepared.data_hash}`\n\n" + table,
        description="Test metrics of the trained model beside the classical baselines",
    )
    return {
        "run_name": run.name,
        "run_id": run.run_id,
        "run_dir": str(run.dir),
        "tracking_uri": run.target.uri,
        "run_url": url,
        "ui_command": tracking.ui_command(run.target),
        "data_hash": prepared.data_hash,
        "stages_ran": prepared.stages_ran,
        "methods": result.methods if result else [],
        "metrics": result.metric_names if result else [],
        "means": result.means if result else {},
        "seconds_per_pair": result.seconds_per_pair if result else {},
        "stage_seconds": stage_seconds,
    }


if __name__ == "__main__":
    nightly()
