"""Multi-exposure layouts: scene folders of 2..N exposures, and U2Fusion's ue/ + oe/ pairs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fusion.data.sources.listing import finish, folder_pairs, natural_key, source_root
from fusion.data.sources.options import ORDER
from fusion.data.sources.records import Problem, SourcePair, Sources
from fusion.data.sources.registry import layout
from fusion.errors import ConfigError, DataError
from fusion.io import list_images


def _exposure_names(n: int) -> tuple[str, ...]:
    return ("under", "over") if n == 2 else ("under", *(f"mid{i}" for i in range(1, n - 1)), "over")


def _brightness(path: Path) -> float | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_4) if data.size else None
    return None if img is None else float(img.mean())


@layout("mef-scenes", task="multi-exposure", options={"order": ORDER})
def load_mef_scenes(root: str | Path, *, order: str = "brightness", skip_bad: bool = False) -> Sources:
    """Folder of scenes, each a folder of exposures. Names like chairs1..5 do not say which end is
    dark (IFCNN's igloo1 is the brightest, chairs1 the darkest), hence brightness order by default."""
    if order not in ("brightness", "name"):
        raise ConfigError(f"order: {order!r} is not one of brightness, name")
    root = source_root(root)
    problems: list[Problem] = []
    items = []
    scenes = sorted(p for p in root.iterdir() if p.is_dir())
    if not scenes:
        raise DataError(f"{root}: no scene folders (expected <scene>/<exposure images>)")
    for scene in scenes:
        files = sorted(list_images(scene), key=lambda p: natural_key(p.name))
        if len(files) < 2:
            problems.append(Problem(scene, f"needs >= 2 exposures, found {len(files)}"))
            continue
        if order == "brightness":
            means = {p: _brightness(p) for p in files}
            unreadable = [p for p, m in means.items() if m is None]
            if unreadable:
                problems += [Problem(p, "cannot decode image (corrupt, truncated or not an image)") for p in unreadable]
                continue
            files = sorted(files, key=lambda p: (means[p], natural_key(p.name)))
        items.append(SourcePair(scene.name, "multi-exposure", tuple(files), _exposure_names(len(files)), scene.name))
    return finish(root, items, problems, skip_bad, "exposure sequences")


@layout("u2fusion-mef", task="multi-exposure")
def load_u2fusion_mef(root: str | Path, *, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    problems: list[Problem] = []
    if (root / "ue").is_dir() or (root / "oe").is_dir():
        datasets = [(root, "")]
    else:
        datasets = [(d, d.name + "/") for d in sorted(root.iterdir()) if d.is_dir()]
    items = []
    for d, prefix in datasets:
        have = [n for n in ("ue", "oe") if (d / n).is_dir()]
        if len(have) == 1:
            problems.append(Problem(d, f"has {have[0]}/ but no {'oe' if have[0] == 'ue' else 'ue'}/"))
        if len(have) != 2:
            continue
        items += folder_pairs(
            root,
            [d / "ue", d / "oe"],
            "multi-exposure",
            ["under", "over"],
            skip_bad,
            prefix=prefix,
            problems=problems,
            finish_listing=False,
        )
    if not items and not problems:
        raise DataError(f"{root}: no ue/ + oe/ folders (looked in {root} and its dataset*/ subfolders)")
    return finish(root, items, problems, skip_bad, "under/over exposure pairs")
