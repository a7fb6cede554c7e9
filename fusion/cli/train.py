"""Training: `fusion train` (one run) and `fusion sweep` (an experiment matrix of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fusion.cli.options import NoRay, Overrides, Profile, Workspace
from fusion.cli.output import console, exit_interrupted
from fusion.errors import FusionError


def train(
    profile: Profile = "smoke",
    overrides: Overrides = None,
    workspace: Workspace = None,
    no_ray: NoRay = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID|PATH",
            help="Continue an MLflow run (RUN_ID: the same run, from its last checkpoint, with its own configuration and executor), or with --out a checkpoint (OUT/last.pt)",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Checkpoint folder (no Ray, no MLflow: a plain local run)")
    ] = None,
) -> None:
    """Train on the prepared data (runs `fusion data prepare` first) and log to MLflow.

    Ctrl-C marks the MLflow run KILLED and prints the `--resume RUN_ID` that continues it.

    On a Ray cluster (RAY_ADDRESS) whose nodes share no disk, --set storage.uri=s3://bucket/prefix keeps the checkpoints in object storage and the workers take the data from the DVC remote; --set train.ray.num_workers=N trains one model on N workers (README: On a Ray cluster).

    With --out, trains in this process into that folder without tracking (resumable with --resume OUT/last.pt): the quickest loop for experimenting on the trainer itself.
    """
    from fusion import interrupts
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        if resume is not None and out is None:
            if Path(resume).exists():
                raise FusionError(
                    f"--resume {resume}: a checkpoint file continues an untracked run; add --out, or give "
                    "the MLflow run id to continue a tracked run"
                )
            if overrides:
                raise FusionError(f"--set {overrides[0]}: a resumed run keeps the configuration it was started with")
            run, ckpt = interrupts.resume(ws, resume, use_ray=not no_ray)
            Console().print(f"checkpoints in {ckpt}; MLflow run {run.run_id} (resumed)")
            return
        cfg = load_config(ws, profile, overrides)
        if out is not None:
            from fusion.train_local import train_into

            state = train_into(ws, cfg, out, resume)
            Console().print(f"trained {state.epoch} epochs; checkpoints in {out}")
            return
        run, ckpt = interrupts.train_new(ws, cfg, use_ray=not no_ray)
        Console().print(f"checkpoints in {ckpt}; MLflow run {run.run_id}")
    except KeyboardInterrupt:
        exit_interrupted(workspace, out)


def sweep(
    name: Annotated[str, typer.Argument(help="A sweep under `sweeps:` in params.yaml (e.g. smoke, ablations)")],
    overrides: Overrides = None,
    workspace: Workspace = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start the sweep over instead of continuing an unfinished one")
    ] = False,
    budget_minutes: Annotated[
        float | None,
        typer.Option("--budget-minutes", min=0.01, help="Wall clock for the whole sweep (overrides the sweep's)"),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=0, help="Trials at a time (0 = as many as fit)")
    ] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run the trials one after another in this process")] = False,
    plan_only: Annotated[
        bool, typer.Option("--plan", help="List the trials and their dependencies; run nothing")
    ] = False,
) -> None:
    """Run an experiment matrix (tasks x models x variants x seeds x grid) as Ray Tune trials.

    One MLflow parent run per sweep, one child run per trial; the parent holds the trial table (sweep/trials.md) and a comparison table per task (report/<task>/report.md). CrossFuse's two-stage variants start from one shared stage-1 trial. A trial whose worker dies is restarted from its last checkpoint; a bad configuration fails its trial alone; the budget stops trials at an epoch boundary as out_of_time. Running the same sweep again continues it. Local Ray by default; set RAY_ADDRESS to use a cluster. --set applies to every trial (e.g. --set train.epochs=5).
    """
    from fusion.sweep.runner import plan, run_sweep

    if plan_only:
        sweep_cfg, trials = plan(workspace, name, overrides)
        table = Table(title=f"sweep {name}: {len(trials)} trials, profile {sweep_cfg.profile}")
        for col in ("trial", "paper name", "starts from", "problem"):
            table.add_column(col, overflow="fold")
        for t in trials:
            table.add_row(t.id, t.spec.label, t.spec.depends_on or "", t.error or "")
        Console().print(table)
        return
    try:
        result = run_sweep(
            workspace,
            name,
            overrides,
            new=new,
            budget_minutes=budget_minutes,
            max_concurrent=max_concurrent,
            use_ray=not no_ray,
        )
    except KeyboardInterrupt:  # the runner has recorded the unfinished trials as interrupted
        from fusion.stop_signals import exit_status

        ws = f" --workspace {workspace}" if workspace is not None else ""
        console.print(
            f"[bold yellow]interrupted: sweep {escape(name)} stopped; `fusion sweep {escape(name)}{escape(ws)}` "
            "continues its unfinished trials from their checkpoints[/]",
            highlight=False,
        )
        raise typer.Exit(exit_status()) from None
    out = Console()
    table = Table(title=f"sweep {name} ({'resumed, ' if result.resumed else ''}{result.seconds:.0f} s)")
    for col in ("trial", "status", "epochs", "attempts", "best val/loss", "run"):
        table.add_column(col, overflow="fold")
    colours = {"completed": "green", "early_stopped": "green", "failed": "red", "skipped": "red"}
    for r in result.trials:
        c = colours.get(r["status"], "yellow")
        loss = r.get("best_val_loss")
        table.add_row(
            r["trial"],
            f"[{c}]{r['status']}[/]",
            str(r.get("epochs", "")),
            str(r.get("attempts", "")),
            f"{loss:.4g}" if isinstance(loss, float) else "",
            (r.get("run_id") or "")[:12],
        )
    out.print(table)
    for r in result.trials:
        if r.get("error"):
            console.print(f"[red]{r['trial']}:[/] {r['error'].splitlines()[0][:300]}")
    for task, path in result.reports.items():
        out.print(f"[bold]comparison ({task})[/] {path}")
    out.print(f"[bold]sweep folder[/] {result.dir}  [bold]parent run[/] {result.parent_run_id}")
    if not result.finished:
        out.print("[yellow]unfinished trials remain: run the same command again to continue them[/]")
