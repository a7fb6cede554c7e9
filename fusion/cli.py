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
from rich.markup import escape
from rich.table import Table

from fusion.errors import FusionError


def _flags_without_type() -> None:
    """Typer prints a value type beside every option; a flag takes no value, so its `<bool>`
    only widens the table (and wraps every help text at 80 columns)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type(self, ctx):
        # "<int range> [x>=1]" says the range twice and sets the column's width for every row
        return None if self.is_flag else (shown(self, ctx) or "").replace(" range>", ">") or None

    TyperOption.display_type_rich = display_type  # type: ignore[method-assign]


_flags_without_type()

class _App(typer.Typer):
    """The entry point: an OSError of a full or read-only disk that no command turned into a
    FusionError (a library writing its own files) still ends in one line, not a traceback."""

    def __call__(self, *args, **kwargs):
        from fusion.errors import DISK_ERRNOS, output_error

        try:
            return super().__call__(*args, **kwargs)
        except ModuleNotFoundError as exc:
            # a core install (the GPU check's wheels) lacks the orchestration stack: say which part
            stack = {"ray": "Ray", "mlflow": "MLflow", "prefect": "Prefect", "dvc": "DVC"}
            top = (exc.name or "").split(".")[0]
            if top not in stack:
                raise
            console.print(f"[bold red]error:[/] this command needs {stack[top]} ({top} is not installed); the core "
                          "commands (fuse, evaluate, train --out, models) run without it: pip install fusionflow "
                          "with its dependencies for the rest")
            raise SystemExit(2) from None
        except OSError as exc:
            import errno

            if errno.errorcode.get(exc.errno or 0) not in DISK_ERRNOS:
                raise
            console.print(f"[bold red]error:[/] {escape(str(output_error(exc.filename or 'output', exc)))}")
            raise SystemExit(2) from None


app = _App(
    help="fusionflow: train, evaluate and ship deep image-fusion models "
    "(prepare data with DVC, train with Ray, track with MLflow, orchestrate with Prefect).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare datasets (the DVC stages call these).", no_args_is_help=True)
app.add_typer(data_app, name="data")
schedule_app = typer.Typer(help="The scheduled nightly run (a Prefect deployment; schedule from `nightly:` in params.yaml).",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
console = Console(stderr=True, soft_wrap=True)  # errors stay one greppable line

Workspace = Annotated[
    Optional[Path],
    # parentheses: rich would take "[default: ...]" for a style tag and print nothing of it
    typer.Option("--workspace", "-w", help="Folder with params.yaml and dvc.yaml (default: the current folder or the nearest "
                 "one above it with both, else $FUSIONFLOW_WORKSPACE, else this checkout)"),
]
Profile = Annotated[str, typer.Option("--profile", "-p", help="Profile from params.yaml: smoke (minutes on a CPU), tiny (tests), paper, or default (no overrides)")]
Overrides = Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a parameter, e.g. --set train.lr=2e-4 (repeatable)")]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    # Client libraries log every HTTP request at INFO; that drowns the pipeline's own lines.
    for noisy in ("httpx", "httpcore", "urllib3", "alembic", "mlflow.store.db.utils", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: FusionError) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging")] = False) -> None:
    _setup_logging(verbose)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to make a workspace (created if missing)")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Replace a params.yaml or dvc.yaml that differs from the default")] = False,
) -> None:
    """Create a workspace: default params.yaml and dvc.yaml, .gitignore, git, DVC.

    For a team's own repository, with fusionflow installed by pip: commands run in the folder (or below it) use it. A file already there and different is refused unless --force; .gitignore only gets the missing lines.
    """
    from fusion.init_workspace import init_workspace

    try:
        report = init_workspace(directory, force=force)
    except FusionError as exc:
        _fail(exc)
    out = Console()
    out.print(f"[bold]workspace[/] {report.root}")
    out.print(f"wrote: {', '.join(report.written) or 'nothing'}; kept: {', '.join(report.kept) or 'nothing'}")
    for note in report.notes:
        out.print(note)
    out.print(f"next: cd {report.root} && fusion data prepare && fusion run")


@app.command()
def run(
    profile: Profile = "smoke",
    overrides: Overrides = None,
    workspace: Workspace = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Train in this process instead of through Ray")] = False,
    summary_json: Annotated[Optional[Path], typer.Option("--summary-json", help="Also write the summary to this file")] = None,
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
    except FusionError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(workspace)
    print_summary(summary)
    if summary_json:
        from fusion.io import write_json_atomic

        write_json_atomic(summary_json, summary)


def print_summary(summary: dict) -> None:
    out = Console()
    _print_means(summary["means"], summary["metrics"],
                 f"Test split (data md5 {summary['data_hash'][:12]}); best in bold",
                 summary["seconds_per_pair"])
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    out.print(f"[bold]run[/] {summary['run_name']} ({summary['run_id']})  [dim]{stages}[/]")
    promo = summary.get("promotion")
    if promo:
        out.print(f"[bold]registry[/] {promo['model']} v{promo['version']} -> @{promo['alias']} ({promo['reason']})")
    out.print(f"[bold]files[/] {summary['run_dir']}")
    out.print(f"[bold]tracking[/] {summary['tracking_uri']}")
    out.print(f"[bold]open the MLflow UI:[/] {summary['ui_command']}   then {summary['run_url']}")


@app.command()
def train(
    profile: Profile = "smoke",
    overrides: Overrides = None,
    workspace: Workspace = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Train in this process instead of through Ray")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", metavar="RUN_ID|PATH", help="Continue an MLflow run (RUN_ID: the same run, from its last checkpoint, with its own configuration and executor), or with --out a checkpoint (OUT/last.pt)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Checkpoint folder (no Ray, no MLflow: a plain local run)")] = None,
) -> None:
    """Train on the prepared data (runs `fusion data prepare` first) and log to MLflow.

    Ctrl-C marks the MLflow run KILLED and prints the `--resume RUN_ID` that continues it.

    With --out, trains in this process into that folder without tracking (resumable with --resume OUT/last.pt): the quickest loop for experimenting on the trainer itself.
    """
    from fusion import interrupts, pipeline
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(workspace)
        if resume is not None and out is None:
            if Path(resume).exists():
                raise FusionError(f"--resume {resume}: a checkpoint file continues an untracked run; add --out, or give "
                                  "the MLflow run id to continue a tracked run")
            if overrides:
                raise FusionError(f"--set {overrides[0]}: a resumed run keeps the configuration it was started with")
            run, ckpt = interrupts.resume(ws, resume, use_ray=not no_ray)
            Console().print(f"checkpoints in {ckpt}; MLflow run {run.run_id} (resumed)")
            return
        cfg = load_config(ws, profile, overrides)
        if out is not None:  # before any work: never replace a finished run's checkpoints unasked
            from fusion.train.loop import BEST, LAST, Trainer

            held = [out / n for n in (LAST, BEST) if (out / n).exists()]
            if held and resume is None:
                raise FusionError(f"--out {out}: holds the checkpoints of an earlier run ({held[0].name}); continue it "
                                  f"with --resume {out / LAST} or train into another folder")
            prepared = pipeline.prepare(ws, cfg)
            created = not out.exists()
            try:
                state = Trainer(cfg, prepared.root).fit(out, resume_from=Path(resume) if resume else None)
            except FusionError:
                if created and out.is_dir() and not any(out.iterdir()):
                    out.rmdir()  # a folder this command made and could not fill (full disk, bad data)
                raise
            Console().print(f"trained {state.epoch} epochs; checkpoints in {out}")
            return
        run, ckpt = interrupts.train_new(ws, cfg, use_ray=not no_ray)
        Console().print(f"checkpoints in {ckpt}; MLflow run {run.run_id}")
    except FusionError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(workspace, out)


def _interrupted(workspace: Optional[Path], out: Optional[Path] = None) -> None:
    """Ctrl-C: runs left open become KILLED, one line says how to continue, exit 130."""
    from fusion.interrupts import EXIT_INTERRUPTED, interrupted

    console.print(f"[bold yellow]{escape(interrupted(workspace, out))}[/]", highlight=False)
    raise typer.Exit(EXIT_INTERRUPTED)


@app.command()
def sweep(
    name: Annotated[str, typer.Argument(help="A sweep under `sweeps:` in params.yaml (e.g. smoke, ablations)")],
    overrides: Overrides = None,
    workspace: Workspace = None,
    new: Annotated[bool, typer.Option("--new", help="Start the sweep over instead of continuing an unfinished one")] = False,
    budget_minutes: Annotated[Optional[float], typer.Option("--budget-minutes", min=0.01, help="Wall clock for the whole sweep (overrides the sweep's)")] = None,
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", min=0, help="Trials at a time (0 = as many as fit)")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run the trials one after another in this process")] = False,
    plan_only: Annotated[bool, typer.Option("--plan", help="List the trials and their dependencies; run nothing")] = False,
) -> None:
    """Run an experiment matrix (tasks x models x variants x seeds x grid) as Ray Tune trials.

    One MLflow parent run per sweep, one child run per trial; the parent holds the trial table (sweep/trials.md) and a comparison table per task (report/<task>/report.md). CrossFuse's two-stage variants start from one shared stage-1 trial. A trial whose worker dies is restarted from its last checkpoint; a bad configuration fails its trial alone; the budget stops trials at an epoch boundary as out_of_time. Running the same sweep again continues it. Local Ray by default; set RAY_ADDRESS to use a cluster. --set applies to every trial (e.g. --set train.epochs=5).
    """
    from fusion.sweep.runner import plan, run_sweep

    try:
        if plan_only:
            sweep_cfg, trials = plan(workspace, name, overrides)
            table = Table(title=f"sweep {name}: {len(trials)} trials, profile {sweep_cfg.profile}")
            for col in ("trial", "paper name", "starts from", "problem"):
                table.add_column(col, overflow="fold")
            for t in trials:
                table.add_row(t.id, t.spec.label, t.spec.depends_on or "", t.error or "")
            Console().print(table)
            return
        result = run_sweep(workspace, name, overrides, new=new, budget_minutes=budget_minutes,
                           max_concurrent=max_concurrent, use_ray=not no_ray)
    except FusionError as exc:
        _fail(exc)
    out = Console()
    table = Table(title=f"sweep {name} ({'resumed, ' if result.resumed else ''}{result.seconds:.0f} s)")
    for col in ("trial", "status", "epochs", "attempts", "best val/loss", "run"):
        table.add_column(col, overflow="fold")
    colours = {"completed": "green", "early_stopped": "green", "failed": "red", "skipped": "red"}
    for r in result.trials:
        c = colours.get(r["status"], "yellow")
        loss = r.get("best_val_loss")
        table.add_row(r["trial"], f"[{c}]{r['status']}[/]", str(r.get("epochs", "")), str(r.get("attempts", "")),
                      f"{loss:.4g}" if isinstance(loss, float) else "", (r.get("run_id") or "")[:12])
    out.print(table)
    for r in result.trials:
        if r.get("error"):
            console.print(f"[red]{r['trial']}:[/] {r['error'].splitlines()[0][:300]}")
    for task, path in result.reports.items():
        out.print(f"[bold]comparison ({task})[/] {path}")
    out.print(f"[bold]sweep folder[/] {result.dir}  [bold]parent run[/] {result.parent_run_id}")
    if not result.finished:
        out.print("[yellow]unfinished trials remain: run the same command again to continue them[/]")


def _progress(label: str):
    """A rich progress bar on stderr, driven through a (done, total) callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


