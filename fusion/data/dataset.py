"""Torch datasets over prepared folders. Augmentation randomness comes from an explicit
generator so that an epoch is a pure function of (seed, epoch): training resumes exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from fusion.errors import DataError
from fusion.io import read_image


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 H x W x C (or H x W) -> float C x H x W in [0, 1]."""
    if img.ndim == 2:
        img = img[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def to_image(t: torch.Tensor) -> np.ndarray:
    """float C x H x W in [0, 1] -> uint8 H x W x C (H x W for one channel)."""
    arr = (t.detach().float().clamp(0, 1) * 255.0).round().byte().cpu().numpy().transpose(1, 2, 0)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; prepare the data first (`fusion data prepare`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


class PairSet(Protocol):
    """What training reads pairs from: a prepared folder, a source's split or a patch set."""

    root: Any  # the image cache's key: unique per dataset and split

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict: ...

    def load(self, index: int) -> dict[str, np.ndarray]: ...


class PairedFolder(Dataset):
    """`root/split/{near,far,gt}/<id>.png` -> (near, far, gt) tensors, listed in the manifest."""

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        self.ids = [p["id"] for p in manifest["pairs"] if p["split"] == split]
        if not self.ids:
            raise DataError(f"{self.root}: no pairs in split {split!r}")
        self.split = split

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict[str, np.ndarray]:
        pid = self.ids[index]
        images = {k: read_image(self.root / self.split / k / f"{pid}.png") for k in ("near", "far", "gt")}
        shapes = {k: v.shape for k, v in images.items()}
        if len(set(shapes.values())) != 1:
            raise DataError(f"{self.root / self.split}: pair {pid} has mismatched sizes {shapes}")
        return images

    def __getitem__(self, index: int) -> dict:
        images = self.load(index)
        return {"id": self.ids[index], **{k: to_tensor(v) for k, v in images.items()}}


class _ImageCache:
    """Decoded images by (dataset, index), least recently used dropped past a byte budget.

    Decoding dominated the step time on 2 CPU cores for the small synthetic sets, so they
    stay in memory; a large source (KAIST has ~95k frame pairs) must not: it would fill RAM.
    """

    def __init__(self, budget_bytes: int):
        from collections import OrderedDict

        self.budget, self.used = budget_bytes, 0
        self._items: OrderedDict = OrderedDict()

    def get(self, key, load):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        size = sum(v.nbytes for v in value.values())
        if size <= self.budget:
            self._items[key] = value
            self.used += size
            while self.used > self.budget:
                _, old = self._items.popitem(last=False)
                self.used -= sum(v.nbytes for v in old.values())
        return value


IMAGE_CACHE = _ImageCache(int(os.environ.get("FUSIONFLOW_IMAGE_CACHE_MB", "2048")) << 20)


class RandomCropPairs(Dataset):
    """Training view: `steps * batch` samples per epoch, each a random crop (+ flip) of a random pair.

    Decoded images are cached in memory up to FUSIONFLOW_IMAGE_CACHE_MB (default 2048).
    """

    def __init__(self, base: PairSet, crop: int, hflip: bool, seed: int, epoch: int, length: int):
        self.base, self.crop, self.hflip, self.length = base, crop, hflip, length
        self.rng = np.random.default_rng([seed, epoch])
        self._plan = [self._draw() for _ in range(length)]  # drawn up front: order-independent

    def _images(self, index: int) -> dict[str, np.ndarray]:
        return IMAGE_CACHE.get((str(self.base.root), index), lambda: self.base.load(index))

    def _draw(self) -> tuple[int, float, float, bool]:
        return (
            int(self.rng.integers(len(self.base))),
            float(self.rng.random()),
            float(self.rng.random()),
            bool(self.hflip and self.rng.random() < 0.5),
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        index, fy, fx, flip = self._plan[i]
        images = {k: _pad_to(v, self.crop) for k, v in self._images(index).items()}
        h, w = next(iter(images.values())).shape[:2]
        c = self.crop
        y, x = int(fy * (h - c + 1)), int(fx * (w - c + 1))
        out = {}
        for k, img in images.items():
            patch = img[y : y + c, x : x + c]
            out[k] = to_tensor(patch[:, ::-1] if flip else patch)
        return out


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad so both sides are >= size: every sample of a batch has the crop's shape."""
    ph, pw = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if not (ph or pw):
        return img
    pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, mode="symmetric")
