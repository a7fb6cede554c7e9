"""Evaluation: every metric per test pair for a model and the classical baselines, timed.

Pure library code: returns numbers and images; the pipeline and the CLI decide where they
are written or logged. A test set is either a prepared split (near/far/gt folders with a
manifest) or two folders of sources matched by file name (plus an optional ground truth).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fusion import metrics as fm
from fusion.baselines import BASELINES, fuse_baseline
from fusion.errors import ConfigError, DataError
from fusion.io import list_images, read_image, sha256_file, write_bytes_atomic

MODEL_METHOD = "model"
ALL = "all"

FuseFn = Callable[[Sequence[np.ndarray]], np.ndarray]


# --------------------------------------------------------------------------- test sets
@dataclass
class TestSet:
    """Pairs of same-size sources (uint8 RGB or gray), loaded lazily; `gt` where it exists."""

    name: str
    ids: list[str]
    source_labels: list[str]
    _files: dict[str, dict[str, Path]]
    has_gt: bool

    __test__ = False  # not a pytest class

    def __len__(self) -> int:
        return len(self.ids)

    def version(self) -> str:
        """sha256 over every pair's id and file bytes: equal exactly when two test sets hold
        the same images (what a champion comparison needs), wherever they are stored."""
        h = hashlib.sha256()
        for pid in self.ids:
            h.update(pid.encode() + b"\0")
            for label in (*self.source_labels, *(["gt"] if self.has_gt else [])):
                h.update(sha256_file(self._files[pid][label]).encode())
        return h.hexdigest()

    def load(self, index: int) -> tuple[list[np.ndarray], np.ndarray | None]:
        pid = self.ids[index]
        files = self._files[pid]
        sources = [read_image(files[label]) for label in self.source_labels]
        gt = read_image(files["gt"]) if self.has_gt else None
        shapes = {str(files[k]): im.shape[:2] for k, im in zip([*self.source_labels, "gt"], [*sources, gt]) if im is not None}
        if len(set(shapes.values())) != 1:
            raise DataError(f"pair {pid}: images differ in size {shapes}")
        return sources, gt


def folder_test_set(source_a: Path, source_b: Path, gt: Path | None = None, name: str | None = None) -> TestSet:
    """Sources matched by file name (stem); every pair needs both sources (and gt if given)."""
    folders = {"source-a": Path(source_a), "source-b": Path(source_b)}
    if gt is not None:
        folders["gt"] = Path(gt)
    for label, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"--{label} {folder}: folder not found")
    by_stem = {label: {p.stem: p for p in list_images(folder)} for label, folder in folders.items()}
    ids = sorted(by_stem["source-a"])
    if not ids:
        raise DataError(f"--source-a {folders['source-a']}: no images found")
    for label in folders:
        missing = sorted(set(ids) - set(by_stem[label]))
        extra = sorted(set(by_stem[label]) - set(ids))
        if missing:
            raise DataError(f"--{label} {folders[label]}: no partner for {_names(missing)}")
        if extra and label != "gt":
            raise DataError(f"--source-a {folders['source-a']}: no partner for {_names(extra)} of --{label}")
    files = {i: {label: by_stem[label][i] for label in folders} for i in ids}
    return TestSet(name or folders["source-a"].parent.name, ids, ["source-a", "source-b"], files, gt is not None)


def prepared_test_set(root: Path, split: str = "test") -> TestSet:
    """A prepared split: `root/split/{near,far,gt}/<id>.png` listed in root/manifest.json."""
    from fusion.data.dataset import PairedFolder

    data = PairedFolder(root, split)
    files = {i: {k: data.root / split / k / f"{i}.png" for k in ("near", "far", "gt")} for i in data.ids}
    return TestSet(f"{Path(root).name}/{split}", list(data.ids), ["near", "far"], files, True)


def pairs_test_set(pairs: list, name: str) -> TestSet:
    """Source-pair records (fusion.data.sources) as a test set without ground truth; of a
    longer exposure sequence the darkest and brightest frames, as in training."""
    if not pairs:
        raise DataError(f"{name}: no test pairs")
    mods = list(getattr(pairs[0], "modalities", None) or ("source-a", "source-b"))
    labels = [mods[0], mods[-1]] if mods[0] != mods[-1] else ["source-a", "source-b"]
    files = {p.id: dict(zip(labels, [Path(p.paths[0]), Path(p.paths[-1])])) for p in pairs}
    return TestSet(name, [p.id for p in pairs], labels, files, False)


def _names(items: list[str], limit: int = 10) -> str:
    return str(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- scoring
@dataclass
class EvalResult:
    methods: list[str]
    metric_names: list[str]
    test_set: str = ""
    rows: list[dict] = field(default_factory=list)          # one per (pair, method)
    means: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds_per_pair: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    def to_json(self) -> dict:
        return {"test_set": self.test_set, "methods": self.methods, "metrics": self.metric_names, "means": self.means,
                "seconds_per_pair": self.seconds_per_pair, "device": self.device, "convention": "docs/metrics.md",
                "pairs": self.rows}


def resolve_metrics(names: Sequence[str] | None, has_gt: bool, has_sources: bool = True) -> list[str]:
    """`None` or ["all"] = every metric that applies; otherwise the names, validated."""
    if names is None or list(names) == [ALL]:
        return [n for n, m in fm.METRICS.items() if (has_gt or not m.needs_gt) and (has_sources or not m.needs_sources)]
    unknown = [n for n in names if n not in fm.METRICS]
    if unknown:
        raise ConfigError(f"evaluate.metrics: unknown metric(s) {unknown}; valid: {[ALL, *fm.METRICS]}")
    if not has_gt:
        needs = [n for n in names if fm.METRICS[n].needs_gt]
        if needs:
            raise ConfigError(f"metrics {needs} need a ground truth and this test set has none")
    return list(names)


def baseline_methods(names: Sequence[str]) -> dict[str, FuseFn]:
    if list(names) == [ALL]:
        names = list(BASELINES)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"baseline(s) {unknown} unknown; valid: {[ALL, *BASELINES]}")
    return {n: (lambda srcs, n=n: fuse_baseline(n, srcs)) for n in names}


def model_method(model: torch.nn.Module, device: str | torch.device) -> FuseFn:
    from fusion.inference import fuse

    device = torch.device(device)

    def run(sources: Sequence[np.ndarray]) -> np.ndarray:
        out = fuse(model, sources, device)
        if device.type == "cuda":  # time the work, not the launch
            torch.cuda.synchronize(device)
        return out

    return run


def evaluate_methods(
    test_set: TestSet,
    methods: dict[str, FuseFn],
    metric_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    keep_images: int = 0,
    progress: Callable[[int, int], None] | None = None,
    warm_up: Sequence[str] = (),
) -> tuple[EvalResult, list[dict]]:
    """Fuse every pair with every method, score it, time the fusion.

    Returns the result and, for the first `keep_images` pairs, a dict of the images
    (sources, gt, each method's output) for comparison figures. Methods named in
    `warm_up` fuse the first pair once untimed (allocator and kernel selection).
    Errors name the pair and the method: an output of the wrong size, NaN in an output,
    a metric that would be NaN.
    """
    if not methods:
        raise ConfigError("nothing to evaluate: give a model, fused images or at least one baseline")
    names = resolve_metrics(metric_names, test_set.has_gt)
    result = EvalResult(list(methods), names, test_set=test_set.name, device=str(device))
    seconds = dict.fromkeys(methods, 0.0)
    samples: list[dict] = []
    if warm_up:
        sources, _ = test_set.load(0)
        for m in warm_up:
            methods[m](sources)
    for i, pid in enumerate(test_set.ids):
        sources, gt = test_set.load(i)
        outputs: dict[str, np.ndarray] = {}
        for method, fn in methods.items():
            start = time.perf_counter()
            try:
                fused = fn(sources)
            except DataError as exc:
                raise DataError(f"{method} on pair {pid}: {exc}") from exc
            seconds[method] += time.perf_counter() - start
            if fused.shape[:2] != sources[0].shape[:2]:
                raise DataError(f"{method} produced a {fused.shape[:2]} image for pair {pid}; "
                                f"its sources are {sources[0].shape[:2]}")
            outputs[method] = fused
        # All methods' outputs of one pair in one batched call: the metrics share the
        # sources' intermediates and the per-call overhead.
        values = score_batch(sources, list(outputs.values()), gt, names, device, where=[f"{m} on pair {pid}" for m in outputs])
        result.rows += [{"pair": pid, "method": m, **v} for m, v in zip(outputs, values)]
        if i < keep_images:
            samples.append({"id": pid, "sources": sources, "gt": gt, "fused": outputs})
        if progress:
            progress(i + 1, len(test_set))
    result.seconds_per_pair = {m: s / len(test_set) for m, s in seconds.items()}
    result.means = means_by_method(result.rows, result.methods, names)
    return result, samples


def score(sources: Sequence[np.ndarray], fused: np.ndarray, gt: np.ndarray | None, names: Sequence[str],
          device: str | torch.device = "cpu", where: str = "") -> dict[str, float]:
    """Every metric of one fused image; MetricInputError/NaN become DataError naming `where`."""
    return score_batch(sources, [fused], gt, names, device, [where or "fused image"])[0]


def score_batch(sources: Sequence[np.ndarray], fused: Sequence[np.ndarray], gt: np.ndarray | None, names: Sequence[str],
                device: str | torch.device = "cpu", where: Sequence[str] = ()) -> list[dict[str, float]]:
    """score() of several fused images of the same sources, batched; errors name `where[k]`."""
    where = list(where) or [f"fused image {k}" for k in range(len(fused))]
    if len(sources) != 2:
        raise DataError(f"{where[0]}: the metrics compare two sources with the fused image, got {len(sources)} sources")
    try:
        grays = [fm.to_gray(f, w) for f, w in zip(fused, where)]
        a, b = fm.to_gray(sources[0], "source a"), fm.to_gray(sources[1], "source b")
        n = len(grays)
        stack = lambda x: np.stack([x] * n)  # noqa: E731
        values = fm.compute_batch(stack(a), stack(b), np.stack(grays),
                                  gt=None if gt is None else stack(fm.to_gray(gt, "gt")), names=list(names), device=device)
    except fm.MetricInputError as exc:
        raise DataError(f"{where[0] if len(where) == 1 else ', '.join(where)}: {exc}") from exc
    out = []
    for k in range(len(grays)):
        row = {name: float(values[name][k]) for name in names}
        bad = [name for name, v in row.items() if math.isnan(v)]
        if bad:  # never a silent NaN in a table
            raise DataError(f"{where[k]}: metric(s) {bad} are NaN")
        out.append(row)
    return out


def run_metrics(result: EvalResult, model_method: str, prefix: str = "test") -> dict[str, float]:
    """An evaluation's means as logged to its MLflow run: `<prefix>/<metric>` for the model,
    `baseline/<method>/<metric>` (under `<prefix>/` for other test sets) for the rest, each
    method's seconds per pair beside them; non-finite means are left out."""
    out: dict[str, float] = {}
    for method, values in result.means.items():
        key = prefix if method == model_method else ("baseline/" if prefix == "test" else f"{prefix}/baseline/") + method
        out.update({f"{key}/{k}": v for k, v in values.items() if math.isfinite(v)})
        out[f"{key}/seconds_per_pair"] = result.seconds_per_pair[method]
    return out


def means_by_method(rows: list[dict], methods: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, float]]:
    return {m: {n: float(np.mean([r[n] for r in rows if r["method"] == m])) for n in names} for m in methods}


