"""`fusion`: one command per workload. Every subcommand has --help.

Errors users can fix (bad parameter, missing or corrupt file) print one clear line and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fusion.errors import FusionError

app = typer.Typer(
    help="fusionflow: train, evaluate and ship deep image-fusion models "
    "(prepare data with DVC, train with Ray, track with MLflow, orchestrate with Prefect).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare datasets (the DVC stages call these).", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

Workspace = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Folder with params.yaml and dvc.yaml [default: $FUSIONFLOW_WORKSPACE or this checkout]"),
]
Profile = Annotated[str, typer.Option("--profile", "-p", help="Profile from params.yaml: smoke (minutes on a CPU), tiny (tests), paper, or default (no overrides)")]
Overrides = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a parameter, e.g. --set train.lr=2e-4 (repeatable)")]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    # Client libraries log every HTTP request at INFO; that drowns the pipeline's own lines.
    for noisy in ("httpx", "httpcore", "urllib3", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: FusionError) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging")] = False) -> None:
    _setup_logging(verbose)


@app.command()
def run(
    profile: Profile = "smoke",
    overrides: Overrides = None,
    workspace: Workspace = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Train in this process instead of through Ray")] = False,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the summary to this file")] = None,
) -> None:
    """Run the nightly pipeline end to end as a Prefect flow.

    Builds the embedded SYNTHETIC multi-focus dataset (DVC-versioned), trains UFA-Fuse
    through Ray, evaluates it beside the average and choose-max-gradient baselines, logs
    everything to MLflow and prints where to look. Set MLFLOW_TRACKING_URI, PREFECT_API_URL
    or RAY_ADDRESS to use shared servers instead of the embedded defaults.
    """
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        load_config(ws, profile, overrides)  # fail fast, before Prefect starts
        from flows.nightly import nightly

        summary = nightly(profile=profile, overrides=overrides, workspace=str(ws), use_ray=not no_ray)
    except FusionError as exc:
        _fail(exc)
    print_summary(summary)
    if summary_json:
        from fusion.io import write_json_atomic

        write_json_atomic(summary_json, summary)


def print_summary(summary: dict) -> None:
    out = Console()
    table = Table(title=f"Test split (SYNTHETIC multi-focus, data md5 {summary['data_hash'][:12]})")
    table.add_column("method")
    for m in summary["metrics"]:
        table.add_column(m, justify="right")
    table.add_column("s/pair", justify="right")
    for method in summary["methods"]:
        vals = summary["means"][method]
        table.add_row(method, *(f"{vals[m]:.4f}" for m in summary["metrics"]), f"{summary['seconds_per_pair'][method]:.4f}")
    out.print(table)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    out.print(f"[bold]run[/] {summary['run_name']} ({summary['run_id']})  [dim]{stages}[/]")
    out.print(f"[bold]files[/] {summary['run_dir']}")
    out.print(f"[bold]tracking[/] {summary['tracking_uri']}")
    out.print(f"[bold]open the MLflow UI:[/] {summary['ui_command']}   then {summary['run_url']}")


@app.command()
def train(
    profile: Profile = "smoke",
    overrides: Overrides = None,
    workspace: Workspace = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Train in this process instead of through Ray")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue from this checkpoint (last.pt)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Checkpoint folder (no Ray, no MLflow: a plain local run)")] = None,
) -> None:
    """Train on the prepared data (runs `fusion data prepare` first) and log to MLflow.

    With --out, trains in this process into that folder without tracking (resumable with
    --resume OUT/last.pt): the quickest loop for experimenting on the trainer itself.
    """
    from fusion import pipeline
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        cfg = load_config(ws, profile, overrides)
        prepared = pipeline.prepare(ws, cfg)
        if out is not None:
            from fusion.train.loop import Trainer

            state = Trainer(cfg, prepared.root).fit(out, resume_from=resume)
            Console().print(f"trained {state.epoch} epochs; checkpoints in {out}")
            return
        run = pipeline.start(ws, cfg, prepared)
        ckpt = pipeline.train(cfg, prepared, run, use_ray=not no_ray)
        from fusion import tracking

        tracking.end_run(run.target, run.run_id)
        Console().print(f"checkpoints in {ckpt}; MLflow run {run.run_id}")
    except FusionError as exc:
        _fail(exc)


@app.command()
def evaluate(
    source_a: Annotated[Path, typer.Option("--source-a", help="Folder of first sources (e.g. infrared, near focus)")],
    source_b: Annotated[Path, typer.Option("--source-b", help="Folder of second sources (e.g. visible, far focus)")],
    fused: Annotated[Path, typer.Option("--fused", help="Folder of fused images; matched to sources by file name")],
    json_out: Annotated[Path, typer.Option("--json", help="Write per-pair values and means here")],
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Folder of ground-truth images (adds SSIM_gt, PSNR_gt, L1_gt)")] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="Only these metrics (repeatable) [default: all that apply]")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
) -> None:
    """Score already-fused images with every fusion metric (no model needed).

    Metrics follow docs/metrics.md (gray via MATLAB rgb2gray, float64 on 0..255; MI is true
    MI in bits, not the papers' 2 x EN).
    """
    from fusion.evaluate import score_folders
    from fusion.io import write_json_atomic
    from fusion.metrics import MetricInputError

    try:
        result = score_folders(source_a, source_b, fused, gt, metric, device)
    except FusionError as exc:
        _fail(exc)
    except MetricInputError as exc:
        _fail(FusionError(str(exc)))
    write_json_atomic(json_out, result)
    table = Table(title=f"{result['count']} fused images in {fused}")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    for name, value in result["means"].items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
    Console().print(f"per-pair values: {json_out}")


@app.command()
def models() -> None:
    """List every registered model and its variants (paper names beside config identifiers)."""
    from fusion.models import MODELS, build_model, count_parameters

    table = Table(title="Registered models")
    for col in ("model", "variant (config)", "paper name", "task", "parameters"):
        table.add_column(col)
    for name, spec in sorted(MODELS.items()):
        for vid, paper_name in spec.variants.items():
            table.add_row(name, vid, paper_name, spec.task, f"{count_parameters(build_model(name, vid)):,}")
    Console().print(table)


@data_app.command("embedded")
def data_embedded(workspace: Workspace = None) -> None:
    """Export the embedded photographs (shipped with scikit-image) to data/embedded."""
    from fusion.config import load_config, resolve_workspace
    from fusion.data.embedded import export_embedded

    try:
        ws = resolve_workspace(workspace)
        cfg = load_config(ws)
        out = export_embedded(ws / cfg.data.embedded.out)
    except FusionError as exc:
        _fail(exc)
    Console().print(f"wrote {out}")


@data_app.command("synth-multifocus")
def data_synth_multifocus(workspace: Workspace = None) -> None:
    """Build the SYNTHETIC multi-focus train/test pairs (UFA-Fuse Eq. 11) from data.synth_multifocus in params.yaml."""
    from fusion import pipeline
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        manifest = pipeline.synth_multifocus_stage(ws, load_config(ws))
    except FusionError as exc:
        _fail(exc)
    Console().print(f"synthetic multi-focus pairs: {json.dumps(manifest['counts'])}")


@data_app.command("prepare")
def data_prepare(
    workspace: Workspace = None,
    no_push: Annotated[bool, typer.Option("--no-push", help="Do not push the snapshot to the DVC remote")] = False,
) -> None:
    """Track the raw data with DVC, reproduce the preparation stages and push the snapshot."""
    from fusion import pipeline
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        prepared = pipeline.prepare(ws, load_config(ws), push=not no_push)
    except FusionError as exc:
        _fail(exc)
    Console().print(
        f"{prepared.root} md5 {prepared.data_hash} (raw md5 {prepared.raw_hash}); "
        f"stages run: {prepared.stages_ran or 'none'}; counts {prepared.counts}"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
