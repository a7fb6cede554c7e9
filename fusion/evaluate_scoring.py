"""Scoring fused images: the metrics of docs/metrics.md per pair and method, their means, and
the names they are logged under."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fusion import metrics as fm
from fusion.errors import ConfigError, DataError


@dataclass
class EvalResult:
    methods: list[str]
    metric_names: list[str]
    test_set: str = ""
    rows: list[dict] = field(default_factory=list)  # one per (pair, method)
    means: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds_per_pair: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    def to_json(self) -> dict:
        return {
            "test_set": self.test_set,
            "methods": self.methods,
            "metrics": self.metric_names,
            "means": self.means,
            "seconds_per_pair": self.seconds_per_pair,
            "device": self.device,
            "convention": "docs/metrics.md",
            "pairs": self.rows,
        }


def resolve_metrics(names: Sequence[str] | None, has_gt: bool, has_sources: bool = True) -> list[str]:
    """`None` or ["all"] = every metric that applies; otherwise the names, validated."""
    selected = fm.select_metrics(names, has_gt, has_sources)
    if selected.unknown:
        raise ConfigError(f"evaluate.metrics: unknown metric(s) {selected.unknown}; valid: {[fm.ALL, *fm.METRICS]}")
    needs = [n for n, lacks in selected.unusable.items() if lacks == "gt"]
    if needs:
        raise ConfigError(f"metrics {needs} need a ground truth and this test set has none")
    return selected.names


def score(
    sources: Sequence[np.ndarray],
    fused: np.ndarray,
    gt: np.ndarray | None,
    names: Sequence[str],
    device: str | torch.device = "cpu",
    where: str = "",
) -> dict[str, float]:
    """Every metric of one fused image; MetricInputError/NaN become DataError naming `where`."""
    return score_batch(sources, [fused], gt, names, device, [where or "fused image"])[0]


def score_batch(
    sources: Sequence[np.ndarray],
    fused: Sequence[np.ndarray],
    gt: np.ndarray | None,
    names: Sequence[str],
    device: str | torch.device = "cpu",
    where: Sequence[str] = (),
) -> list[dict[str, float]]:
    """score() of several fused images of the same sources, batched; errors name `where[k]`."""
    where = list(where) or [f"fused image {k}" for k in range(len(fused))]
    if len(sources) != 2:
        raise DataError(f"{where[0]}: the metrics compare two sources with the fused image, got {len(sources)} sources")
    try:
        grays = [fm.to_gray(f, w) for f, w in zip(fused, where)]
        a, b = fm.to_gray(sources[0], "source a"), fm.to_gray(sources[1], "source b")
        n = len(grays)

        def stack(x: np.ndarray) -> np.ndarray:
            return np.stack([x] * n)

        values = fm.compute_batch(
            stack(a),
            stack(b),
            np.stack(grays),
            gt=None if gt is None else stack(fm.to_gray(gt, "gt")),
            names=list(names),
            device=device,
        )
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
        key = (
            prefix if method == model_method else ("baseline/" if prefix == "test" else f"{prefix}/baseline/") + method
        )
        out.update({f"{key}/{k}": v for k, v in values.items() if math.isfinite(v)})
        out[f"{key}/seconds_per_pair"] = result.seconds_per_pair[method]
    return out


def means_by_method(rows: list[dict], methods: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, float]]:
    return {m: {n: float(np.mean([r[n] for r in rows if r["method"] == m])) for n in names} for m in methods}