@app.command()
def evaluate(
    source_a: Annotated[Optional[Path], typer.Option("--source-a", help="Folder of first sources (e.g. infrared, near focus)")] = None,
    source_b: Annotated[Optional[Path], typer.Option("--source-b", help="Folder of second sources (e.g. visible, far focus); matched to --source-a by file name")] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Folder of ground-truth images (adds SSIM_gt, PSNR_gt, L1_gt)")] = None,
    prepared: Annotated[Optional[Path], typer.Option("--prepared", help="A prepared dataset (manifest.json + split/{near,far,gt}) instead of --source-a/-b")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of --prepared to evaluate")] = "test",
    fused: Annotated[Optional[Path], typer.Option("--fused", help="Folder of already-fused images to score (no model needed)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Checkpoint file, run folder, or MLflow URI (runs:/RUN_ID or models:/NAME@ALIAS; a file in a run: runs:/RUN_ID/ checkpoints/best.pt)")] = None,
    baseline: Annotated[Optional[list[str]], typer.Option("--baseline", "-b", metavar="NAME", help="Classical baseline(s) to evaluate alongside (repeatable; 'all' for every one)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write per-pair values and means here")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write table.md, table.csv, per_pair.csv, summary.json and figure.png here (with --fused: table.md, table.csv, summary.json)")] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", metavar="NAME", help="Only these metrics (repeatable) [default: all that apply]")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (model and metrics)")] = "cpu",
    figure_pairs: Annotated[int, typer.Option("--figure-pairs", min=1, help="Test pairs shown in the comparison figure")] = 3,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="With --fused: score the fused images present instead of failing on missing ones")] = False,
    log_to: Annotated[Optional[str], typer.Option("--log-to", help="Also log the evaluation (eval/ artifacts, test/ and baseline/ metrics) to this MLflow run, e.g. an imported authors' model, so `fusion report` can compare it")] = None,
) -> None:
    """Score fusion results with every metric of docs/metrics.md, per pair and on average.

    Fused images, no model: --source-a A --source-b B --fused F --json OUT.json (pairs matched by file name; every source pair needs a fused image of the same size).

    A model and/or baselines: --model CKPT_OR_URI and/or --baseline all, on --source-a/--source-b (or --prepared DIR): fuses every pair, times the fusion, and writes a table of means per method (best in bold) and a side-by-side comparison figure to --out.

    Metrics: gray via MATLAB rgb2gray, float64 on 0..255; MI is true MI in bits, not the papers' 2 x EN.
    """
    from fusion import evaluate as ev
    from fusion.io import write_json_atomic

    if json_out is None and out is None and log_to is None:
        _fail(FusionError("give --json OUT.json, --out DIR and/or --log-to RUN_ID: where the scores go"))
    try:
        if fused is not None:
            if model or baseline or prepared:
                raise FusionError("--fused scores existing images; it does not combine with --model, --baseline or --prepared")
            if source_a is None or source_b is None:
                raise FusionError("--fused needs --source-a and --source-b")
            bar, progress = _progress("scoring")
            with bar:
                result = ev.score_folders(source_a, source_b, fused, gt, metric, device, allow_missing, progress)
            if json_out:
                write_json_atomic(json_out, result)
            if out:
                from fusion.io import staged_files, write_bytes_atomic

                means = {fused.name: result["means"]}
                with staged_files(out) as stage:
                    write_json_atomic(stage / "summary.json", result)
                    write_bytes_atomic(stage / "table.md", ev.markdown_table(means, result["metrics"]).encode())
                    write_bytes_atomic(stage / "table.csv", ev.csv_table(means, result["metrics"]).encode())
            _print_means({fused.name: result["means"]}, result["metrics"], f"{result['count']} fused images in {fused}")
            if result["sources_without_fused_image"]:
                console.print(f"[yellow]skipped {len(result['sources_without_fused_image'])} source pair(s) without a fused image[/]")
            return
        if log_to is not None and not model:
            raise FusionError("--log-to logs a model's evaluation: give --model")
        if log_to is not None:
            from fusion.evaluate_logging import check_run

            check_run(log_to)  # before any work
        test_set = _test_set(source_a, source_b, gt, prepared, split)
        methods, warm = {}, []
        if model:
            from fusion.inference import load_model, model_label

            net, payload = load_model(model, device)
            label = model_label(payload)
            methods[label] = ev.model_method(net, device)
            warm.append(label)
        methods.update(ev.baseline_methods(baseline or []))
        bar, progress = _progress(f"evaluating {len(methods)} method(s)")
        with bar:
            result, samples = ev.evaluate_methods(test_set, methods, metric, device=device, keep_images=figure_pairs,
                                                  progress=progress, warm_up=warm)
        if log_to is not None:
            from fusion.evaluate_logging import log_evaluation

            log_evaluation(log_to, result, samples, test_set, model_method=warm[0])
            console.print(f"logged to MLflow run {log_to}: eval/ and test/ metrics")
        if json_out:
            write_json_atomic(json_out, result.to_json())
        if out:
            from fusion.io import staged_files
            from fusion.report import evaluation_figure

            with staged_files(out) as stage:  # all of the reports or none (a full disk part-way)
                paths = ev.write_reports(result, stage)
                evaluation_figure(samples, test_set.source_labels, result.methods, stage / "figure.png",
                                  title=test_set.name)
                ev.save_samples(samples, stage / "samples", test_set.source_labels)
            names = [*(p.name for p in paths.values()), "figure.png", "samples/"]
            console.print(f"reports in {out}: {', '.join(names)}")
    except FusionError as exc:
        _fail(exc)
    _print_means(result.means, result.metric_names, f"{len(test_set)} pairs of {test_set.name}", result.seconds_per_pair)


