"""Listing helpers the layout readers share: find folders, match files by stem across
folders, collect problems, and finish a listing (raise, or drop under skip_bad)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from fusion.data.sources.records import Problem, Report, SourcePair, Sources
from fusion.errors import DataError
from fusion.io import IMAGE_SUFFIXES, list_images


def source_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: source folder not found")
    return root


def find_folder(root: Path, candidates: Sequence[str], role: str) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no {role} folder; looked for {', '.join(c + '/' for c in candidates)}")


def by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in list_images(folder):
        if p.stem in out:
            problems.append(Problem(p, f"same name as {out[p.stem].name}: which one is the source is ambiguous"))
            continue
        out[p.stem] = p
    if not out:
        problems.append(Problem(folder, f"folder is empty (no {'/'.join(IMAGE_SUFFIXES)} images)"))
    return out


def match_stems(folders: Sequence[Path], problems: list[Problem]) -> list[tuple[str, list[Path]]]:
    """Stems present in every folder; each file missing a partner becomes a problem."""
    maps = [by_stem(f, problems) for f in folders]
    if not all(maps):
        return []  # the empty folder is the problem; listing every orphan would bury it
    matched = []
    for stem in sorted(set().union(*maps)):
        found = [m.get(stem) for m in maps]
        present = [p for p in found if p is not None]
        if len(present) == len(found):
            matched.append((stem, present))
            continue
        missing = ", ".join(f"{f}/" for f, p in zip(folders, found) if p is None)
        for p in present:
            problems.append(Problem(p, f"no partner named {stem}.* in {missing}"))
    return matched


def finish(root: Path, items: list, problems: list[Problem], skip_bad: bool, what: str) -> Sources:
    report = Report(sorted(problems, key=lambda p: str(p.path)))
    if report and not skip_bad:
        raise report.error(f"{root}: listing {what}") from None
    if not items:
        msg = f"{root}: no {what} found"
        raise (report.error(msg) if report else DataError(msg))
    items = sorted(items, key=lambda r: r.id)
    ids = [r.id for r in items]
    assert len(set(ids)) == len(ids), f"{root}: duplicate ids"  # loaders build ids from unique stems
    return Sources(items, report, root)


def natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def folder_pairs(
    root: Path,
    dirs: Sequence[Path],
    task: str,
    modalities: Sequence[str],
    skip_bad: bool,
    gt_dir: Path | None = None,
    prefix: str = "",
    problems: list[Problem] | None = None,
    finish_listing: bool = True,
):
    """Pairs of the files with the same stem in every folder of `dirs` (and `gt_dir`)."""
    problems = [] if problems is None else problems
    gts = by_stem(gt_dir, problems) if gt_dir is not None else {}
    items = []
    for stem, paths in match_stems(dirs, problems):
        gt = None
        if gt_dir is not None:
            gt = gts.get(stem)
            if gt is None:
                if gts:  # an empty gt folder is already reported once
                    problems.append(Problem(paths[0], f"no ground truth named {stem}.* in {gt_dir}/"))
                continue
        pid = prefix + stem
        items.append(SourcePair(pid, task, tuple(paths), tuple(modalities), pid, gt))
    if not finish_listing:
        return items
    return finish(root, items, problems, skip_bad, f"{task} pairs")
