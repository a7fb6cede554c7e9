"""The nightly pipeline: `fusion run` (once, now) and `fusion schedule ...` (its Prefect deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fusion.cli.options import NoRay, Overrides, Profile, Workspace
from fusion.cli.output import exit_interrupted, print_means

if TYPE_CHECKING:
    from fusion.config import Config

schedule_app = typer.Typer(
    help="The scheduled nightly run (a Prefect deployment; schedule from `nightly:` in params.yaml).",
    no_args_is_help=True,
)


def run(
    profile: Profile = "smoke",
    overrides: Overrides = None,
    workspace: Workspace = None,
    no_ray: NoRay = False,
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="Also write the summary to this file")
    ] = None,
) -> None:
    """Run the nightly pipeline end to end as a Prefect flow.

    Builds the embedded SYNTHETIC multi-focus dataset (DVC-versioned), trains UFA-Fuse through Ray, evaluates it beside the classical baselines (and on every prepared test set of its task), registers it in MLflow as @champion only if it beats the best classical baseline and the current champion (else @challenger), logs everything to MLflow and prints where to look. Unchanged data, config and code: the trained model and its evaluation are reused (Prefect cache). Set MLFLOW_TRACKING_URI, PREFECT_API_URL or RAY_ADDRESS to use shared servers instead of the embedded defaults.
    """
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        load_config(ws, profile, overrides)  # fail fast, before Prefect starts
        from flows.nightly import nightly
        from fusion.interrupts import shield_prefect_server

        shield_prefect_server()
        summary = nightly(profile=profile, overrides=overrides, workspace=str(ws), use_ray=not no_ray)
    except KeyboardInterrupt:
        exit_interrupted(workspace)
    print_summary(summary)
    if summary_json:
        from fusion.io import write_json_atomic

        write_json_atomic(summary_json, summary)


def print_summary(summary: dict[str, Any]) -> None:
    out = Console()
    print_means(
        summary["means"],
        summary["metrics"],
        f"Test split (data md5 {summary['data_hash'][:12]}); best in bold",
        summary["seconds_per_pair"],
    )
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    out.print(f"[bold]run[/] {summary['run_name']} ({summary['run_id']})  [dim]{stages}[/]")
    promo = summary.get("promotion")
    if promo:
        out.print(f"[bold]registry[/] {promo['model']} v{promo['version']} -> @{promo['alias']} ({promo['reason']})")
    out.print(f"[bold]files[/] {summary['run_dir']}")
    out.print(f"[bold]tracking[/] {summary['tracking_uri']}")
    out.print(f"[bold]open the MLflow UI:[/] {summary['ui_command']}   then {summary['run_url']}")


def _nightly_config(workspace: Path | None) -> tuple[Path, Config]:
    from fusion.config import load_config, resolve_workspace

    ws = resolve_workspace(workspace)
    cfg = load_config(ws)
    load_config(ws, cfg.nightly.profile, cfg.nightly.overrides)  # the deployment's own parameters must load
    return ws, cfg


@schedule_app.command("show")
def schedule_show(workspace: Workspace = None) -> None:
    """Print the nightly schedule (cron, time zone, next runs) and its parameters."""
    import datetime
    from zoneinfo import ZoneInfo

    from prefect._vendor.croniter import croniter

    from flows.deploy import schedule_of

    _, cfg = _nightly_config(workspace)
    cron, tz = schedule_of(cfg)
    it = croniter(cron, datetime.datetime.now(ZoneInfo(tz)))
    n = cfg.nightly
    out = Console()
    out.print(
        f"[bold]fusionflow-nightly/nightly[/]: '{cron}' in {tz}; profile {n.profile}, overrides {n.overrides or 'none'}, "
        f"{'Ray' if n.use_ray else 'no Ray'}; at most {n.concurrency} at a time ({n.on_collision} on collision); "
        f"{n.retries} retries of transient failures"
    )
    for _ in range(3):
        out.print(f"  next: {it.get_next(datetime.datetime).isoformat()}")


@schedule_app.command("serve")
def schedule_serve(workspace: Workspace = None) -> None:
    """Register the nightly deployment and run its scheduled and triggered runs in this process (until Ctrl-C).

    Uses PREFECT_API_URL (a Prefect server: `prefect server start`); trigger a run at once with `prefect deployment run fusionflow-nightly/nightly`.
    """
    from flows.deploy import serve

    ws, cfg = _nightly_config(workspace)
    serve(ws, cfg)


@schedule_app.command("deploy")
def schedule_deploy(
    pool: Annotated[
        str, typer.Option("--pool", help="Process work pool to deploy to (created if missing)")
    ] = "fusionflow",
    workspace: Workspace = None,
) -> None:
    """Register the nightly deployment with a work pool; run `prefect worker start --pool POOL` to execute it."""
    from flows.deploy import deploy, schedule_of

    ws, cfg = _nightly_config(workspace)
    deployment_id = deploy(ws, cfg, pool)
    cron, tz = schedule_of(cfg)
    Console(soft_wrap=True).print(
        f"deployment fusionflow-nightly/nightly ({deployment_id}) on work pool {pool}, "
        f"'{cron}' in {tz}, runs in {ws}; start a worker: prefect worker start --pool {pool}"
    )