def _test_set(source_a, source_b, gt, prepared, split):
    from fusion import evaluate as ev

    if prepared is not None:
        if source_a or source_b or gt:
            raise FusionError("--prepared replaces --source-a/--source-b/--gt; give one or the other")
        return ev.prepared_test_set(prepared, split)
    if source_a is None or source_b is None:
        raise FusionError("give the test set: --source-a DIR --source-b DIR [--gt DIR], or --prepared DIR")
    return ev.folder_test_set(source_a, source_b, gt)


def _print_means(means: dict, names: list[str], title: str, seconds: dict | None = None) -> None:
    from fusion.evaluate import best_by_metric

    best = best_by_metric(means, names)
    table = Table(title=title)
    table.add_column("metric")
    for m in means:  # method names break at their underscores rather than being cut ("choose_m…")
        table.add_column(escape(m).replace("_", "_\n"), justify="right", overflow="fold")
    for n in names:
        table.add_row(n, *(f"[bold]{means[m][n]:.4f}[/]" if m in best[n] and len(means) > 1 else f"{means[m][n]:.4f}" for m in means))
    if seconds:
        table.add_row("s/pair", *(f"{seconds[m]:.4f}" for m in means))
    Console().print(table)


@app.command()
def report(
    run_ids: Annotated[Optional[list[str]], typer.Argument(help="MLflow run ids to compare")] = None,
    parent: Annotated[Optional[str], typer.Option("--parent", help="Compare every child run of this run (a sweep)")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="Compare runs of this MLflow experiment")] = None,
    filter_string: Annotated[str, typer.Option("--filter", help="MLflow filter, e.g. \"tags.model = 'ufa'\"")] = "",
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, report.csv and comparison.png")] = Path("reports/latest"),
    log_to: Annotated[Optional[str], typer.Option("--log-to", help="Log the report to this run (default: the --parent run, else a new report run)")] = None,
    figure_pairs: Annotated[int, typer.Option("--figure-pairs", min=1, help="Test pairs in the comparison figure")] = 3,
    workspace: Workspace = None,
) -> None:
    """A paper-style table across runs: metric means per method, best value in bold.

    Reads each run's evaluation (eval/summary.json) and sample images from MLflow (MLFLOW_TRACKING_URI, or the workspace's embedded store), writes Markdown, CSV and a comparison figure, and logs them to MLflow.
    """
    from fusion import tracking
    from fusion.config import load_config, resolve_workspace
    from fusion.report import runs_report, select_runs

    try:
        if not (run_ids or parent or experiment):
            raise FusionError("choose the runs: RUN_ID ..., --parent RUN_ID or --experiment NAME [--filter ...]")
        ws = resolve_workspace(workspace)
        target = tracking.target(load_config(ws), ws)
        client = tracking.client(target)
        runs = select_runs(client, experiment, run_ids or [], parent, filter_string)
        result = runs_report(client, runs, out, log_to=log_to or parent, figure_pairs=figure_pairs)
    except FusionError as exc:
        _fail(exc)
    _print_means(result.means, result.names, f"{len(runs)} runs on {result.test_set}", result.seconds)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"report: {', '.join(str(p) for p in result.paths.values())}; logged to MLflow run {result.report_run_id}")


