"""The embedded default dataset: real photographs shipped inside scikit-image's wheel.

Copied byte for byte (no re-encoding), so the raw data version (`data.dvc`) is the same
on every machine with the locked scikit-image. The disparity map of the Middlebury
motorcycle scene is kept as a real depth-derived focus mask for that photograph.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fusion.io import atomic_directory, sha256_file, write_json_atomic

# Natural photographs only: the synthetic test patterns (chessboard, logo, phantom...) make
# meaningless multi-focus pairs.
PHOTOGRAPHS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
# photograph stem -> mask file shipped beside it
MASKS = {"motorcycle_left": "motorcycle_disp.npz"}


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def export_embedded(out: str | Path) -> Path:
    """Write `out/images/*` and `out/masks/*` plus a manifest; atomic."""
    import skimage

    src = skimage_data_dir()
    out = Path(out)
    with atomic_directory(out) as tmp:
        files = []
        for sub, names in (("images", PHOTOGRAPHS), ("masks", [f"{k}.npz" for k in MASKS])):
            (tmp / sub).mkdir()
            for name in names:
                origin = src / (MASKS[Path(name).stem] if sub == "masks" else name)
                dest = tmp / sub / name
                shutil.copyfile(origin, dest)
                files.append(
                    {
                        "file": f"{sub}/{name}",
                        "sha256": sha256_file(dest),
                        # skimage's __init__.pyi lists __version__ in __all__ but never declares it
                        "source": f"scikit-image {skimage.__version__}: skimage/data/{origin.name}",  # type: ignore[attr-defined]
                    }
                )
        write_json_atomic(
            tmp / "manifest.json",
            {
                "dataset": "embedded-photographs",
                "description": "real natural photographs bundled with scikit-image (see its data/README.txt for credits)",
                "files": files,
            },
        )
    return out


def is_complete(out: str | Path) -> bool:
    out = Path(out)
    return all((out / "images" / n).is_file() for n in PHOTOGRAPHS) and (out / "manifest.json").is_file()
