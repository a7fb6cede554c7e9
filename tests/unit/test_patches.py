"""Patch augmentation: window geometry, identical augmentation of every source, shards, training on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fusion.data.patches import PatchParams, PatchShards, build_patches, cut_pair, window_origins
from fusion.data.sources import SourcePair
from fusion.errors import ConfigError, DataError


def _pair(tmp_path, name, h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (h, w), dtype=np.uint8)
    b = 255 - a  # the partner is a known function of a: alignment is checkable per window
    pa, pb = tmp_path / f"{name}-a.png", tmp_path / f"{name}-b.png"
    cv2.imwrite(str(pa), a)
    cv2.imwrite(str(pb), b)
    return SourcePair(name, "ir-vis", (pa, pb), ("ir", "vi"), name), a


def test_window_origins_cover_the_image_at_the_stride():
    assert window_origins(40, 50, 20, 10) == [(y, x) for y in (0, 10, 20) for x in (0, 10, 20, 30)]
    assert window_origins(10, 10, 20, 5) == []
    assert window_origins(132, 160, 132, 14) == [(0, 0), (0, 14), (0, 28)]


def test_windows_are_aligned_and_augmented_identically(tmp_path):
    pair, a = _pair(tmp_path, "p")
    plain = cut_pair([str(p) for p in pair.paths], PatchParams(window=20, stride=10), 0)
    assert plain.shape == (12, 2, 20, 20)
    assert np.array_equal(plain[5, 0], a[10:30, 10:30])  # row-major: origin (10, 10) is window 5
    aug = cut_pair([str(p) for p in pair.paths], PatchParams(window=20, stride=10, flips=True, rotations=True), 0)
    assert aug.shape == (12 * 8, 2, 20, 20)
    assert np.array_equal(aug[:, 1], 255 - aug[:, 0])  # every transform applied to both sources alike
    first = aug[:8, 0]
    assert np.array_equal(first[1], np.rot90(a[:20, :20], 1)) and np.array_equal(first[4], a[:20, :20][:, ::-1])
    sampled = cut_pair([str(p) for p in pair.paths], PatchParams(window=20, stride=10, max_per_pair=3, seed=1), 7)
    assert sampled.shape[0] == 3
    assert np.array_equal(
        sampled, cut_pair([str(p) for p in pair.paths], PatchParams(window=20, stride=10, max_per_pair=3, seed=1), 7)
    )


def test_shards_hold_every_window_in_pair_order_and_load_memory_mapped(tmp_path):
    pairs, arrays = zip(*[_pair(tmp_path, f"p{i}", seed=i) for i in range(3)])
    params = PatchParams(window=20, stride=10, shard_size=24)  # 12 windows a pair: two pairs a shard
    manifest = build_patches(list(pairs), tmp_path / "patches", params, workers=2, provenance={"x": 1})
    assert manifest["count"] == 36 and [s["count"] for s in manifest["shards"]] == [24, 12]
    shards = PatchShards(tmp_path / "patches")
    assert len(shards) == 36 and isinstance(shards.arrays[0], np.memmap)
    w = shards.load(12 + 5)  # pair 1, origin (10, 10)
    assert np.array_equal(w["s0"], arrays[1][10:30, 10:30]) and np.array_equal(w["s1"], 255 - w["s0"])
    on_disk = json.loads((tmp_path / "patches" / "manifest.json").read_text())
    assert on_disk["provenance"] == {"x": 1} and len(on_disk["sources"]) == 3
    # the same inputs give the same bytes, whatever the number of processes
    again = build_patches(list(pairs), tmp_path / "again", params, workers=1, provenance={"x": 1})
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_bad_pairs_are_all_reported_and_nothing_is_written(tmp_path):
    good, _ = _pair(tmp_path, "good")
    bad1, _ = _pair(tmp_path, "bad1")
    cv2.imwrite(str(bad1.paths[1]), np.zeros((41, 50), np.uint8))
    bad2, _ = _pair(tmp_path, "bad2")
    bad2.paths[0].write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as err:
        build_patches([good, bad1, bad2], tmp_path / "out", PatchParams(window=20, stride=10), workers=2)
    assert "2 pair(s)" in str(err.value) and "bad1-a.png" in str(err.value) and "bad2-a.png" in str(err.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    with pytest.raises(DataError, match="no 64x64 window fits"):
        build_patches([good], tmp_path / "out", PatchParams(window=64, stride=10), workers=1)
    with pytest.raises(ConfigError, match="patches.stride"):
        build_patches([good], tmp_path / "out", PatchParams(stride=0), workers=1)


def test_cli_cuts_tno_and_cadnif_trains_on_the_patches(shared_data, tmp_path):
    from fusion.config import load_config
    from fusion.train.loop import Trainer
    from tests.conftest import REPO

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    src = [
        "--set",
        "train.source.layout=tno",
        "--set",
        f"train.source.path={shared_data / 'irvis/TNO42'}",
        "--set",
        "train.source.test_fraction=0.1",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "data",
            "patches",
            "--workspace",
            str(tmp_path),
            "--out",
            "patches",
            "--window",
            "48",
            "--stride",
            "64",
            "--max-per-pair",
            "4",
            *src,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "patches" / "manifest.json").read_text())
    assert manifest["provenance"]["split"] == "train" and len(manifest["sources"]) == 38  # 42 pairs, 4 held out

    overrides = [o for o in src if o != "--set"] + [
        "train.patches=patches",
        "train.model=cadnif",
        "train.variant=OD-Net",
        "train.task=ir-vis",
        "train.crop=32",
    ]
    trainer = Trainer(load_config(tmp_path, "tiny", overrides), None)
    assert isinstance(trainer.train_set, PatchShards) and len(trainer.train_set) == 38 * 4
    state = trainer.fit(tmp_path / "ck")
    assert state.epoch == 2
    other = [o.replace("test_fraction=0.1", "test_fraction=0.2") for o in overrides]
    with pytest.raises(ConfigError, match="train.patches=.*cut from"):
        Trainer(load_config(tmp_path, "tiny", other), None)
