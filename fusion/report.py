"""Reports in the shape of the papers' tables and figures.

- `comparison_figure`: sources and each method's output side by side, one row per test
  pair (the papers' qualitative comparison figures), drawn with matplotlib.
- `runs_report`: for a set of MLflow runs (an ablation family, a sweep's children, a list of
  run ids), one table of metric means per method with the best value marked, as Markdown
  and CSV, plus a comparison figure from the runs' sample images; logged to MLflow.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.baselines import BASELINES
from fusion.errors import DataError
from fusion.evaluate import csv_table, markdown_table
from fusion.io import read_image, write_bytes_atomic

log = logging.getLogger(__name__)

SUMMARY_ARTIFACT = "eval/summary.json"
SAMPLES_ARTIFACT = "eval/samples"
_BASELINE_NAMES = frozenset(BASELINES)  # method names of baselines in evaluation summaries


def comparison_figure(
    rows: Sequence[dict[str, np.ndarray]],
    columns: Sequence[str],
    path: Path,
    title: str = "",
    captions: dict[tuple[int, str], str] | None = None,
) -> Path:
    """One row per test pair, one column per image label (sources first, then methods).

    rows: per pair, label -> uint8 image (gray or RGB); a missing label leaves a blank cell.
    captions: optional (row, label) -> text under that cell (e.g. a metric value).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows or not columns:
        raise ValueError("comparison_figure needs at least one row and one column")
    first = next(img for img in rows[0].values() if img is not None)
    aspect = first.shape[0] / first.shape[1]
    cell = 2.2
    fig, axes = plt.subplots(
        len(rows),
        len(columns),
        squeeze=False,
        figsize=(cell * len(columns), cell * aspect * len(rows) + (0.6 if title else 0.2)),
    )
    for r, row in enumerate(rows):
        for c, label in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            img = row.get(label)
            if img is not None:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            if r == 0:
                ax.set_title(label, fontsize=8)
            if captions and (r, label) in captions:
                ax.set_xlabel(captions[(r, label)], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())
    return Path(path)


def evaluation_figure(
    samples: list[dict],
    source_labels: Sequence[str],
    methods: Sequence[str],
    path: Path,
    title: str = "",
    caption_metric: str | None = None,
    rows: list[dict] | None = None,
) -> Path:
    """comparison_figure for the samples kept by fusion.evaluate.evaluate_methods."""
    table = []
    captions = {}
    for r, s in enumerate(samples):
        cells = dict(zip(source_labels, s["sources"]))
        if s.get("gt") is not None:
            cells["ground truth"] = s["gt"]
        cells.update(s["fused"])
        table.append(cells)
        if caption_metric and rows:
            for row in rows:
                if row["pair"] == s["id"] and caption_metric in row:
                    captions[(r, row["method"])] = f"{caption_metric} {row[caption_metric]:.3f}"
    has_gt = any(s.get("gt") is not None for s in samples)
    columns = [*source_labels, *(["ground truth"] if has_gt else []), *methods]
    return comparison_figure(table, columns, path, title, captions)


# --------------------------------------------------------------------------- across runs
@dataclass
class RunsReport:
    names: list[str]  # metric names (columns)
    means: dict[str, dict[str, float]]  # method label -> metric -> mean
    seconds: dict[str, float]
    runs: dict[str, str]  # method label -> run id ("" for baselines)
    data_versions: dict[str, str]  # run id -> data.dvc_md5 tag
    test_set: str
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    report_run_id: str | None = None


