"""SYNTHETIC multi-focus pairs with ground truth, the UFA-Fuse way (paper Eq. 11).

    I_b   = mean_filter(I_s, k),  k drawn from one of the intervals [2,3], [4,5], [5,7], [8,10]
    I_f   = threshold(mask)                      (binary focus map)
    near  = I_s * I_f + I_b * (1 - I_f)
    far   = I_b * I_f + I_s * (1 - I_f)
    gt    = I_s

Inputs: a folder `raw/images/` with optional `raw/masks/<stem>.png|.npz` (the embedded
scene's disparity map), or DUTS image + saliency-mask records (`build_records`). Without a
mask, spectral-residual saliency of the image itself (Hou & Zhang 2007) stands in, so any
folder of photographs works. A mask with nothing on one side (all zero) is bad input.
Train and test splits hold different source photographs: no scene leaks into the test.
Images are synthesised on every core, each from its own seeded generator, so the output
does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from fusion.data.manifest import write_bad_inputs, write_manifest
from fusion.data.parallel import Progress, map_ordered
from fusion.errors import ConfigError, DataError
from fusion.io import atomic_directory, read_image, write_image


@dataclass(frozen=True)
class SynthParams:
    max_side: int = 256
    pairs_per_image: int = 2
    blur_intervals: tuple[tuple[int, int], ...] = ((2, 3), (4, 5), (5, 7), (8, 10))
    mask_threshold: float = 0.5
    test_images: int = 4
    seed: int = 0
    blur_weights: tuple[float, ...] | None = None  # relative frequency per interval; None = uniform


class SynthInput(NamedTuple):
    stem: str
    image: Path
    mask: Path | None  # None: spectral-residual saliency of the image


def resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def spectral_residual_saliency(rgb: np.ndarray) -> np.ndarray:
    """Saliency in [0, 1] at the image's size (Hou & Zhang, CVPR 2007)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    small = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + 1e-8)
    residual = log_amp - cv2.blur(log_amp, (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = cv2.GaussianBlur(sal, (0, 0), 2.5)
    sal = cv2.resize(sal, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _normalise(sal)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        raise DataError("mask has no finite values")
    lo, hi = x[finite].min(), x[finite].max()
    x = np.where(finite, x, hi)  # the disparity map marks unmatched (far) pixels with inf
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A saliency / disparity mask in [0, 1] resized to `shape` (H, W)."""
    if path.suffix == ".npz":
        try:
            with np.load(path) as z:
                arr = z[z.files[0]]
        except Exception as exc:  # any decode failure is a data error
            raise DataError(f"{path}: cannot read mask array ({exc})") from exc
        # disparity: large = close to the camera; inf = unmatched, treated as far
        arr = np.where(np.isfinite(arr), arr, np.nan)
        arr = np.nan_to_num(arr, nan=np.nanmin(arr))
    else:
        arr = read_image(path, gray=True)
    arr = cv2.resize(_normalise(arr).astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return arr.astype(np.float64)


def focus_map(mask: np.ndarray, threshold: float) -> np.ndarray:
    """Binary focus map; falls back to Otsu when the fixed threshold leaves < 5% on one side."""
    binary = mask >= threshold
    frac = binary.mean()
    if frac < 0.05 or frac > 0.95:
        u8 = (mask * 255).round().astype(np.uint8)
        t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        binary = u8 > t
    return binary.astype(np.float64)


def synthesize_pair(sharp: np.ndarray, focus: np.ndarray, kernel: int) -> dict[str, np.ndarray]:
    """Eq. 11 on one image. `sharp` uint8 H x W x 3, `focus` {0,1} H x W."""
    blurred = cv2.blur(sharp, (kernel, kernel), borderType=cv2.BORDER_REFLECT).astype(np.float64)
    s = sharp.astype(np.float64)
    m = focus[:, :, None]
    near = s * m + blurred * (1.0 - m)
    far = blurred * m + s * (1.0 - m)
    as_u8 = lambda x: np.clip(x.round(), 0, 255).astype(np.uint8)  # noqa: E731
    return {"near": as_u8(near), "far": as_u8(far), "gt": sharp, "focus": (focus * 255).astype(np.uint8)}


def draw_kernel(
    rng: np.random.Generator, intervals: tuple[tuple[int, int], ...], weights: tuple[float, ...] | None = None
) -> tuple[int, tuple[int, int]]:
    p = None if weights is None else np.asarray(weights, float) / float(sum(weights))
    lo, hi = intervals[int(rng.choice(len(intervals), p=p)) if p is not None else int(rng.integers(len(intervals)))]
    return int(rng.integers(lo, hi + 1)), (lo, hi)


def split_sources(names: list[str], test_images: int, seed: int) -> dict[str, list[str]]:
    if test_images >= len(names):
        raise ConfigError(
            f"data.synth_multifocus.test_images={test_images} leaves no training image "
            f"({len(names)} source photographs)"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    test = sorted(names[i] for i in order[:test_images])
    return {"train": sorted(set(names) - set(test)), "test": test}


def build(
    raw: str | Path,
    out: str | Path,
    params: SynthParams,
    source_label: str | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> dict:
    """Create `out/{train,test}/{near,far,gt,focus}/<id>.png` + `out/manifest.json`, atomically,
    from a folder of photographs (`raw/images`, optional `raw/masks`).

    `source_label` names the raw folder in the manifest; it defaults to the folder's name so
    that the output (and its DVC hash) does not depend on where the workspace lives.
    """
    from fusion.data.sources import load_photos

    raw = Path(raw)
    inputs = [SynthInput(r.id, r.image, r.mask) for r in load_photos(raw)]
    return build_records(inputs, out, params, source_label or raw.name, workers=workers, progress=progress)


def build_records(
    inputs: Sequence[SynthInput],
    out: str | Path,
    params: SynthParams,
    source: str | dict,
    skipped: Sequence = (),
    workers: int = 1,
    progress: Progress | None = None,
) -> dict:
    """The synthesis of `inputs` (e.g. DUTS image + mask records) into `out`, atomically.
    `skipped`: bad inputs left out under skip_bad, reported beside the data."""
    out = Path(out)
    by_stem = {i.stem: i for i in inputs}
    if len(by_stem) != len(inputs):
        raise DataError(f"{out}: two source photographs share a file stem; their pairs would overwrite each other")
    splits = split_sources(sorted(by_stem), params.test_images, params.seed)
    with atomic_directory(out) as tmp:
        jobs = [(by_stem[stem], tmp / split, split, params) for split, stems in splits.items() for stem in stems]
        entries = [e for per_image in map_ordered(_synthesize_job, jobs, workers, progress) for e in per_image]
        manifest = {
            "dataset": "multifocus_synthetic",
            "synthetic": True,
            "method": "UFA-Fuse Eq. 11: mean-filter blur, binary focus map, near/far pair, sharp image as ground truth",
            "params": {k: (list(map(list, v)) if k == "blur_intervals" else v) for k, v in params.__dict__.items()},
            "source": source,
            "counts": {s: sum(e["split"] == s for e in entries) for s in splits},
            "pairs": entries,
        }
        bad = write_bad_inputs(tmp, skipped, "synthetic multi-focus inputs")
        if bad:
            manifest["skipped"] = bad
        write_manifest(tmp, manifest)
    return manifest


def _synthesize_job(job) -> list[dict]:
    return _synthesize_image(*job)


def _synthesize_image(item: SynthInput, dest: Path, split: str, params: SynthParams) -> list[dict]:
    sharp = resize_max_side(read_image(item.image), params.max_side)
    mask = load_mask(item.mask, sharp.shape[:2]) if item.mask else spectral_residual_saliency(sharp)
    focus = focus_map(mask, params.mask_threshold)
    if focus.min() == focus.max():
        what = f"mask {item.mask}" if item.mask else f"saliency of {item.image}"
        raise DataError(
            f"{what}: {'all zero' if focus.max() == 0 else 'all one'} after thresholding, "
            f"so the pair would have no in-focus {'region' if focus.max() == 0 else 'background'}"
        )
    out = []
    for j in range(params.pairs_per_image):
        # One generator per (seed, image, pair): adding an image never changes the others.
        rng = np.random.default_rng([params.seed, int(hashlib.sha256(item.stem.encode()).hexdigest()[:15], 16), j])
        kernel, interval = draw_kernel(rng, params.blur_intervals, params.blur_weights)
        pid = f"{item.stem}_{j}"
        hashes = {
            kind: write_image(dest / kind / f"{pid}.png", img)
            for kind, img in synthesize_pair(sharp, focus, kernel).items()
        }
        out.append(
            {
                "id": pid,
                "split": split,
                "source_image": item.image.name,
                "mask": item.mask.name if item.mask else "spectral-residual saliency",
                "blur_kernel": kernel,
                "blur_interval": list(interval),
                "focus_fraction": round(float(focus.mean()), 6),
                "size": list(sharp.shape[:2]),
                "sha256": hashes,
                "synthetic": True,
            }
        )
    return out
