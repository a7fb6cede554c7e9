"""Patch augmentation (CADNIF / PMGI expansion): aligned training windows cut from source pairs,
written as shards that stream into training instead of 100k loose PNGs.

Each window is cut at the same place from every source of a pair (and the ground truth
where there is one), optionally flipped and rotated identically. Shards are `.npy` arrays
of shape (n, planes, window, window) uint8 (planes = sources [+ gt], each gray or RGB
channels stacked) that load memory-mapped, so a training step reads only its patches.
The folder is built under a temporary name and renamed when complete, with a manifest
(parameters, provenance, per-shard sha256); a failed build leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from fusion.data.manifest import relative, write_bad_inputs
from fusion.data.parallel import map_ordered
from fusion.errors import ConfigError, DataError, output_error
from fusion.io import atomic_directory, read_image, sha256_file, write_bytes_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "fusionflow-patches/1"


@dataclass(frozen=True)
class PatchParams:
    window: int = 132  # the released CADNIF code: 132x132 windows ...
    stride: int = 14  # ... at stride 14
    gray: bool = True  # Y of YCrCb (the unsupervised models fuse luminance)
    flips: bool = False  # + horizontal flip of every window
    rotations: bool = False  # + 90, 180, 270 degree rotations
    shard_size: int = 4096  # windows per shard
    max_per_pair: int = 0  # 0 = every window; else a seeded sample of this many per pair
    seed: int = 0

    def validate(self) -> None:
        for name in ("window", "stride", "shard_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"patches.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_per_pair < 0:
            raise ConfigError(f"patches.max_per_pair: must be >= 0, got {self.max_per_pair}")


def window_origins(h: int, w: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of every window that fits, row-major (none if the image is smaller)."""
    return [(y, x) for y in range(0, h - window + 1, stride) for x in range(0, w - window + 1, stride)]


def _planes(img: np.ndarray, gray: bool) -> np.ndarray:
    """H x W (x 3) uint8 -> C x H x W, gray as Y of YCrCb (cv2's weights) when asked."""
    import cv2

    if img.ndim == 2:
        return img[None]
    if gray:
        return cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)[..., 0][None]
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def _augment(stack: np.ndarray, params: PatchParams) -> list[np.ndarray]:
    """The same flips/rotations of every plane of one window stack (P x H x W)."""
    out = [stack]
    if params.rotations:
        out += [np.rot90(stack, k, axes=(1, 2)) for k in (1, 2, 3)]
    if params.flips:
        out += [s[:, :, ::-1] for s in list(out)]
    return [np.ascontiguousarray(s) for s in out]


def cut_pair(paths: Sequence[str], params: PatchParams, salt: int) -> np.ndarray:
    """All (augmented) windows of one pair: N x planes x window x window uint8."""
    images = [read_image(p) for p in paths]
    sizes = {str(p): im.shape[:2] for p, im in zip(paths, images)}
    if len(set(sizes.values())) != 1:
        raise DataError(f"pair sources differ in size {sizes}")
    stack = np.concatenate([_planes(im, params.gray) for im in images], axis=0)
    h, w = stack.shape[1:]
    origins = window_origins(h, w, params.window, params.stride)
    if params.max_per_pair and len(origins) > params.max_per_pair:
        pick = np.random.default_rng([params.seed, salt]).choice(len(origins), params.max_per_pair, replace=False)
        origins = [origins[i] for i in sorted(pick)]
    windows = [v for y, x in origins for v in _augment(stack[:, y : y + params.window, x : x + params.window], params)]
    if not windows:
        return np.zeros((0, stack.shape[0], params.window, params.window), np.uint8)
    return np.stack(windows)


def _cut_group(job) -> tuple[int, dict | None, list[str]]:
    """Cut a run of consecutive pairs into one shard file, written by the worker itself:
    sending the windows back through a pipe cost as much as cutting them."""
    index, group, params, folder = job
    parts, problems = [], []
    for k, paths in group:
        try:
            parts.append(cut_pair(paths, params, k))
        except DataError as exc:
            problems.append(f"{paths[0]}: {exc}")
    if problems or not parts:
        return index, None, problems
    arr = np.concatenate(parts)
    if not len(arr):
        return index, {"file": None, "count": 0, "planes": arr.shape[1]}, []
    name = f"shard-{index:05d}.npy"
    try:
        np.save(Path(folder) / name, arr)
    except OSError as exc:  # numpy reports a short write without an errno ("N requested and M written")
        raise output_error(Path(folder) / name, exc) from exc
    return (
        index,
        {"file": name, "count": len(arr), "planes": arr.shape[1], "sha256": sha256_file(Path(folder) / name)},
        [],
    )