# --------------------------------------------------------------------------- reports
def best_by_metric(means: dict[str, dict[str, float]], names: Sequence[str]) -> dict[str, set[str]]:
    """Methods holding the best mean of each metric (ties all marked; NaN and inf never best)."""
    out: dict[str, set[str]] = {}
    for name in names:
        sign = 1.0 if fm.METRICS[name].higher_is_better else -1.0
        vals = {m: sign * v[name] for m, v in means.items() if name in v and math.isfinite(v[name])}
        top = max(vals.values(), default=None)
        out[name] = {m for m, v in vals.items() if v == top}
    return out


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:.4f}" if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def markdown_table(means: dict[str, dict[str, float]], names: Sequence[str],
                   seconds: dict[str, float] | None = None, title: str = "") -> str:
    """Metric means per method (rows), best value per metric in bold, ↑/↓ per column."""
    best = best_by_metric(means, names)
    arrows = {n: ("↑" if fm.METRICS[n].higher_is_better else "↓") for n in names}
    cols = [f"{n} {arrows[n]}" for n in names] + (["s/pair ↓"] if seconds else [])
    out = f"{title}\n\n" if title else ""
    out += "| method | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 1) + "|\n"
    for m, vals in means.items():
        cells = [f"**{_fmt(vals[n])}**" if m in best[n] else _fmt(vals[n]) for n in names]
        if seconds:
            cells.append(_fmt(seconds.get(m, float("nan"))))
        out += f"| {m} | " + " | ".join(cells) + " |\n"
    return out


