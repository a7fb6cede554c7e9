"""Synthesis inputs, not fusion pairs: DUTS image/mask pairs and the photographs folder
(the embedded default dataset), both read by the multi-focus synthesis."""

from __future__ import annotations

from pathlib import Path

from fusion.data.sources.listing import by_stem, find_folder, finish, source_root
from fusion.data.sources.options import SPLIT
from fusion.data.sources.records import MaskedImage, Problem, Sources
from fusion.data.sources.registry import layout


@layout("duts", task=None, options={"split": SPLIT})
def load_duts(root: str | Path, *, split: str = "TR", skip_bad: bool = False) -> Sources:
    root = source_root(root)
    nested = root / f"DUTS-{split}"  # the published archive unpacks to DUTS-TR/DUTS-TR-Image/
    base = nested if not (root / f"DUTS-{split}-Image").is_dir() and nested.is_dir() else root
    img_dir = find_folder(base, [f"DUTS-{split}-Image"], "image")
    mask_dir = find_folder(base, [f"DUTS-{split}-Mask"], "mask")
    problems: list[Problem] = []
    images, masks = by_stem(img_dir, problems), by_stem(mask_dir, problems)
    items = []
    if images and masks:
        for stem in sorted(set(images) | set(masks)):
            if stem not in masks:
                problems.append(Problem(images[stem], f"image has no mask {mask_dir}/{stem}.png"))
            elif stem not in images:
                problems.append(Problem(masks[stem], f"mask has no image {img_dir}/{stem}.jpg"))
            else:
                items.append(MaskedImage(stem, images[stem], masks[stem], stem))
    return finish(root, items, problems, skip_bad, "DUTS image/mask pairs")


@layout("photos", task=None)
def load_photos(root: str | Path, *, skip_bad: bool = False) -> Sources:
    root = source_root(root)
    img_dir = find_folder(root, ["images"], "image")
    problems: list[Problem] = []
    images = by_stem(img_dir, problems)
    masks: dict[str, Path] = {}
    if (root / "masks").is_dir():
        masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in (".png", ".npz")}
    for stem in sorted(set(masks) - set(images)):
        problems.append(Problem(masks[stem], f"mask has no image {img_dir}/{stem}.*"))
    items = [MaskedImage(stem, images[stem], masks.get(stem), stem) for stem in sorted(images)]
    return finish(root, items, problems, skip_bad, "photographs")