def build_patches(
    pairs: Sequence,
    out: Path,
    params: PatchParams,
    workers: int = 0,
    provenance: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    skipped: Sequence = (),
    root: Path | None = None,
) -> dict:
    """Cut every pair into windows and write shards + manifest to `out` (atomically).

    pairs: records with `id`, `paths` (and optional `gt`), e.g. from fusion.data.sources.
    Shards hold runs of consecutive pairs (about `shard_size` windows each, judged from the
    first pair), so their content depends on the inputs and parameters only, not on the
    number of worker processes (0 = all cores). Every unreadable or mismatched pair is
    reported at once, and nothing is written. `skipped`: bad inputs already left out
    (skip_bad), reported beside the shards; `root`: record source paths relative to it.
    """
    params.validate()
    if not pairs:
        raise DataError(f"{out}: no source pairs to cut patches from")
    rel = (lambda x: relative(x, root)) if root is not None else str
    paths = [[str(x) for x in p.paths] + ([str(p.gt)] if getattr(p, "gt", None) else []) for p in pairs]
    first = len(cut_pair(paths[0], params, 0)) if not params.max_per_pair else params.max_per_pair * _copies(params)
    per_shard = max(1, math.ceil(params.shard_size / max(1, first)))
    groups = [list(enumerate(paths))[i : i + per_shard] for i in range(0, len(paths), per_shard)]
    with atomic_directory(out) as tmp:
        jobs = [(i, g, params, str(tmp)) for i, g in enumerate(groups)]
        step = (lambda done, _: progress(min(len(pairs), done * per_shard), len(pairs))) if progress else None
        done = map_ordered(_cut_group, jobs, workers, step, chunksize=1)
        problems = [e for _, _, errs in done for e in errs]
        if problems:
            raise DataError(f"{len(problems)} pair(s) could not be cut:\n  " + "\n  ".join(problems))
        # a group gives no shard only beside its problems, reported above
        results = {i: shard for i, shard, _ in done if shard is not None}
        shards = [results[i] for i in range(len(jobs)) if results[i]["count"]]
        planes = {s["planes"] for s in shards}
        if len(planes) > 1:
            raise DataError(f"pairs give different plane counts {sorted(planes)} (mixed gray/colour with gray=false?)")
        total = sum(s["count"] for s in shards)
        if total == 0:
            raise DataError(f"no {params.window}x{params.window} window fits in any source image; lower patches.window")
        manifest = {
            "format": FORMAT,
            "params": asdict(params),
            "count": total,
            "planes": planes.pop(),
            "sources": [
                {"id": p.id, "paths": [rel(x) for x in p.paths], "gt": rel(p.gt) if getattr(p, "gt", None) else None}
                for p in pairs
            ],
            "has_gt": all(getattr(p, "gt", None) for p in pairs),
            "provenance": provenance or {},
            "shards": [{k: s[k] for k in ("file", "count", "sha256")} for s in shards],
        }
        bad = write_bad_inputs(tmp, skipped, f"patches of {root or 'the sources'}")
        if bad:
            manifest["skipped"] = bad
        write_bytes_atomic(tmp / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    log.info(
        "%d windows of %dx%d from %d pairs in %d shard(s) -> %s",
        total,
        params.window,
        params.window,
        len(pairs),
        len(shards),
        out,
    )
    return manifest


def _copies(params: PatchParams) -> int:
    return (4 if params.rotations else 1) * (2 if params.flips else 1)


class PatchShards(Dataset):
    """Windows of a patch folder, memory-mapped: item i -> {"s0": C x H x W uint8 view, ...}."""

    def __init__(self, root: str | Path, sources: int = 2):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(f"{path}: not a patch folder (no manifest); build it with `fusion data patches`")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{path}: unknown format {self.manifest.get('format')!r} (expected {FORMAT})")
        self.arrays = [np.load(self.root / s["file"], mmap_mode="r") for s in self.manifest["shards"]]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        planes = self.manifest["planes"]
        per = planes // (sources + int(self.manifest["has_gt"]))
        self.names = [f"s{k}" for k in range(sources)] + (["gt"] if self.manifest["has_gt"] else [])
        self.slices = {n: slice(k * per, (k + 1) * per) for k, n in enumerate(self.names)}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Window `index` as H x W (gray) or H x W x 3 arrays, the layout of the other datasets."""
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        stack = self.arrays[shard][index - self.offsets[shard]]
        out = {}
        for name, sl in self.slices.items():
            planes = np.asarray(stack[sl])
            out[name] = planes[0] if len(planes) == 1 else np.ascontiguousarray(planes.transpose(1, 2, 0))
        return out