def csv_table(means: dict[str, dict[str, float]], names: Sequence[str], seconds: dict[str, float] | None = None) -> str:
    """Same table as CSV (full precision); a final `best` row names the winning method(s)."""
    best = best_by_metric(means, names)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", *names, *(["seconds_per_pair"] if seconds else [])])
    for m, vals in means.items():
        w.writerow([m, *(repr(float(vals[n])) for n in names), *([repr(float(seconds.get(m, float("nan"))))] if seconds else [])])
    w.writerow(["best", *(" / ".join(sorted(best[n])) for n in names), *([min(seconds, key=seconds.get)] if seconds else [])])
    return buf.getvalue()


def write_reports(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    """summary.json, per_pair.csv, table.md and table.csv (means per method, best marked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out_dir / "summary.json", "per_pair": out_dir / "per_pair.csv",
             "table": out_dir / "table.md", "table_csv": out_dir / "table.csv"}
    write_bytes_atomic(paths["summary"], (json.dumps(result.to_json(), indent=2) + "\n").encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["pair", "method", *result.metric_names], lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    write_bytes_atomic(paths["per_pair"], buf.getvalue().encode())
    title = f"Test set `{result.test_set}` ({len(result.rows) // max(1, len(result.methods))} pairs, device {result.device})"
    write_bytes_atomic(paths["table"], markdown_table(result.means, result.metric_names, result.seconds_per_pair, title).encode())
    write_bytes_atomic(paths["table_csv"], csv_table(result.means, result.metric_names, result.seconds_per_pair).encode())
    return paths


def save_samples(samples: list[dict], out_dir: Path, source_labels: Sequence[str]) -> list[Path]:
    """The kept images as PNGs, `<pair>/<label>.png`, plus index.json mapping file names to
    labels and saying which are inputs (sources, ground truth): reports across runs read it."""
    from fusion.io import write_image, write_json_atomic

    written, labels, inputs = [], {}, [*source_labels, "ground truth"]
    for s in samples:
        folder = out_dir / _safe(s["id"])
        items = dict(zip(source_labels, s["sources"]))
        if s["gt"] is not None:
            items["ground truth"] = s["gt"]
        items.update(s["fused"])
        for label, img in items.items():
            labels[_safe(label)] = label
            path = folder / f"{_safe(label)}.png"
            write_image(path, img)
            written.append(path)
    index = out_dir / "index.json"
    write_json_atomic(index, {"labels": labels, "inputs": inputs})
    return [*written, index]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


# --------------------------------------------------------------------------- fused folders
def score_folders(
    source_a: Path, source_b: Path, fused: Path, gt: Path | None = None, metric_names: list[str] | None = None,
    device: str = "cpu", allow_missing: bool = False, progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Score already-fused images: pairs matched by file name across the folders.

    Every source pair needs a fused image (unless `allow_missing`, which scores the ones
    present and lists the rest), every fused image needs both sources (and a ground truth
    when `gt` is given), all of the same height and width; anything else is an error
    naming the files.
    """
    fused = Path(fused)
    if not fused.is_dir():
        raise DataError(f"--fused {fused}: folder not found")
    for label, folder in (("source-a", source_a), ("source-b", source_b), ("gt", gt)):
        if folder is not None and not Path(folder).is_dir():
            raise DataError(f"--{label} {folder}: folder not found")
    fused_by = {p.stem: p for p in list_images(fused)}
    if not fused_by:
        raise DataError(f"--fused {fused}: no images found")
    sources_by = {p.stem for p in list_images(Path(source_a))}
    for label, folder in (("source-a", source_a), ("source-b", source_b), ("gt", gt)):
        if folder is None:
            continue
        have = {p.stem for p in list_images(Path(folder))}
        orphans = sorted(set(fused_by) - have)
        if orphans:
            raise DataError(f"--{label} {folder}: no image for fused file(s) {_names(orphans)}")
    unfused = sorted(sources_by - set(fused_by))
    if unfused and not allow_missing:
        raise DataError(f"--fused {fused}: missing fused image(s) for {_names(unfused)} "
                        f"(pass --allow-missing to score only the fused images present)")
    test_set = folder_test_set(source_a, source_b, gt)
    keep = [i for i, pid in enumerate(test_set.ids) if pid in fused_by]
    names = resolve_metrics(metric_names, gt is not None)
    for i in keep:  # validate every pair before the (slow) scoring starts
        pid = test_set.ids[i]
        sources, _ = test_set.load(i)
        img = read_image(fused_by[pid])
        if img.shape[:2] != sources[0].shape[:2]:
            raise DataError(f"{fused_by[pid]}: size {img.shape[:2]} differs from its sources {sources[0].shape[:2]}")
    pairs: dict[str, dict[str, float]] = {}
    for n, i in enumerate(keep):
        pid = test_set.ids[i]
        sources, ground = test_set.load(i)
        pairs[pid] = score(sources, read_image(fused_by[pid]), ground, names, device, where=str(fused_by[pid]))
        if progress:
            progress(n + 1, len(keep))
    means = {m: float(np.mean([p[m] for p in pairs.values()])) for m in names}
    return {"convention": "docs/metrics.md", "metrics": names, "means": means, "pairs": pairs,
            "count": len(pairs), "sources_without_fused_image": unfused}
