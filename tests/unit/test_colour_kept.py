"""The main job's model keeps the colour of colour sources (it used to paint everything sepia).

Cause, measured (docs/models.md, UFA-Fuse): the paper's RGB network has twelve convolutions
and no skip, and learns the small differences between R, G and B long after the structure;
after the CPU main job's 250 steps it fused a Lytro pair in its training set's mean tint
(CbCr error 21 levels against the source; 25 when trained on the colour photographs only, so
the gray photographs were not the cause). The smoke profile therefore trains UFA-Fuse on Y
(`train.options.luma`) and the chroma comes back from the sources, as for the gray models.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fusion.config import load_config
from fusion.inference import fuse, load_model
from fusion.io import read_image
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data"


def _chroma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float64)


def _chroma_error(fused: np.ndarray, source: np.ndarray) -> float:
    """Mean |Cr - Cr'| and |Cb - Cb'| in gray levels."""
    return float(np.abs(_chroma(fused) - _chroma(source)).mean())


def _saturation(img: np.ndarray) -> float:
    return float(np.abs(_chroma(img) - 128.0).mean())


def _load(path: Path, side: int = 192) -> np.ndarray:
    img = read_image(path)
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def main_job_model(tmp_path_factory) -> object:
    """The smoke profile's model (the README's main job) after two steps."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "train",
            "--out",
            str(out),
            "-p",
            "smoke",
            "-w",
            str(REPO),
            "--set",
            "train.epochs=1",
            "--set",
            "train.steps_per_epoch=2",
            "--set",
            "train.device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    model, payload = load_model(out / "last.pt")
    assert payload["model"] == "ufa" and payload["model_options"].get("luma") is True
    return model


def test_the_main_job_trains_ufa_on_luminance_and_the_paper_profile_on_rgb():
    # (lambda_l1: the loss weight's default, filled in for every UFA-Fuse run)
    assert load_config(REPO, "smoke").train.options == {"luma": True, "lambda_l1": 0.2}
    assert load_config(REPO, "paper").train.options == {"lambda_l1": 0.2}
    # another model under the smoke profile does not inherit UFA-Fuse's option
    assert load_config(REPO, "smoke", ["train.model=cadnif", "train.variant=OD-Net"]).train.options == {
        "loss_crop_border": None
    }


def test_a_colour_multi_focus_pair_keeps_its_colour(main_job_model):
    lytro = SHARED / "mf" / "Lytro20"
    if not lytro.is_dir():
        pytest.skip(f"shared data not found at {lytro}")
    near, far = _load(lytro / "lytro-01-A.jpg"), _load(lytro / "lytro-01-B.jpg")
    fused = fuse(main_job_model, [near, far])
    assert _saturation(near) > 10  # a colourful pair: green grass, yellow shirt
    assert _chroma_error(fused, near) < 1.5


def test_a_colour_exposure_sequence_keeps_its_colour(main_job_model):
    house = SHARED / "mef" / "IFCNN_ME6" / "house"
    if not house.is_dir():
        pytest.skip(f"shared data not found at {house}")
    seq = [_load(p) for p in sorted(house.iterdir())]
    fused = fuse(main_job_model, seq)
    # The chroma of an exposure sequence mixes its frames by how far each is from neutral:
    # the fused image is at least as colourful as the sequence's median frame.
    assert _saturation(fused) >= np.median([_saturation(s) for s in seq])
    # within a few levels of the closest frame (the sepia RGB network: 6.4 at best, on this house)
    assert min(_chroma_error(fused, s) for s in seq) < 5.0


def test_mri_plus_pet_keeps_the_pet_colour(main_job_model):
    pet_mri = SHARED / "medical" / "Harvard" / "PET-MRI"
    if not pet_mri.is_dir():
        pytest.skip(f"shared data not found at {pet_mri}")
    name = sorted(p.name for p in (pet_mri / "PET").iterdir())[0]
    mri, pet = _load(pet_mri / "MRI" / name), _load(pet_mri / "PET" / name)
    fused = fuse(main_job_model, [mri, pet])
    tissue = cv2.cvtColor(pet, cv2.COLOR_RGB2YCrCb)[..., 0] > 30  # not the black background
    assert np.abs(_chroma(pet) - 128.0)[tissue].mean() > 20
    # The gray MRI has neutral chroma and no say in the colour: the PET's comes through, up to
    # what RGB can show at the fused (brighter) luminance: 4.5 levels lost to clipping on a
    # saturation of 44. The sepia RGB network was 51 levels off on the tissue.
    assert np.abs(_chroma(fused) - _chroma(pet))[tissue].mean() < 6.0
