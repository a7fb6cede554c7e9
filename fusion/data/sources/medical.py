"""Medical layout: the Harvard whole-brain atlas pairs, MRI beside CT, PET or SPECT."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from fusion.data.sources.listing import find_folder, finish, match_stems, source_root
from fusion.data.sources.options import SUBSETS
from fusion.data.sources.records import Problem, SourcePair, Sources
from fusion.data.sources.registry import layout
from fusion.errors import DataError

_HARVARD = re.compile(r"^(?P<other>[A-Z]+)-MRI$")
_CASE_SLICE = re.compile(r"^(?P<case>\d+)(?P<slice>\d{3})$")


@layout("harvard", task="medical", options={"subsets": SUBSETS})
def load_harvard(root: str | Path, *, subsets: Sequence[str] | None = None, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    if _HARVARD.match(root.name):
        available = {root.name: root}
    else:
        available = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _HARVARD.match(p.name)}
    if not available:
        raise DataError(f"{root}: no <X>-MRI folders (looked for CT-MRI/, PET-MRI/, SPECT-MRI/)")
    chosen = sorted(available) if subsets is None else list(subsets)
    absent = [s for s in chosen if s not in available]
    if absent:
        raise DataError(
            f"{root}: requested subset(s) {', '.join(absent)} not found; available: {', '.join(sorted(available))}"
        )
    problems: list[Problem] = []
    items = []
    for name in chosen:
        other = name.removesuffix("-MRI")  # every name in `available` matches _HARVARD
        folder = available[name]
        dirs = [find_folder(folder, ["MRI"], "MRI"), find_folder(folder, [other], other)]
        for stem, paths in match_stems(dirs, problems):
            m = _CASE_SLICE.match(stem)
            if not m:
                problems += [Problem(p, "name is not <case id><3-digit slice>.png") for p in paths]
                continue
            items.append(SourcePair(f"{name}/{stem}", "medical", tuple(paths), ("mri", other.lower()), m["case"]))
    return finish(root, items, problems, skip_bad, "MRI pairs")
