"""Evaluation: every metric per test pair for a model and the classical baselines, timed.

Pure library code: returns numbers and images; the pipeline and the CLI decide where they
are written or logged. A test set is either a prepared split (near/far/gt folders with a
manifest) or two folders of sources matched by file name (plus an optional ground truth).

This module runs the methods (a model, the baselines) over a test set; the test sets
(evaluate_sets.py), the scoring (evaluate_scoring.py), the reports (evaluate_tables.py) and
the scoring of already-fused folders (evaluate_folders.py) live beside it and are
re-exported here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fusion.baselines import BASELINES, fuse_baseline
from fusion.errors import ConfigError, DataError

# re-exported: `fusion.evaluate` is where callers find test sets, scoring, folders and tables
from fusion.evaluate_folders import score_folders
from fusion.evaluate_scoring import EvalResult, means_by_method, resolve_metrics, run_metrics, score, score_batch
from fusion.evaluate_sets import TestSet, folder_test_set, pairs_test_set, prepared_test_set
from fusion.evaluate_tables import best_by_metric, csv_table, markdown_table, save_samples, write_reports
from fusion.metrics import ALL

__all__ = [
    "ALL",
    "EvalResult",
    "FuseFn",
    "TestSet",
    "baseline_methods",
    "best_by_metric",
    "csv_table",
    "evaluate_methods",
    "folder_test_set",
    "markdown_table",
    "means_by_method",
    "model_method",
    "pairs_test_set",
    "prepared_test_set",
    "resolve_metrics",
    "run_metrics",
    "save_samples",
    "score",
    "score_batch",
    "score_folders",
    "write_reports",
]

FuseFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def baseline_methods(names: Sequence[str]) -> dict[str, FuseFn]:
    if list(names) == [ALL]:
        names = list(BASELINES)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"baseline(s) {unknown} unknown; valid: {[ALL, *BASELINES]}")
    return {n: functools.partial(fuse_baseline, n) for n in names}


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
                raise DataError(
                    f"{method} produced a {fused.shape[:2]} image for pair {pid}; "
                    f"its sources are {sources[0].shape[:2]}"
                )
            outputs[method] = fused
        # All methods' outputs of one pair in one batched call: the metrics share the
        # sources' intermediates and the per-call overhead.
        values = score_batch(
            sources, list(outputs.values()), gt, names, device, where=[f"{m} on pair {pid}" for m in outputs]
        )
        result.rows += [{"pair": pid, "method": m, **v} for m, v in zip(outputs, values)]
        if i < keep_images:
            samples.append({"id": pid, "sources": sources, "gt": gt, "fused": outputs})
        if progress:
            progress(i + 1, len(test_set))
    result.seconds_per_pair = {m: s / len(test_set) for m, s in seconds.items()}
    result.means = means_by_method(result.rows, result.methods, names)
    return result, samples