@app.command()
def fuse(
    images: Annotated[list[Path], typer.Argument(help="Two or more source images of the same size (IR + visible, near + far focus, exposures, MRI + CT/PET/SPECT)")],
    model: Annotated[str, typer.Option("--model", help="Checkpoint file, run folder, or MLflow URI (runs:/RUN_ID, models:/NAME@ALIAS)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fused image (PNG)")],
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="float32; bfloat16 (CPUs with AVX512-BF16/AMX, GPUs) or float16 (GPUs) run the model under autocast: faster, outputs within a few gray levels")] = "float32",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists (never one of the source images)")] = False,
    tile: Annotated[str, typer.Option("--tile", metavar="auto|none|N", help="auto: whole image if it fits in --max-memory, else overlapping tiles (same result within a gray level); none: whole image; N: tiles of N px")] = "auto",
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", metavar="SIZE", help="Memory budget, e.g. 4GB (default: 3/4 of the free RAM); what cannot fit is refused before fusing")] = None,
) -> None:
    """Fuse two or more images with a trained model and write the result.

    Any size; gray or colour (gray models fuse Y of YCrCb and restore the chroma of the colour sources). More images than the model takes are fused pairwise, left to right. Checkpoints are loaded as data only (weights_only), never as code.
    """
    import time

    from fusion.inference import check_fits, fuse as run_fuse, load_model, model_label
    from fusion.tiling import parse_memory, parse_tile
    from fusion.io import read_image, write_image
    from fusion.train.loop import autocast_dtype, pick_device

    try:
        if len(images) < 2:
            raise FusionError(f"give at least 2 images to fuse, got {len(images)}")
        if out.suffix.lower() != ".png":
            raise FusionError(f"--out {out}: write a .png (lossless); other formats would alter the fused values")
        for k, src in enumerate(images, 1):
            if out.exists() and src.exists() and out.resolve() == src.resolve():
                raise FusionError(f"--out {out}: is source image {k}; write the fused image to another file")
        if out.exists() and not overwrite:
            raise FusionError(f"--out {out}: already exists; pass --overwrite to replace it")
        dev = pick_device(device)
        autocast_dtype(precision, dev, "--precision")  # refuse a bad value before loading anything
        tile_side, budget = parse_tile(tile), parse_memory(max_memory)
        net, payload = load_model(model, dev)
        check_fits(net, images, dev, precision, tile_side, budget)  # from the headers, before decoding
        sources = [read_image(p) for p in images]
        start = time.perf_counter()
        fused = run_fuse(net, sources, dev, precision, tile_side, budget, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        write_image(out, fused)
    except FusionError as exc:
        _fail(exc)
    Console().print(f"{model_label(payload)} fused {len(images)} images on {dev} ({precision}) in {seconds:.2f} s -> {out}")


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="MLflow run id to reproduce")],
    workspace: Workspace = None,
    tolerance: Annotated[Optional[float], typer.Option("--tolerance", min=0.0, help="Relative tolerance (default: 0 for CPU runs, 1e-3 for GPU runs)")] = None,
    keep: Annotated[Optional[Path], typer.Option("--keep", help="Keep the reproduced checkpoints and comparison.json here")] = None,
) -> None:
    """Train a past run again from its recorded git commit and DVC data version, and compare.

    The commit is checked out into a temporary git worktree and the data materialised there from the run's dvc.lock (DVC cache or remote): your checkout and prepared data are not touched. Exit status 0: identical (within --tolerance); 1: different; 2: cannot be reproduced (dirty tree at the time, revision or data version missing), with the reason.
    """
    from fusion.config import resolve_workspace
    from fusion.reproduce import reproduce as run_reproduction

    try:
        ws = resolve_workspace(workspace)
        bar, _ = _progress(f"reproducing {run_id}")
        with bar:
            result = run_reproduction(ws, run_id, tolerance, keep)
    except FusionError as exc:
        _fail(exc)
    out = Console(soft_wrap=True)
    table = Table(title=f"run {run_id}: commit {result.commit[:12]}, data md5 {result.data_md5}, {result.device}, tolerance {result.tolerance:g}")
    for col in ("what", "original", "reproduced", "same"):
        table.add_column(col)
    for name, same in result.checkpoints.items():
        table.add_row(f"{name} weights", "", f"max |diff| {result.max_weight_diff[name]:.3g}", "yes" if same else "NO")
    for m in result.metrics:
        table.add_row(f"epoch {m['epoch']} {m['metric']}", f"{m['original']:.10g}" if m["original"] is not None else "-",
                      f"{m['reproduced']:.10g}" if m["reproduced"] is not None else "-", "yes" if m["equal"] else "NO")
    out.print(table)
    out.print("[bold green]reproduced exactly[/]" if result.identical else "[bold red]the reproduction differs[/]")
    if not result.identical:
        raise typer.Exit(1)


