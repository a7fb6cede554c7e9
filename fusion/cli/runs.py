"""Tracked MLflow runs: `fusion report` (compare them), `fusion reproduce` (retrain one), `fusion sync`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fusion.cli.options import Workspace
from fusion.cli.output import console, print_means, progress_bar
from fusion.errors import FusionError


def report(
    run_ids: Annotated[list[str] | None, typer.Argument(help="MLflow run ids to compare")] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Compare every child run of this run (a sweep)")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Compare runs of this MLflow experiment")
    ] = None,
    filter_string: Annotated[str, typer.Option("--filter", help="MLflow filter, e.g. \"tags.model = 'ufa'\"")] = "",
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, report.csv and comparison.png")] = Path(
        "reports/latest"
    ),
    log_to: Annotated[
        str | None,
        typer.Option("--log-to", help="Log the report to this run (default: the --parent run, else a new report run)"),
    ] = None,
    figure_pairs: Annotated[int, typer.Option("--figure-pairs", min=1, help="Test pairs in the comparison figure")] = 3,
    workspace: Workspace = None,
) -> None:
    """A paper-style table across runs: metric means per method, best value in bold.

    Reads each run's evaluation (eval/summary.json) and sample images from MLflow (MLFLOW_TRACKING_URI, or the workspace's embedded store), writes Markdown, CSV and a comparison figure, and logs them to MLflow.
    """
    from fusion import tracking
    from fusion.config import load_config, resolve_workspace
    from fusion.report import runs_report, select_runs

    if not (run_ids or parent or experiment):
        raise FusionError("choose the runs: RUN_ID ..., --parent RUN_ID or --experiment NAME [--filter ...]")
    ws = resolve_workspace(workspace)
    target = tracking.target(load_config(ws), ws)
    client = tracking.client(target)
    runs = select_runs(client, experiment, run_ids or [], parent, filter_string)
    result = runs_report(client, runs, out, log_to=log_to or parent, figure_pairs=figure_pairs)
    print_means(result.means, result.names, f"{len(runs)} runs on {result.test_set}", result.seconds)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(
        f"report: {', '.join(str(p) for p in result.paths.values())}; logged to MLflow run {result.report_run_id}"
    )


def reproduce(
    run_id: Annotated[str, typer.Argument(help="MLflow run id to reproduce")],
    workspace: Workspace = None,
    tolerance: Annotated[
        float | None,
        typer.Option("--tolerance", min=0.0, help="Relative tolerance (default: 0 for CPU runs, 1e-3 for GPU runs)"),
    ] = None,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Keep the reproduced checkpoints and comparison.json here")
    ] = None,
) -> None:
    """Train a past run again from its recorded git commit and DVC data version, and compare.

    The commit is checked out into a temporary git worktree and the data materialised there from the run's dvc.lock (DVC cache or remote): your checkout and prepared data are not touched. Exit status 0: identical (within --tolerance); 1: different; 2: cannot be reproduced (dirty tree at the time, revision or data version missing), with the reason.
    """
    from fusion.config import resolve_workspace
    from fusion.reproduce import reproduce as run_reproduction

    ws = resolve_workspace(workspace)
    bar, _ = progress_bar(f"reproducing {run_id}")
    with bar:
        result = run_reproduction(ws, run_id, tolerance, keep)
    out = Console(soft_wrap=True)
    table = Table(
        title=f"run {run_id}: commit {result.commit[:12]}, data md5 {result.data_md5}, {result.device}, tolerance {result.tolerance:g}"
    )
    for col in ("what", "original", "reproduced", "same"):
        table.add_column(col)
    for name, same in result.checkpoints.items():
        table.add_row(f"{name} weights", "", f"max |diff| {result.max_weight_diff[name]:.3g}", "yes" if same else "NO")
    for m in result.metrics:
        table.add_row(
            f"epoch {m['epoch']} {m['metric']}",
            f"{m['original']:.10g}" if m["original"] is not None else "-",
            f"{m['reproduced']:.10g}" if m["reproduced"] is not None else "-",
            "yes" if m["equal"] else "NO",
        )
    out.print(table)
    out.print("[bold green]reproduced exactly[/]" if result.identical else "[bold red]the reproduction differs[/]")
    if not result.identical:
        raise typer.Exit(1)


def sync(workspace: Workspace = None) -> None:
    """Deliver tracking records that waited while the MLflow server was unreachable (runs/*/mlflow-spool.jsonl)."""
    from fusion import tracking
    from fusion.config import load_config, resolve_workspace

    ws = resolve_workspace(workspace)
    target = tracking.target(load_config(ws), ws)
    left = tracking.sync(ws, target)
    if not left:
        Console().print("nothing waiting: every run's records are in MLflow")
        return
    for path, n in left.items():
        Console(soft_wrap=True).print(
            f"{path}: {'delivered' if n == 0 else f'{n} record(s) still waiting ({target.uri} unreachable)'}"
        )
    if any(left.values()):
        raise typer.Exit(1)
