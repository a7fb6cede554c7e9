"""An evaluation's reports: the means table (Markdown, CSV) with the best value per metric
marked, the per-pair CSV, summary.json and the kept sample images."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from fusion import metrics as fm
from fusion.evaluate_scoring import EvalResult
from fusion.io import write_bytes_atomic


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


def markdown_table(
    means: dict[str, dict[str, float]], names: Sequence[str], seconds: dict[str, float] | None = None, title: str = ""
) -> str:
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
        w.writerow(
            [
                m,
                *(repr(float(vals[n])) for n in names),
                *([repr(float(seconds.get(m, float("nan"))))] if seconds else []),
            ]
        )
    w.writerow(
        [
            "best",
            *(" / ".join(sorted(best[n])) for n in names),
            *([min(seconds, key=lambda m: seconds[m])] if seconds else []),
        ]
    )
    return buf.getvalue()


def write_reports(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    """summary.json, per_pair.csv, table.md and table.csv (means per method, best marked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out_dir / "summary.json",
        "per_pair": out_dir / "per_pair.csv",
        "table": out_dir / "table.md",
        "table_csv": out_dir / "table.csv",
    }
    write_bytes_atomic(paths["summary"], (json.dumps(result.to_json(), indent=2) + "\n").encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["pair", "method", *result.metric_names], lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    write_bytes_atomic(paths["per_pair"], buf.getvalue().encode())
    title = f"Test set `{result.test_set}` ({len(result.rows) // max(1, len(result.methods))} pairs, device {result.device})"
    write_bytes_atomic(
        paths["table"], markdown_table(result.means, result.metric_names, result.seconds_per_pair, title).encode()
    )
    write_bytes_atomic(
        paths["table_csv"], csv_table(result.means, result.metric_names, result.seconds_per_pair).encode()
    )
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
