"""Image and file I/O with clear errors and atomic outputs.

Images are RGB (or gray) uint8 numpy arrays inside the project; OpenCV's BGR order stays
behind this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from fusion.errors import DataError, output_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path: str | Path, gray: bool = False) -> np.ndarray:
    """Read an image as uint8 RGB (H x W x 3) or gray (H x W). Alpha is dropped, 16-bit scaled."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"{path}: cannot decode image (corrupt, truncated or not an image)")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if gray and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if not gray and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def encode_png(img: np.ndarray) -> bytes:
    if img.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {img.dtype}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise DataError("PNG encoding failed")
    return buf.tobytes()


def write_image(path: str | Path, img: np.ndarray) -> str:
    """Write a PNG atomically; returns its sha256."""
    payload = encode_png(img)
    write_bytes_atomic(Path(path), payload)
    return hashlib.sha256(payload).hexdigest()


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _partial_sibling(out: Path) -> Path:
    """A new empty folder beside `out` (same file system: the final renames are atomic)."""
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise output_error(out, exc) from exc
    return tmp


@contextlib.contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; replace `out` only on success.

    A failure (bad input, Ctrl-C) leaves the previous `out` untouched and no partial copy.
    """
    out = Path(out)
    tmp = _partial_sibling(out)
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.{uuid.uuid4().hex}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_files(out: str | Path) -> Iterator[Path]:
    """Write a command's files under a temporary sibling folder, then move each into `out`.

    Unlike atomic_directory this keeps what `out` already holds (a user's folder); a
    failure part-way (a full disk, Ctrl-C) leaves `out` as it was. The moves are renames on
    one file system: they need no space, so the last step cannot fail for a full disk.
    """
    out = Path(out)
    tmp = _partial_sibling(out)
    try:
        yield tmp
        try:
            out.mkdir(exist_ok=True)
            for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
                dest = out / src.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
        except OSError as exc:
            raise output_error(out, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
