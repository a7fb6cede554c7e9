"""One `fusion evaluate`: the test set and methods its options name, and the report files it writes.

Two workloads: scoring images fused elsewhere (a folder of them, no model), and fusing a test
set with a model and/or classical baselines, timed, with a side-by-side comparison figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion import evaluate as ev
from fusion.errors import FusionError
from fusion.io import staged_files, write_bytes_atomic, write_json_atomic


def write_fused_reports(scores: dict[str, Any], method: str, out: Path) -> None:
    """summary.json, table.md and table.csv of `score_folders` scores, under the name `method`."""
    means = {method: scores["means"]}
    with staged_files(out) as stage:
        write_json_atomic(stage / "summary.json", scores)
        write_bytes_atomic(stage / "table.md", ev.markdown_table(means, scores["metrics"]).encode())
        write_bytes_atomic(stage / "table.csv", ev.csv_table(means, scores["metrics"]).encode())


def pick_test_set(
    source_a: Path | None, source_b: Path | None, gt: Path | None, prepared: Path | None, split: str
) -> ev.TestSet:
    """The pairs to fuse: a prepared dataset's split, or two folders matched by file name."""
    if prepared is not None:
        if source_a or source_b or gt:
            raise FusionError("--prepared replaces --source-a/--source-b/--gt; give one or the other")
        return ev.prepared_test_set(prepared, split)
    if source_a is None or source_b is None:
        raise FusionError("give the test set: --source-a DIR --source-b DIR [--gt DIR], or --prepared DIR")
    return ev.folder_test_set(source_a, source_b, gt)


def pick_methods(model: str | None, baselines: Sequence[str], device: str) -> tuple[dict[str, ev.FuseFn], list[str]]:
    """The methods to fuse with, by label, and the model's label among them (warmed up before timing)."""
    fns: dict[str, ev.FuseFn] = {}
    warm: list[str] = []
    if model:
        from fusion.inference import load_model, model_label

        net, payload = load_model(model, device)
        label = model_label(payload)
        fns[label] = ev.model_method(net, device)
        warm.append(label)
    fns.update(ev.baseline_methods(baselines))
    return fns, warm


def write_reports(result: ev.EvalResult, samples: list[dict], test_set: ev.TestSet, out: Path) -> list[str]:
    """The tables, figure.png and the sample images in `out`; the names written."""
    from fusion.report import evaluation_figure

    with staged_files(out) as stage:  # all of the reports or none (a full disk part-way)
        paths = ev.write_reports(result, stage)
        evaluation_figure(samples, test_set.source_labels, result.methods, stage / "figure.png", title=test_set.name)
        ev.save_samples(samples, stage / "samples", test_set.source_labels)
    return [*(p.name for p in paths.values()), "figure.png", "samples/"]
