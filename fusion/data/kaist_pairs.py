"""KAIST infrared/visible training pairs, as CrossFuse trains on them.

From a KAIST multispectral tree (`setNN/VNNN/{lwir,visible}/INNNNN.jpg`): keep every
`frame_stride`-th frame of each sequence (neighbouring frames are near-duplicates), draw
`pairs` of those by seed, convert both images to gray and resize them to size x size.
The output is itself a KAIST tree of PNGs, so `layout: kaist` reads it back with its
sequences as groups (no sequence on both sides of a split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from fusion.data.manifest import relative, write_bad_inputs, write_manifest
from fusion.data.parallel import Progress, map_ordered
from fusion.data.sources import SourcePair, Sources, checked
from fusion.errors import ConfigError, DataError
from fusion.io import atomic_directory, write_image

FORMAT = "fusionflow-kaist-pairs/1"
FOLDERS = ("lwir", "visible")


@dataclass(frozen=True)
class KaistParams:
    pairs: int = 1000  # 0 = every frame left after the stride
    frame_stride: int = 1
    size: int = 256
    seed: int = 0


def sample_frames(frames: Sequence[SourcePair], params: KaistParams) -> list[SourcePair]:
    """Every frame_stride-th frame of each sequence, then `pairs` of them drawn by seed,
    returned in id order. Depends only on the frame ids and the parameters."""
    by_seq: dict[str, list[SourcePair]] = {}
    for f in frames:
        by_seq.setdefault(f.group, []).append(f)
    pool = [
        f
        for seq in sorted(by_seq)
        for i, f in enumerate(sorted(by_seq[seq], key=lambda f: f.id))
        if i % params.frame_stride == 0
    ]
    if not pool:
        raise DataError("no KAIST frames to sample from")
    if params.pairs == 0:
        return pool
    if params.pairs > len(pool):
        raise ConfigError(
            f"pairs={params.pairs}: only {len(pool)} frame(s) left after frame_stride="
            f"{params.frame_stride} ({len(frames)} in the source); lower pairs or frame_stride"
        )
    pick = np.random.default_rng(params.seed).choice(len(pool), params.pairs, replace=False)
    return [pool[i] for i in sorted(pick)]


def gray_square(data: bytes, path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decoded bytes -> (size x size gray uint8, original (width, height))."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: cannot decode image")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    interp = cv2.INTER_AREA if min(img.shape) >= size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp), (img.shape[1], img.shape[0])


def _convert(job) -> dict:
    frame_id, paths, dest, size = job
    entry = {"id": frame_id, "source_sha256": [], "source_size": None, "files": [], "sha256": []}
    for folder, src in zip(FOLDERS, paths):
        data = Path(src).read_bytes()
        entry["source_sha256"].append(hashlib.sha256(data).hexdigest())
        img, wh = gray_square(data, Path(src), size)
        entry["source_size"] = list(wh)
        rel = _out_name(frame_id, folder)
        entry["sha256"].append(write_image(Path(dest) / rel, img))
        entry["files"].append(rel)
    return entry


def _out_name(frame_id: str, folder: str) -> str:
    s, seq, frame = frame_id.split("/")
    return f"{s}/{seq}/{folder}/{frame}.png"


def build_kaist_pairs(
    frames: Sources,
    out: Path,
    params: KaistParams,
    *,
    source: dict,
    skip_bad: bool = False,
    workers: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Sample, check, convert and write the pairs + manifest to `out`, atomically."""
    chosen = sample_frames(frames, params)
    good, report = checked(Sources(chosen, frames.problems, frames.root), skip_bad, workers)
    if not good:
        raise DataError(f"{frames.root}: every sampled KAIST frame is bad:\n{report}")
    root = frames.root or Path(good[0].paths[0]).parents[3]
    with atomic_directory(out) as tmp:
        jobs = [(f.id, [str(p) for p in f.paths], str(tmp), params.size) for f in good]
        entries = map_ordered(_convert, jobs, workers, progress)
        for f, e in zip(good, entries):
            e["group"] = f.group
            e["source_files"] = [relative(p, root) for p in f.paths]
        manifest = {
            "format": FORMAT,
            "stage": "kaist_pairs",
            "params": asdict(params),
            "source": source,
            "layout": "kaist",
            "count": len(entries),
            "pairs": entries,
            "skipped": write_bad_inputs(tmp, report, f"KAIST pairs from {root}"),
        }
        write_manifest(tmp, manifest)
    return manifest