@app.command()
def sync(workspace: Workspace = None) -> None:
    """Deliver tracking records that waited while the MLflow server was unreachable (runs/*/mlflow-spool.jsonl)."""
    from fusion import tracking
    from fusion.config import load_config, resolve_workspace
    from fusion.tracking_spool import sync as replay

    try:
        ws = resolve_workspace(workspace)
        target = tracking.target(load_config(ws), ws)
        left = replay(ws, target)
    except FusionError as exc:
        _fail(exc)
    if not left:
        Console().print("nothing waiting: every run's records are in MLflow")
        return
    for path, n in left.items():
        Console(soft_wrap=True).print(f"{path}: {'delivered' if n == 0 else f'{n} record(s) still waiting ({target.uri} unreachable)'}")
    if any(left.values()):
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """List every registered model and its variants (paper names beside config identifiers), then each model's
    train.released and train.options."""

    from fusion.models import MODELS, build_model, count_parameters

    from rich import box

    # names are typed into configs and looked up in papers: never cut; the task list wraps instead
    table = Table(title="Registered models", box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    table.add_column("variant (config)", no_wrap=True)
    table.add_column("paper name", no_wrap=True)
    table.add_column("parameters", no_wrap=True, justify="right")
    for name, spec in sorted(MODELS.items()):
        for vid, paper_name in spec.variants.items():
            table.add_row(name, vid, paper_name, f"{count_parameters(build_model(name, vid)):,}")
    Console().print(table)
    out = Console(soft_wrap=True)
    for name, spec in sorted(MODELS.items()):
        out.print(f"[bold]{name}[/] tasks: {spec.task.replace(',', ', ')}")
        for opt, text in {"released": spec.notes.get("released", "the authors' released code"), **spec.options}.items():
            key = "train.released" if opt == "released" else f"train.options.{opt}"
            out.print(f"[bold]{name}[/] {key}: {escape(text)}")


@app.command("import-weights")
def import_weights(
    model: Annotated[str, typer.Argument(help="ufa | crossfuse | cadnif")],
    files: Annotated[list[Path], typer.Argument(help="ufa: FILE (the authors' state dict); crossfuse: IR_AE VI_AE FUSION "
                                                     "(their three .model files, in that order); cadnif: PREFIX "
                                                     "(TensorFlow 1 checkpoint, e.g. model/IV/model/model-11)")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (e.g. authors-cadnif-iv.pt)")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")] = False,
    register: Annotated[Optional[str], typer.Option("--register", help="Also register it in the MLflow model registry "
                                                                      "under this name (tagged source=authors)")] = None,
    workspace: Workspace = None,
) -> None:
    """Turn the authors' published weights into a fusionflow checkpoint of the released model.

    The checkpoint works with `fusion fuse --model`, `fusion evaluate --model` and as an MLflow model; it records the source files' sha256 and which source tensors the released forward pass does not use.

    Weights are read as data only (no pickled code runs); a missing, extra or mis-shaped tensor is refused with its name and nothing is written.
    """
    from fusion.weights import IMPORTERS
    from fusion.weights import import_weights as run_import

    try:
        if register is not None:  # fail on a bad workspace before converting anything
            from fusion.config import load_config, resolve_workspace

            ws = resolve_workspace(workspace)
            load_config(ws)
        path, result = run_import(model, files, out, overwrite=overwrite)
        console_out = Console(soft_wrap=True)
        spec = IMPORTERS[model]
        console_out.print(f"imported {spec.model} {result.variant} (released) from {' '.join(map(str, files))} -> {path}")
        for note in result.notes:
            console_out.print(f"  note: {note}")
        if result.ignored:
            console_out.print(f"  ignored {len(result.ignored)} source tensor(s) the released forward pass does not use: "
                              f"{', '.join(result.ignored[:6])}{' ...' if len(result.ignored) > 6 else ''}")
        if register is not None:
            from fusion.weights.register import register_authors

            run_id, version = register_authors(ws, path, register)
            console_out.print(f"registered {register} v{version} (source=authors), run {run_id}; "
                              f"fuse with --model runs:/{run_id}")
    except FusionError as exc:
        _fail(exc)


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


