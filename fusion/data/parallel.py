"""Preparation work spread over processes, results in input order, with a progress callback.

Decoding and resizing images is CPU-bound numpy/OpenCV work that holds the GIL for much of
its time, so threads do not scale; processes do. Results come back in input order, so an
output never depends on how many workers built it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

Progress = Callable[[int, int], None]


def worker_count(workers: int, jobs: int) -> int:
    """0 = every core (as the OS grants them to this process); never more than the jobs."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = every core), got {workers}")
    if workers == 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(workers, jobs))


def map_ordered(
    fn: Callable[[T], R], items: Sequence[T], workers: int = 0, progress: Progress | None = None, chunksize: int = 0
) -> list[R]:
    """[fn(x) for x in items] on `workers` processes (0 = all cores, 1 = in this process)."""
    n = worker_count(workers, len(items))
    results: list[R] = []
    if n == 1:
        it: Iterable[R] = map(fn, items)
        pool = None
    else:
        # Small chunks keep the bar moving and the cores busy to the end.
        chunksize = chunksize or max(1, min(16, len(items) // (n * 8)))
        pool = ProcessPoolExecutor(max_workers=n)
        it = pool.map(fn, items, chunksize=chunksize)
    try:
        for r in it:
            results.append(r)
            if progress:
                progress(len(results), len(items))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return results
