"""Multi-focus layouts: Lytro (<scene>-A/-B[/-C] files) and MFFW / MFI-WHU (source_N/ folders)."""

from __future__ import annotations

import re
from pathlib import Path

from fusion.data.sources.listing import find_folder, finish, folder_pairs, source_root
from fusion.data.sources.options import TRIPLES
from fusion.data.sources.records import Problem, SourcePair, Sources
from fusion.data.sources.registry import layout
from fusion.errors import DataError
from fusion.io import list_images

_FOCUS = re.compile(r"^(?P<scene>.+)-(?P<letter>[A-Za-z])$")


def _focus_names(n: int) -> tuple[str, ...]:
    if n == 2:
        return ("near", "far")
    return ("near", *(f"mid{i}" if n > 3 else "mid" for i in range(1, n - 1)), "far")


def _lytro_dir(folder: Path, prefix: str, problems: list[Problem]) -> list[SourcePair]:
    scenes: dict[str, dict[str, Path]] = {}
    for p in list_images(folder):
        m = _FOCUS.match(p.stem)
        if not m:
            problems.append(Problem(p, "name does not follow <scene>-A / <scene>-B"))
            continue
        letter = m["letter"].upper()
        if letter in scenes.setdefault(m["scene"], {}):
            problems.append(Problem(p, f"second file for {m['scene']}-{letter}"))
            continue
        scenes[m["scene"]][letter] = p
    if not scenes:
        problems.append(Problem(folder, "folder has no <scene>-A/-B images"))
    items = []
    for scene, by_letter in sorted(scenes.items()):
        letters = sorted(by_letter)
        expected = [chr(ord("A") + i) for i in range(max(2, len(letters)))]
        if letters != expected:
            lacking = ", ".join(f"{scene}-{c}.*" for c in expected if c not in by_letter)
            for c in letters:
                problems.append(Problem(by_letter[c], f"no partner: expected {lacking} in {folder}/"))
            continue
        pid = prefix + scene
        paths = tuple(by_letter[c] for c in letters)
        items.append(SourcePair(pid, "multi-focus", paths, _focus_names(len(paths)), pid))
    return items


@layout("lytro", task="multi-focus", options={"triples": TRIPLES})
def load_lytro(root: str | Path, *, triples: bool = False, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    problems: list[Problem] = []
    items = _lytro_dir(root, "", problems)
    if triples:
        items += _lytro_dir(find_folder(root, ["triples"], "triples"), "triples/", problems)
    return finish(root, items, problems, skip_bad, "multi-focus pairs")


@layout("mffw", task="multi-focus")
def load_mffw(root: str | Path, *, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    found = sorted(
        (p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"source_\d+", p.name)),
        key=lambda p: int(p.name.split("_")[1]),
    )
    if len(found) < 2:
        raise DataError(
            f"{root}: needs source_1/ and source_2/ (optionally source_3/..., full_clear/); "
            f"found {', '.join(p.name + '/' for p in found) or 'none'}"
        )
    gt_dir = root / "full_clear" if (root / "full_clear").is_dir() else None
    return folder_pairs(root, found, "multi-focus", [p.name for p in found], skip_bad, gt_dir)