Workers = Annotated[int, typer.Option("--workers", min=0, help="Processes (0 = every core, 1 = this process only)")]


def _stage(label: str, fn, *args):
    """Run one preparation stage with a progress bar; returns its manifest."""
    from fusion.config import load_config, resolve_workspace

    try:
        ws = resolve_workspace(args[0])
        bar, progress = _progress(label)
        with bar:
            return fn(ws, load_config(ws), *args[1:], progress=progress)
    except FusionError as exc:
        _fail(exc)


@data_app.command("synth-multifocus")
def data_synth_multifocus(workspace: Workspace = None, workers: Workers = 0) -> None:
    """Build the SYNTHETIC multi-focus train/test pairs (UFA-Fuse Eq. 11) from data.synth_multifocus in params.yaml
    (the embedded photographs, or a DUTS source of the `sources` registry)."""
    from fusion.data import stages

    manifest = _stage("synthesising", stages.synth_multifocus, workspace, workers)
    Console().print(f"synthetic multi-focus pairs: {json.dumps(manifest['counts'])}")


@data_app.command("kaist-pairs")
def data_kaist_pairs(
    name: Annotated[str, typer.Argument(help="Entry of data.kaist_pairs in params.yaml")],
    workspace: Workspace = None, workers: Workers = 0,
) -> None:
    """Sample aligned lwir/visible KAIST pairs (seeded, every frame_stride-th frame), gray, resized -> prepared/kaist_pairs/NAME."""
    from fusion.data import stages

    manifest = _stage(f"KAIST pairs {name}", stages.kaist_pairs, workspace, name, workers)
    Console().print(f"{manifest['count']} KAIST pairs -> prepared/kaist_pairs/{name}"
                    + (f" ({len(manifest['skipped'])} bad input(s) skipped, see bad_inputs.txt)" if manifest["skipped"] else ""))


@data_app.command("test-set")
def data_test_set(
    name: Annotated[str, typer.Argument(help="Entry of data.test_sets in params.yaml")],
    workspace: Workspace = None, workers: Workers = 0,
) -> None:
    """Copy a source's evaluation pairs (colour kept) into prepared/test_sets/NAME/<modality>/ with a manifest."""
    from fusion.data import stages

    manifest = _stage(f"test set {name}", stages.test_set, workspace, name, workers)
    mods = manifest["modalities"]
    Console().print(f"{manifest['count']} {manifest['task']} pairs -> prepared/test_sets/{name}/{{{','.join(mods)}}}; "
                    f"score with: fusion evaluate --source-a prepared/test_sets/{name}/{mods[0]} "
                    f"--source-b prepared/test_sets/{name}/{[m for m in mods if m != 'gt'][-1]} ...")


