"""`fusion evaluate`: score fused images, or fuse a test set with a model and baselines and score that."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fusion.cli.output import console, print_means, progress_bar
from fusion.errors import FusionError


def evaluate(
    source_a: Annotated[
        Path | None, typer.Option("--source-a", help="Folder of first sources (e.g. infrared, near focus)")
    ] = None,
    source_b: Annotated[
        Path | None,
        typer.Option(
            "--source-b", help="Folder of second sources (e.g. visible, far focus); matched to --source-a by file name"
        ),
    ] = None,
    gt: Annotated[
        Path | None, typer.Option("--gt", help="Folder of ground-truth images (adds SSIM_gt, PSNR_gt, L1_gt)")
    ] = None,
    prepared: Annotated[
        Path | None,
        typer.Option(
            "--prepared", help="A prepared dataset (manifest.json + split/{near,far,gt}) instead of --source-a/-b"
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of --prepared to evaluate")] = "test",
    fused: Annotated[
        Path | None, typer.Option("--fused", help="Folder of already-fused images to score (no model needed)")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Checkpoint file, run folder, or MLflow URI (runs:/RUN_ID or models:/NAME@ALIAS; a file in a run: runs:/RUN_ID/ checkpoints/best.pt)",
        ),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            "--baseline",
            "-b",
            metavar="NAME",
            help="Classical baseline(s) to evaluate alongside (repeatable; 'all' for every one)",
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-pair values and means here")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write table.md, table.csv, per_pair.csv, summary.json and figure.png here (with --fused: table.md, table.csv, summary.json)",
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric", "-m", metavar="NAME", help="Only these metrics (repeatable) [default: all that apply]"
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (model and metrics)")] = "cpu",
    figure_pairs: Annotated[
        int, typer.Option("--figure-pairs", min=1, help="Test pairs shown in the comparison figure")
    ] = 3,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing", help="With --fused: score the fused images present instead of failing on missing ones"
        ),
    ] = False,
    log_to: Annotated[
        str | None,
        typer.Option(
            "--log-to",
            help="Also log the evaluation (eval/ artifacts, test/ and baseline/ metrics) to this MLflow run, e.g. an imported authors' model, so `fusion report` can compare it",
        ),
    ] = None,
) -> None:
    """Score fusion results with every metric of docs/metrics.md, per pair and on average.

    Fused images, no model: --source-a A --source-b B --fused F --json OUT.json (pairs matched by file name; every source pair needs a fused image of the same size).

    A model and/or baselines: --model CKPT_OR_URI and/or --baseline all, on --source-a/--source-b (or --prepared DIR): fuses every pair, times the fusion, and writes a table of means per method (best in bold) and a side-by-side comparison figure to --out.

    Metrics: gray via MATLAB rgb2gray, float64 on 0..255; MI is true MI in bits, not the papers' 2 x EN.
    """
    from fusion import evaluate as ev
    from fusion import evaluate_run as job
    from fusion.io import write_json_atomic

    if json_out is None and out is None and log_to is None:
        raise FusionError("give --json OUT.json, --out DIR and/or --log-to RUN_ID: where the scores go")
    if fused is not None:
        if model or baseline or prepared:
            raise FusionError(
                "--fused scores existing images; it does not combine with --model, --baseline or --prepared"
            )
        if source_a is None or source_b is None:
            raise FusionError("--fused needs --source-a and --source-b")
        bar, progress = progress_bar("scoring")
        with bar:
            scores = ev.score_folders(source_a, source_b, fused, gt, metric, device, allow_missing, progress)
        if json_out:
            write_json_atomic(json_out, scores)
        if out:
            job.write_fused_reports(scores, fused.name, out)
        print_means({fused.name: scores["means"]}, scores["metrics"], f"{scores['count']} fused images in {fused}")
        if scores["sources_without_fused_image"]:
            console.print(
                f"[yellow]skipped {len(scores['sources_without_fused_image'])} source pair(s) without a fused image[/]"
            )
        return
    if log_to is not None and not model:
        raise FusionError("--log-to logs a model's evaluation: give --model")
    if log_to is not None:
        from fusion.evaluate_logging import check_run

        check_run(log_to)  # before any work
    test_set = job.pick_test_set(source_a, source_b, gt, prepared, split)
    methods, warm = job.pick_methods(model, baseline or [], device)
    bar, progress = progress_bar(f"evaluating {len(methods)} method(s)")
    with bar:
        result, samples = ev.evaluate_methods(
            test_set, methods, metric, device=device, keep_images=figure_pairs, progress=progress, warm_up=warm
        )
    if log_to is not None:
        from fusion.evaluate_logging import log_evaluation

        log_evaluation(log_to, result, samples, test_set, model_method=warm[0])
        console.print(f"logged to MLflow run {log_to}: eval/ and test/ metrics")
    if json_out:
        write_json_atomic(json_out, result.to_json())
    if out:
        names = job.write_reports(result, samples, test_set, out)
        console.print(f"reports in {out}: {', '.join(names)}")
    print_means(result.means, result.metric_names, f"{len(test_set)} pairs of {test_set.name}", result.seconds_per_pair)