def select_runs(
    client,
    experiment: str | None = None,
    run_ids: Sequence[str] = (),
    parent: str | None = None,
    filter_string: str = "",
) -> list:
    """Runs by id, by parent run (its children), or by experiment (+ MLflow filter string)."""
    from fusion.tracking import mlflow_error

    runs = []
    for rid in run_ids:
        try:
            runs.append(client.get_run(rid))
        except mlflow_error() as exc:
            raise DataError(f"run {rid}: not found in the tracking store ({str(exc).splitlines()[0]})") from exc
    if parent or experiment:
        if parent:
            try:
                exp_ids = [client.get_run(parent).info.experiment_id]
            except mlflow_error() as exc:
                raise DataError(f"--parent {parent}: run not found") from exc
            filt = f"tags.mlflow.parentRunId = '{parent}'" + (f" and {filter_string}" if filter_string else "")
        else:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise DataError(f"--experiment {experiment}: no such experiment in the tracking store")
            exp_ids, filt = [exp.experiment_id], filter_string
        try:
            found = client.search_runs(
                exp_ids, filter_string=filt, order_by=["attributes.start_time ASC"], max_results=1000
            )
        except mlflow_error() as exc:
            raise DataError(f"--filter {filter_string!r}: {str(exc).splitlines()[0]}") from exc
        runs += [r for r in found if r.data.tags.get("fusionflow.report") != "true"]
    seen, unique = set(), []
    for r in runs:
        if r.info.run_id not in seen:
            seen.add(r.info.run_id)
            unique.append(r)
    return unique


def _label(run, used: set[str]) -> str:
    tags = run.data.tags
    base = tags.get("report.label") or run.info.run_name or run.info.run_id[:8]
    label, n = base, 2
    while label in used:
        label, n = f"{base} #{n}", n + 1
    used.add(label)
    return label


def runs_report(
    client,
    runs: list,
    out_dir: Path,
    log_to: str | None = None,
    experiment_id: str | None = None,
    figure_pairs: int = 3,
    artifact_path: str = "report",
) -> RunsReport:
    """Combine the evaluation summaries of `runs` into one table (+ figure), write it to
    `out_dir` and log it to the run `log_to` (or to a new report run in `experiment_id`)."""
    # MLflow's per-download tqdm bars would bury the report's own output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not runs:
        raise DataError("no runs selected for the report (check the run ids, --parent or --experiment/--filter)")
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="fusionflow-report-") as tmp:
        for run in runs:
            rid = run.info.run_id
            try:
                local = client.download_artifacts(rid, SUMMARY_ARTIFACT, tmp)
            except Exception as exc:  # MLflow raises several types for a missing artifact
                raise DataError(
                    f"run {rid} ({run.info.run_name}): no {SUMMARY_ARTIFACT} artifact; "
                    f"was it evaluated? ({exc.__class__.__name__})"
                ) from exc
            summaries[rid] = json.loads(Path(local).read_text())
        report = _combine(runs, summaries)
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"{len(runs)} runs on `{report.test_set}`"
        if report.warnings:
            title += "\n\n" + "\n".join(f"> warning: {w}" for w in report.warnings)
        report.paths["table"] = out_dir / "report.md"
        report.paths["table_csv"] = out_dir / "report.csv"
        legend = "\n".join(f"- {label}: run `{rid}`" for label, rid in report.runs.items() if rid)
        write_bytes_atomic(
            report.paths["table"],
            (markdown_table(report.means, report.names, report.seconds, title) + "\n" + legend + "\n").encode(),
        )
        write_bytes_atomic(report.paths["table_csv"], csv_table(report.means, report.names, report.seconds).encode())
        fig = _runs_figure(client, runs, report, out_dir / "comparison.png", Path(tmp), figure_pairs)
        if fig is not None:
            report.paths["figure"] = fig
    report.report_run_id = _log(client, report, log_to, experiment_id or runs[0].info.experiment_id, artifact_path)
    return report