@data_app.command("sources")
def data_sources(
    workspace: Workspace = None,
    check: Annotated[bool, typer.Option("--check", help="Decode every image and report every bad file")] = False,
) -> None:
    """List the `sources` registry of params.yaml: layout, path, pairs found (and, with --check, bad files)."""
    from fusion.config import load_config, resolve_workspace, source_spec
    from fusion.data import sources
    from fusion.data.training import load_pairs

    try:
        ws = resolve_workspace(workspace)
        cfg = load_config(ws)
    except FusionError as exc:
        _fail(exc)
    table = Table(title=f"sources registry ({ws / 'params.yaml'})")
    for col in ("name", "layout", "path", "records", "status"):
        table.add_column(col, overflow="fold")
    failures: list[tuple[str, str]] = []
    for name in sorted(cfg.sources):
        spec = source_spec(cfg, name, ws)
        try:
            recs = load_pairs(spec)
            status = "ok"
            if check:
                sources.check_pairs(recs)
                status = "ok (all decoded)"
            count = str(len(recs))
        except FusionError as exc:
            failures.append((name, str(exc)))
            count, status = "-", "failed (below)"
        table.add_row(name, spec.layout, str(cfg.sources[name]["path"]), count, status)
    Console().print(table if cfg.sources else "no sources registered: add them under `sources:` in params.yaml")
    # Below the table, never in a cell: a cell wraps or cuts file names at the terminal's width.
    for name, problem in failures:
        console.print(f"[bold red]error:[/] sources.{name}: {escape(problem)}", highlight=False, crop=False)
    if failures:
        raise typer.Exit(2)


@data_app.command("patches")
def data_patches(
    name: Annotated[Optional[str], typer.Argument(help="Entry of data.patches in params.yaml (the DVC stage); or omit it and give --out")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Patch folder to write (shards + manifest.json), relative to the workspace, e.g. prepared/patches/tno")] = None,
    window: Annotated[int, typer.Option("--window", help="Window side (CADNIF's released code: 132)")] = 132,
    stride: Annotated[int, typer.Option("--stride", help="Window stride (released code: 14)")] = 14,
    flips: Annotated[bool, typer.Option("--flips/--no-flips", help="Add a horizontal flip of every window")] = False,
    rotations: Annotated[bool, typer.Option("--rotations/--no-rotations", help="Add 90/180/270 degree rotations")] = False,
    gray: Annotated[bool, typer.Option("--gray/--colour", help="Y of YCrCb (the unsupervised models) or RGB planes")] = True,
    max_per_pair: Annotated[int, typer.Option("--max-per-pair", help="Seeded sample of at most this many windows per pair (0 = all)")] = 0,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Windows per shard file")] = 4096,
    workers: Annotated[int, typer.Option("--workers", help="Processes (0 = every core)")] = 0,
    profile: Profile = "default",
    overrides: Overrides = None,
    workspace: Workspace = None,
) -> None:
    """Cut aligned training windows from train.source's training split into shards (patch augmentation).

    The same windows (and flips/rotations) are cut from every source of a pair. Train on them with --set train.patches=OUT beside the same train.source: the run refuses patches cut from another source or split.

    With NAME, the DVC stage: data.patches.NAME of params.yaml -> prepared/patches/NAME (train with train.source=<its source> and train.patches=prepared/patches/NAME).
    """
    from fusion.config import load_config, resolve_workspace
    from fusion.data.patches import PatchParams, build_patches
    from fusion.data.training import load_source_split, source_provenance

    if name is not None:
        from fusion.data import stages

        if out is not None:
            _fail(FusionError("give NAME (a data.patches stage) or --out, not both"))
        manifest = _stage(f"patches {name}", stages.patches, workspace, name, workers)
        Console().print(f"{manifest['count']} windows in {len(manifest['shards'])} shard(s) -> prepared/patches/{name}")
        return
    if out is None:
        _fail(FusionError("give NAME (a data.patches stage of params.yaml) or --out DIR"))
    try:
        ws = resolve_workspace(workspace)
        cfg = load_config(ws, profile, overrides)
        spec = cfg.train.source
        if spec is None:
            raise FusionError("set the source to cut from: --set train.source.layout=tno --set train.source.path=DIR")
        train, _ = load_source_split(spec, cfg.seed)
        out = out if out.is_absolute() else ws / out  # where train.patches=OUT will look
        params = PatchParams(window, stride, gray, flips, rotations, shard_size, max_per_pair, cfg.seed)
        bar, progress = _progress(f"cutting {len(train)} pairs")
        with bar:
            manifest = build_patches(train, out, params, workers, source_provenance(spec, cfg.seed), progress)
    except FusionError as exc:
        _fail(exc)
    Console().print(f"{manifest['count']} windows of {window}x{window} from {len(train)} training pairs "
                    f"in {len(manifest['shards'])} shard(s) -> {out}")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[Optional[str], typer.Argument(help="Dataset name from the catalogue (omit to list them)")] = None,
    dest: Annotated[Optional[Path], typer.Option("--dest", help="Folder to create (replaced only once the new copy is complete)")] = None,
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="Expected sha256 of the download, where the catalogue has none")] = None,
    trust: Annotated[bool, typer.Option("--trust", help="No checksum known: pin the sha256 of what arrives in DEST/fetch.lock.json")] = False,
    catalogue: Annotated[Optional[Path], typer.Option("--catalogue", help="Catalogue YAML (e.g. a team mirror) instead of the built-in one")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --dest even if it holds files fetch did not create")] = False,
) -> None:
    """Download a public dataset, verify its sha256, unpack it atomically, and print its `sources:` entry.

    A --dest that holds other files (not from an earlier fetch of it) is refused unless --overwrite."""
    from fusion.data.fetch import fetch, load_catalogue

    try:
        entries = load_catalogue(catalogue)
        if name is None:
            table = Table(title="fetchable datasets")
            for col in ("name", "layout", "sha256 known", "description"):
                table.add_column(col)
            for e in entries.values():
                table.add_row(e.name, e.layout or "-", "yes" if e.sha256 else "no (--sha256/--trust)", e.description)
            Console().print(table)
            return
        if name not in entries:
            raise FusionError(f"{name}: not in the catalogue; available: {', '.join(sorted(entries))}")
        if dest is None:
            raise FusionError("--dest DIR: where to unpack the dataset (outside the repository; it is read in place)")
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(f"fetching {name}", total=None)
            record = fetch(entries[name], dest.resolve(), sha256, trust,
                           lambda done, total: bar.update(task, completed=done, total=total), overwrite=overwrite)
    except FusionError as exc:
        _fail(exc)
    root = dest.resolve() / record["subdir"] if record["subdir"] else dest.resolve()
    Console().print(f"{name}: sha256 {record['sha256']} ({'verified' if record['verified'] else 'pinned, not verified'}) -> {dest}")
    if record["layout"]:
        Console().print(f"register it in params.yaml:\n  sources:\n    {name.replace('-', '_')}: {{layout: {record['layout']}, path: {root}}}")


