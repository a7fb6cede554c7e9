"""What an image file holds, sniffed and decoded: the facts check_pairs compares, or the
one-line problem with the file."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

# Mean |R-G| + |G-B| above this is colour; JPEG-coded gray stays well under 1.
_GRAY_TOLERANCE = 2.0

# First bytes of the formats a suffix promises: a file that lacks them is another kind of
# file (a text file, a link to one), not a damaged image, and is reported as such.
_SIGNATURES = {".png": (b"\x89PNG", "PNG"), ".jpg": (b"\xff\xd8", "JPEG"), ".jpeg": (b"\xff\xd8", "JPEG")}


class Decoded(NamedTuple):
    shape: tuple[int, int]
    channels: int
    colourful: bool
    all_zero: bool


def decode_image(path: Path) -> Decoded | str:
    """Decoded facts about one image, or the problem with it (naming a symlink's target)."""
    found = _decode_file(path)
    if isinstance(found, str) and path.is_symlink():
        return f"{found}; the file is a symlink to {path.resolve()}"
    return found


def _decode_file(path: Path) -> Decoded | str:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if data.size == 0:
        return "empty file"
    raw = data.tobytes()
    suffix = path.suffix.lower()
    if suffix in _SIGNATURES and not raw.startswith(_SIGNATURES[suffix][0]):
        looks = "text" if raw[:512].isascii() else "binary data"
        return f"not a {_SIGNATURES[suffix][1]} image: its content is {looks}, not {suffix} data"
    # libjpeg decodes a truncated JPEG into grey filler with only a warning: check the end markers.
    if suffix in (".jpg", ".jpeg") and raw.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return "truncated JPEG (no end-of-image marker)"
    if suffix == ".png" and b"IEND" not in raw[-16:]:
        return "truncated PNG (no IEND chunk)"
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return "cannot decode image (corrupt, truncated or not an image)"
    if img.dtype not in (np.uint8, np.uint16):
        return f"unsupported pixel type {img.dtype} (expected 8- or 16-bit)"
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        return f"unsupported channel count {channels} (expected 1, 3 or 4)"
    colourful = False
    if channels >= 3:
        c = img[:, :, :3].astype(np.int32)
        colourful = float(np.abs(c[..., 0] - c[..., 1]).mean() + np.abs(c[..., 1] - c[..., 2]).mean()) > _GRAY_TOLERANCE
    return Decoded(img.shape[:2], channels, colourful, not img.any())
