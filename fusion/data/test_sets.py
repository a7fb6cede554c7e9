"""Evaluation test sets: a source's pairs (all of them, or its held-out split), colour kept.

The files are copied byte for byte (the fusion runs on Y of YCrCb and restores the chroma
of the colour source afterwards, so the colour must survive), renamed to one folder per
modality with the same file stem in each: `out/<modality>/<id>.<ext>` (+ `out/gt/`), which
`fusion evaluate --source-a out/ir --source-b out/vis` and the `folders` layout read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fusion.data.manifest import relative, write_bad_inputs, write_manifest
from fusion.data.parallel import Progress, map_ordered
from fusion.data.sources import Sources, checked, split_by_group
from fusion.errors import DataError
from fusion.io import atomic_directory, write_bytes_atomic

FORMAT = "fusionflow-test-set/1"


@dataclass(frozen=True)
class TestSetParams:
    split: str = "all"  # all | test (the held-out split train.source trains beside)
    test_fraction: float = 0.25
    seed: int = 0


def file_id(pair_id: str) -> str:
    """A pair id as one file stem: 'set00/V000/I00001' -> 'set00_V000_I00001'."""
    return pair_id.replace("/", "_")


def choose(pairs: Sequence, params: TestSetParams) -> list:
    if params.split == "all":
        return list(pairs)
    return split_by_group(pairs, params.test_fraction, params.seed)[1]


def _copy(job) -> list[str]:
    dest, items = job
    hashes = []
    for src, rel in items:
        data = Path(src).read_bytes()
        write_bytes_atomic(Path(dest) / rel, data)
        hashes.append(hashlib.sha256(data).hexdigest())
    return hashes


def build_test_set(
    pairs: Sources,
    out: Path,
    params: TestSetParams,
    *,
    source: dict,
    skip_bad: bool = False,
    workers: int = 0,
    progress: Progress | None = None,
) -> dict:
    chosen, report = checked(Sources(choose(pairs, params), pairs.problems, pairs.root), skip_bad, workers)
    if not chosen:
        raise DataError(f"{pairs.root}: no usable pairs for a test set")
    root = pairs.root or Path(chosen[0].paths[0]).parent
    stems: dict[str, str] = {}
    for p in chosen:
        other = stems.setdefault(file_id(p.id), p.id)
        if other != p.id:
            raise DataError(
                f"{root}: pairs {other!r} and {p.id!r} would both be written as {file_id(p.id)!r}; rename one"
            )
    plans = []
    for p in chosen:
        files = list(zip(p.paths, p.modalities)) + ([(p.gt, "gt")] if p.gt else [])
        plans.append([(str(src), f"{mod}/{file_id(p.id)}{Path(src).suffix.lower()}") for src, mod in files])
    with atomic_directory(out) as tmp:
        hashes = map_ordered(_copy, [(str(tmp), plan) for plan in plans], workers, progress)
        entries = [
            {
                "id": p.id,
                "group": p.group,
                "modalities": list(p.modalities) + (["gt"] if p.gt else []),
                "files": [rel for _, rel in plan],
                "sha256": h,
                "source_files": [relative(src, root) for src, _ in plan],
            }
            for p, plan, h in zip(chosen, plans, hashes)
        ]
        modalities = sorted({m for e in entries for m in e["modalities"]})
        manifest = {
            "format": FORMAT,
            "stage": "test_set",
            "task": chosen[0].task,
            "params": params.__dict__,
            "source": source,
            "count": len(entries),
            "modalities": modalities,
            "pairs": entries,
            "skipped": write_bad_inputs(tmp, report, f"test set from {root}"),
        }
        write_manifest(tmp, manifest)
    return manifest


def load_test_set(folder: str | Path):
    """A prepared test set as an evaluation TestSet (fusion.evaluate): the first and last
    modality are the two sources (a longer exposure sequence: darkest and brightest)."""
    import json

    from fusion.data.manifest import MANIFEST
    from fusion.evaluate import TestSet

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not a prepared test set (no manifest); build it with `fusion data test-set NAME`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    files, ids = {}, []
    labels: list[str] = []  # the first pair's source modalities
    for e in manifest["pairs"]:
        by_mod = dict(zip(e["modalities"], (folder / f for f in e["files"])))
        sources = [m for m in e["modalities"] if m != "gt"]
        pair_labels = [sources[0], sources[-1]]
        labels = labels or pair_labels
        files[e["id"]] = {
            **dict(zip(labels, (by_mod[m] for m in pair_labels))),
            **({"gt": by_mod["gt"]} if "gt" in by_mod else {}),
        }
        ids.append(e["id"])
    has_gt = all("gt" in f for f in files.values())
    return TestSet(folder.name, ids, labels, files, has_gt)