@data_app.command("materialize")
def data_materialize(
    path: Annotated[str, typer.Argument(help="A DVC-tracked folder, e.g. prepared/test_sets/tno or prepared/multifocus_synthetic")],
    rev: Annotated[str, typer.Option("--rev", help="Git revision (commit, tag, branch) whose data version to fetch")],
    out: Annotated[Path, typer.Option("--out", help="New folder to write it to (never the checkout itself)")],
    workspace: Workspace = None,
) -> None:
    """Materialise a past version of prepared data from its git revision (DVC cache or remote), beside the checkout."""
    from fusion import versioning
    from fusion.config import resolve_workspace
    from fusion.data.manifest import data_version

    try:
        ws = resolve_workspace(workspace)
        dest = versioning.materialize(ws, rev, path, out.resolve())
        version = data_version(dest) if (dest / "manifest.json").is_file() else "no manifest"
    except FusionError as exc:
        _fail(exc)
    Console().print(f"{path}@{rev} -> {dest} (data version {version})")


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


def _nightly_config(workspace):
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

    try:
        ws, cfg = _nightly_config(workspace)
        cron, tz = schedule_of(cfg)
    except FusionError as exc:
        _fail(exc)
    it = croniter(cron, datetime.datetime.now(ZoneInfo(tz)))
    n = cfg.nightly
    out = Console()
    out.print(f"[bold]fusionflow-nightly/nightly[/]: '{cron}' in {tz}; profile {n.profile}, overrides {n.overrides or 'none'}, "
              f"{'Ray' if n.use_ray else 'no Ray'}; at most {n.concurrency} at a time ({n.on_collision} on collision); "
              f"{n.retries} retries of transient failures")
    for _ in range(3):
        out.print(f"  next: {it.get_next(datetime.datetime).isoformat()}")


@schedule_app.command("serve")
def schedule_serve(workspace: Workspace = None) -> None:
    """Register the nightly deployment and run its scheduled and triggered runs in this process (until Ctrl-C).

    Uses PREFECT_API_URL (a Prefect server: `prefect server start`); trigger a run at once with `prefect deployment run fusionflow-nightly/nightly`.
    """
    from flows.deploy import serve

    try:
        ws, cfg = _nightly_config(workspace)
        serve(ws, cfg)
    except FusionError as exc:
        _fail(exc)


@schedule_app.command("deploy")
def schedule_deploy(
    pool: Annotated[str, typer.Option("--pool", help="Process work pool to deploy to (created if missing)")] = "fusionflow",
    workspace: Workspace = None,
) -> None:
    """Register the nightly deployment with a work pool; run `prefect worker start --pool POOL` to execute it."""
    from flows.deploy import deploy, schedule_of

    try:
        ws, cfg = _nightly_config(workspace)
        deployment_id = deploy(ws, cfg, pool)
        cron, tz = schedule_of(cfg)
    except FusionError as exc:
        _fail(exc)
    Console(soft_wrap=True).print(f"deployment fusionflow-nightly/nightly ({deployment_id}) on work pool {pool}, "
                                  f"'{cron}' in {tz}, runs in {ws}; start a worker: prefect worker start --pool {pool}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