def _combine(runs: list, summaries: dict[str, dict]) -> RunsReport:
    names: list[str] = []
    for s in summaries.values():
        names += [n for n in s["metrics"] if n not in names]
    means: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    owners: dict[str, str] = {}
    warnings = []
    used: set[str] = set()
    baselines: dict[str, dict[str, float]] = {}
    test_sets = {s.get("test_set", "") for s in summaries.values()}
    for run in runs:
        s = summaries[run.info.run_id]
        model_methods = [m for m in s["methods"] if m not in _BASELINE_NAMES]
        for m in model_methods:
            label = _label(run, used) if len(model_methods) == 1 else f"{_label(run, used)} / {m}"
            means[label] = {n: s["means"][m].get(n, math.nan) for n in names}
            seconds[label] = s["seconds_per_pair"].get(m, math.nan)
            owners[label] = run.info.run_id
        for m in s["methods"]:
            if m in _BASELINE_NAMES:
                vals = {n: s["means"][m].get(n, math.nan) for n in names}
                if m in baselines and any(not _close(baselines[m][n], vals[n]) for n in names):
                    warnings.append(
                        f"baseline {m} differs between runs: the runs were not scored on the same test data"
                    )
                baselines.setdefault(m, vals)
                seconds.setdefault(m, s["seconds_per_pair"].get(m, math.nan))
    for m, vals in baselines.items():
        means[m] = vals
        owners[m] = ""
    versions = {r.info.run_id: r.data.tags.get("data.dvc_md5", "unknown") for r in runs}
    if len(set(versions.values())) > 1:
        warnings.append(f"the runs read different data versions {sorted(set(versions.values()))}; compare with care")
    if len(test_sets) > 1:
        warnings.append(f"the runs were evaluated on different test sets {sorted(test_sets)}")
    return RunsReport(names, means, seconds, owners, versions, " + ".join(sorted(test_sets)), sorted(set(warnings)))


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _runs_figure(client, runs: list, report: RunsReport, path: Path, tmp: Path, pairs: int) -> Path | None:
    """Sources and baselines from the first run's samples, each run's model output beside them."""
    rows: dict[str, dict[str, np.ndarray]] = {}
    columns: list[str] = []
    inputs: list[str] = []
    for i, run in enumerate(runs):
        rid = run.info.run_id
        try:
            local = Path(client.download_artifacts(rid, SAMPLES_ARTIFACT, str(tmp / rid)))
        except Exception:  # a run without samples still gets its table row
            log.warning("run %s has no %s artifact; left out of the figure", rid, SAMPLES_ARTIFACT)
            continue
        labels = {m for m, owner in report.runs.items() if owner == rid}
        meta_path = local / "index.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        inputs += [x for x in meta.get("inputs", []) if x not in inputs]
        for pair_dir in sorted(p for p in local.iterdir() if p.is_dir())[:pairs]:
            row = rows.setdefault(pair_dir.name, {})
            for png in sorted(pair_dir.glob("*.png")):
                label = meta.get("labels", {}).get(png.stem, png.stem)
                is_model = label not in _BASELINE_NAMES and label not in meta.get("inputs", [])
                if is_model:
                    if len(labels) == 1:
                        label = next(iter(labels))
                    elif f"{label}" not in report.means:
                        continue
                elif i > 0:
                    continue  # sources, ground truth and baselines come from the first run
                row[label] = read_image(png) if not _gray_png(png) else read_image(png, gray=True)
                if label not in columns:
                    columns.append(label)
    if not rows:
        return None
    order = [c for c in inputs if c in columns] + [m for m in report.means if m in columns]
    return comparison_figure(list(rows.values()), order, path, title=f"{report.test_set}: sources and fused outputs")


def _gray_png(path: Path) -> bool:
    img = read_image(path)
    return bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def _log(client, report: RunsReport, log_to: str | None, experiment_id: str, artifact_path: str = "report") -> str:
    """Files under `artifact_path` of the run, each mean as metric `<artifact_path>/<method>/<metric>`."""
    from fusion.tracking import log_metric_batch

    if log_to is None:
        run = client.create_run(
            experiment_id,
            run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"fusionflow.report": "true", "report.runs": ",".join(sorted({r for r in report.runs.values() if r}))},
        )
        log_to = run.info.run_id
        created = True
    else:
        created = False
    for p in report.paths.values():
        client.log_artifact(log_to, str(p), artifact_path)
    log_metric_batch(
        client,
        log_to,
        {
            f"{artifact_path}/{m}/{n}": v
            for m, vals in report.means.items()
            for n, v in vals.items()
            if math.isfinite(v)
        },
    )
    if created:
        client.set_terminated(log_to)
    return log_to
