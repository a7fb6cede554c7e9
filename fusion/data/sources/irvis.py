"""Infrared-visible layouts: TNO, RoadScene, MSRS, KAIST."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from fusion.data.sources.listing import find_folder, finish, folder_pairs, match_stems, source_root
from fusion.data.sources.options import SETS, SPLIT
from fusion.data.sources.records import Problem, SourcePair, Sources
from fusion.data.sources.registry import layout
from fusion.errors import DataError


def _irvis(root: Path, ir: Sequence[str], vi: Sequence[str], skip_bad: bool) -> Sources:
    dirs = [find_folder(root, ir, "infrared"), find_folder(root, vi, "visible")]
    return folder_pairs(root, dirs, "ir-vis", ["ir", "vis"], skip_bad)


@layout("tno", task="ir-vis")
def load_tno(root: str | Path, *, skip_bad: bool = False) -> Sources:
    return _irvis(source_root(root), ["ir"], ["vi"], skip_bad)


@layout("roadscene", task="ir-vis")
def load_roadscene(root: str | Path, *, skip_bad: bool = False) -> Sources:
    # crop_HR_visible is deliberately not a candidate: it is not pixel-aligned with the IR.
    return _irvis(source_root(root), ["cropinfrared", "ir"], ["crop_LR_visible", "vi"], skip_bad)


@layout("msrs", task="ir-vis", options={"split": SPLIT})
def load_msrs(root: str | Path, *, split: str | None = None, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    if split is not None:
        root = find_folder(root, [split], f"split {split!r}")
    return _irvis(root, ["ir"], ["vi"], skip_bad)


_SET = re.compile(r"^set\d{2}$")
_SEQ = re.compile(r"^V\d{3}$")


@layout("kaist", task="ir-vis", options={"sets": SETS})
def load_kaist(root: str | Path, *, sets: Sequence[str | int] | None = None, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    has_sets = any(_SET.match(p.name) for p in root.iterdir())
    base = root / "images" if (root / "images").is_dir() and not has_sets else root
    available = sorted(p.name for p in base.iterdir() if p.is_dir() and _SET.match(p.name))
    if not available:
        raise DataError(f"{base}: no KAIST set folders (looked for setNN/VNNN/{{lwir,visible}}/)")
    if sets is None:
        chosen = available
    else:
        chosen = [f"set{s:02d}" if isinstance(s, int) else str(s) for s in sets]
        absent = [s for s in chosen if s not in available]
        if absent:
            raise DataError(
                f"{base}: requested set(s) {', '.join(absent)} not found; available: {', '.join(available)}"
            )
    problems: list[Problem] = []
    items = []
    for s in chosen:
        seqs = sorted(p for p in (base / s).iterdir() if p.is_dir() and _SEQ.match(p.name))
        if not seqs:
            problems.append(Problem(base / s, "no VNNN sequence folders"))
        for seq in seqs:
            dirs = [seq / "lwir", seq / "visible"]
            absent_dirs = [d for d in dirs if not d.is_dir()]
            if absent_dirs:
                problems.append(Problem(seq, f"missing {', '.join(d.name + '/' for d in absent_dirs)}"))
                continue
            group = f"{s}/{seq.name}"
            for stem, paths in match_stems(dirs, problems):
                items.append(SourcePair(f"{group}/{stem}", "ir-vis", tuple(paths), ("ir", "vis"), group))
    return finish(root, items, problems, skip_bad, "KAIST frames")
