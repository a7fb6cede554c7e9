"""Scoring images fused elsewhere: folders of sources and fused images matched by file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusion.errors import DataError
from fusion.evaluate_scoring import resolve_metrics, score
from fusion.evaluate_sets import folder_test_set, short_list
from fusion.io import list_images, read_image


def score_folders(
    source_a: Path,
    source_b: Path,
    fused: Path,
    gt: Path | None = None,
    metric_names: list[str] | None = None,
    device: str = "cpu",
    allow_missing: bool = False,
    progress: Callable[[int, int], None] | None = None,
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
            raise DataError(f"--{label} {folder}: no image for fused file(s) {short_list(orphans)}")
    unfused = sorted(sources_by - set(fused_by))
    if unfused and not allow_missing:
        raise DataError(
            f"--fused {fused}: missing fused image(s) for {short_list(unfused)} "
            f"(pass --allow-missing to score only the fused images present)"
        )
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
    return {
        "convention": "docs/metrics.md",
        "metrics": names,
        "means": means,
        "pairs": pairs,
        "count": len(pairs),
        "sources_without_fused_image": unfused,
    }
