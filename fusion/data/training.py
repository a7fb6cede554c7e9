"""What a training run reads: the prepared (DVC) dataset, or source pairs in a published layout.

Both give the trainer the same shape of data: datasets whose `load(i)` returns named uint8
images of one size, plus `Roles` saying which names are the sources (in the model's input
order) and which, if any, is the ground truth. Supervised models (UFA-Fuse) need a ground
truth; the unsupervised ones (CADNIF, CrossFuse) train on the sources alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from fusion.data.dataset import PairedFolder, PairSet, to_tensor
from fusion.errors import ConfigError, DataError
from fusion.io import read_image


@dataclass(frozen=True)
class Roles:
    sources: tuple[str, ...]
    gt: str | None
    labels: tuple[str, ...]  # human names of the sources, for figures and tables


PREPARED_ROLES = Roles(("near", "far"), "gt", ("near (synthetic)", "far (synthetic)"))


class SourcePairs(Dataset):
    """Source pairs (fusion.data.sources records) as `{"s0": img, "s1": img}` by index.

    Sequences of more than two exposures train on their darkest and brightest frames: the
    models are trained on pairs, and those two carry the most complementary information.
    """

    def __init__(self, pairs: list, key: str):
        if not pairs:
            raise DataError(f"{key}: no source pairs")
        self.pairs = list(pairs)
        self.ids = [p.id for p in self.pairs]
        self.root = key  # cache key of RandomCropPairs: unique per dataset and split

    def __len__(self) -> int:
        return len(self.pairs)

    def files(self, index: int) -> list[Path]:
        paths = [Path(p) for p in self.pairs[index].paths]
        return paths if len(paths) <= 2 else [paths[0], paths[-1]]

    def load(self, index: int) -> dict[str, np.ndarray]:
        images = {f"s{k}": read_image(path) for k, path in enumerate(self.files(index))}
        shapes = {str(p): im.shape[:2] for p, im in zip(self.files(index), images.values())}
        if len(set(shapes.values())) != 1:
            raise DataError(f"pair {self.ids[index]}: sources differ in size {shapes}")
        return images

    def __getitem__(self, index: int) -> dict:
        return {"id": self.ids[index], **{k: to_tensor(v) for k, v in self.load(index).items()}}


def source_roles(pairs: list) -> Roles:
    mods = tuple(getattr(pairs[0], "modalities", None) or ("source 1", "source 2"))
    labels = (mods[0], mods[-1]) if len(mods) > 2 else mods
    return Roles(("s0", "s1"), None, tuple(labels))


def training_data(cfg, data_root: Path | None) -> tuple[PairSet, PairSet, Roles]:
    """(train, validation/test, roles) for `cfg.train`: train.source if set, else the prepared set."""
    spec = cfg.train.source
    if spec is None:
        if cfg.train.patches:
            raise ConfigError("train.patches needs train.source: its held-out split validates and evaluates the run")
        if data_root is None:
            raise ConfigError("no training data: prepare the dataset first, or set train.source")
        return PairedFolder(data_root, "train"), PairedFolder(data_root, "test"), PREPARED_ROLES
    train, test = load_source_split(spec, cfg.seed)
    val = SourcePairs(test, f"{spec.layout}:{spec.path}:test")
    if cfg.train.patches:
        return patch_set(cfg.train.patches, source_provenance(spec, cfg.seed)), val, source_roles(test)
    return SourcePairs(train, f"{spec.layout}:{spec.path}:train"), val, source_roles(train)


def source_provenance(spec, seed: int) -> dict:
    """What a patch folder must have been cut from to train beside this source's test split.

    A registry source is named rather than located: the `sources.<name>` entry (a DVC
    parameter of the stage) pins its path, and the record stays the same wherever the
    workspace lives."""
    where = {"source": spec.name} if spec.name else {"path": spec.path}
    return {
        "layout": spec.layout,
        **where,
        "split": "train",
        "test_fraction": spec.test_fraction,
        "seed": seed,
        "options": dict(spec.options),
    }


def patch_set(path: str, expected: dict):
    """The patch folder, refused when it was cut from another source or split: its windows
    could then come from the very pairs that validate the run."""
    from fusion.data.patches import PatchShards

    shards = PatchShards(path)
    got = shards.manifest.get("provenance", {})
    if got != expected:
        raise ConfigError(
            f"train.patches={path}: cut from {got or 'an unrecorded source'}, but train.source is "
            f"{expected}; rebuild it with `fusion data patches` for this source"
        )
    return shards


def load_pairs(spec, skip_bad: bool = False):
    """The records of a SourceSpec (errors name sources.<name> for a registry source)."""
    from fusion.data import sources

    entry = {"layout": spec.layout, "path": spec.path, **spec.options, **({"skip_bad": True} if skip_bad else {})}
    return sources.load_source(spec.name, entry) if spec.name else sources.load_source(entry)


def load_source_split(spec, seed: int) -> tuple[list, list]:
    """Pairs of `spec` split train/test by group (scene, case, sequence): no group in both."""
    from fusion.data import sources

    return sources.split_by_group(load_pairs(spec), spec.test_fraction, seed)
