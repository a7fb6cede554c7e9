"""Test sets: pairs of same-size sources (and a ground truth where there is one), loaded lazily.

A test set is either a prepared split (near/far/gt folders with a manifest), source-pair
records of a `sources` layout, or two folders of sources matched by file name (plus an
optional ground truth).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import DataError
from fusion.io import list_images, read_image, sha256_file


@dataclass
class TestSet:
    """Pairs of same-size sources (uint8 RGB or gray), loaded lazily; `gt` where it exists."""

    name: str
    ids: list[str]
    source_labels: list[str]
    _files: dict[str, dict[str, Path]]
    has_gt: bool

    __test__ = False  # not a pytest class

    def __len__(self) -> int:
        return len(self.ids)

    def version(self) -> str:
        """sha256 over every pair's id and file bytes: equal exactly when two test sets hold
        the same images (what a champion comparison needs), wherever they are stored."""
        h = hashlib.sha256()
        for pid in self.ids:
            h.update(pid.encode() + b"\0")
            for label in (*self.source_labels, *(["gt"] if self.has_gt else [])):
                h.update(sha256_file(self._files[pid][label]).encode())
        return h.hexdigest()

    def load(self, index: int) -> tuple[list[np.ndarray], np.ndarray | None]:
        pid = self.ids[index]
        files = self._files[pid]
        sources = [read_image(files[label]) for label in self.source_labels]
        gt = read_image(files["gt"]) if self.has_gt else None
        shapes = {
            str(files[k]): im.shape[:2] for k, im in zip([*self.source_labels, "gt"], [*sources, gt]) if im is not None
        }
        if len(set(shapes.values())) != 1:
            raise DataError(f"pair {pid}: images differ in size {shapes}")
        return sources, gt


def folder_test_set(source_a: Path, source_b: Path, gt: Path | None = None, name: str | None = None) -> TestSet:
    """Sources matched by file name (stem); every pair needs both sources (and gt if given)."""
    folders = {"source-a": Path(source_a), "source-b": Path(source_b)}
    if gt is not None:
        folders["gt"] = Path(gt)
    for label, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"--{label} {folder}: folder not found")
    by_stem = {label: {p.stem: p for p in list_images(folder)} for label, folder in folders.items()}
    ids = sorted(by_stem["source-a"])
    if not ids:
        raise DataError(f"--source-a {folders['source-a']}: no images found")
    for label in folders:
        missing = sorted(set(ids) - set(by_stem[label]))
        extra = sorted(set(by_stem[label]) - set(ids))
        if missing:
            raise DataError(f"--{label} {folders[label]}: no partner for {short_list(missing)}")
        if extra and label != "gt":
            raise DataError(f"--source-a {folders['source-a']}: no partner for {short_list(extra)} of --{label}")
    files = {i: {label: by_stem[label][i] for label in folders} for i in ids}
    return TestSet(name or folders["source-a"].parent.name, ids, ["source-a", "source-b"], files, gt is not None)


def prepared_test_set(root: Path, split: str = "test") -> TestSet:
    """A prepared split: `root/split/{near,far,gt}/<id>.png` listed in root/manifest.json."""
    from fusion.data.dataset import PairedFolder

    data = PairedFolder(root, split)
    files = {i: {k: data.root / split / k / f"{i}.png" for k in ("near", "far", "gt")} for i in data.ids}
    return TestSet(f"{Path(root).name}/{split}", list(data.ids), ["near", "far"], files, True)


def pairs_test_set(pairs: list, name: str) -> TestSet:
    """Source-pair records (fusion.data.sources) as a test set without ground truth; of a
    longer exposure sequence the darkest and brightest frames, as in training."""
    if not pairs:
        raise DataError(f"{name}: no test pairs")
    mods = list(getattr(pairs[0], "modalities", None) or ("source-a", "source-b"))
    labels = [mods[0], mods[-1]] if mods[0] != mods[-1] else ["source-a", "source-b"]
    files = {p.id: dict(zip(labels, [Path(p.paths[0]), Path(p.paths[-1])])) for p in pairs}
    return TestSet(name, [p.id for p in pairs], labels, files, False)


def short_list(items: list[str], limit: int = 10) -> str:
    """The first `limit` names, and how many more: an error names the files without a wall of text."""
    return str(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
