"""Data behaviour: the synthetic multi-focus set (UFA-Fuse Eq. 11)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from fusion.data.embedded import PHOTOGRAPHS, export_embedded
from fusion.data.synth_multifocus import (
    SynthParams,
    build,
    draw_kernel,
    focus_map,
    split_sources,
    synthesize_pair,
)
from fusion.errors import ConfigError, DataError
from fusion.io import read_image


def test_eq11_near_far_are_sharp_exactly_where_the_focus_map_says():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    focus = np.zeros((40, 50))
    focus[:, :25] = 1
    out = synthesize_pair(sharp, focus, kernel=5)
    blurred = cv2.blur(sharp, (5, 5), borderType=cv2.BORDER_REFLECT)
    np.testing.assert_array_equal(out["near"][:, :25], sharp[:, :25])
    np.testing.assert_array_equal(out["near"][:, 25:], blurred[:, 25:])
    np.testing.assert_array_equal(out["far"][:, :25], blurred[:, :25])
    np.testing.assert_array_equal(out["far"][:, 25:], sharp[:, 25:])
    np.testing.assert_array_equal(out["gt"], sharp)
    assert set(np.unique(out["focus"])) == {0, 255}


def test_kernel_sizes_come_from_the_paper_intervals():
    intervals = ((2, 3), (4, 5), (5, 7), (8, 10))
    rng = np.random.default_rng(1)
    drawn = [draw_kernel(rng, intervals) for _ in range(400)]
    assert all(lo <= k <= hi for k, (lo, hi) in drawn)
    assert {iv for _, iv in drawn} == set(intervals)  # every interval is used
    assert {k for k, _ in drawn} == set(range(2, 11))


def test_focus_map_falls_back_to_otsu_for_a_degenerate_threshold():
    mask = np.linspace(0, 0.4, 100).reshape(10, 10)  # nothing reaches 0.5
    fm = focus_map(mask, 0.5)
    assert 0.05 <= fm.mean() <= 0.95


def test_split_holds_out_whole_photographs_deterministically():
    names = [f"img{i}" for i in range(10)]
    a, b = split_sources(names, 3, seed=7), split_sources(names, 3, seed=7)
    assert a == b and len(a["test"]) == 3
    assert not set(a["train"]) & set(a["test"])
    with pytest.raises(ConfigError, match="test_images=10"):
        split_sources(names, 10, seed=0)


def test_build_is_reproducible_labelled_synthetic_and_leak_free(embedded_raw, tmp_path):
    params = SynthParams(max_side=48, pairs_per_image=2, test_images=4)
    m1 = build(embedded_raw, tmp_path / "a", params)
    m2 = build(embedded_raw, tmp_path / "b", params)
    assert m1["pairs"] == m2["pairs"]  # same seed -> same sha256 for every file
    assert m1["synthetic"] is True and all(p["synthetic"] for p in m1["pairs"])
    assert m1["counts"] == {"train": 2 * (len(PHOTOGRAPHS) - 4), "test": 8}
    train_src = {p["source_image"] for p in m1["pairs"] if p["split"] == "train"}
    test_src = {p["source_image"] for p in m1["pairs"] if p["split"] == "test"}
    assert not train_src & test_src
    moto = [p for p in m1["pairs"] if p["source_image"] == "motorcycle_left.png"]
    assert moto and all(p["mask"] == "motorcycle_left.npz" for p in moto)  # the real disparity map
    pid = m1["pairs"][0]
    img = read_image(tmp_path / "a" / pid["split"] / "near" / f"{pid['id']}.png")
    assert max(img.shape[:2]) == 48
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["dataset"] == "multifocus_synthetic"
    m3 = build(embedded_raw, tmp_path / "c", SynthParams(max_side=48, pairs_per_image=2, test_images=4, seed=1))
    assert m3["pairs"] != m1["pairs"]


def test_corrupt_source_image_names_the_file_and_leaves_previous_output(embedded_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(embedded_raw, raw)
    out = tmp_path / "out"
    params = SynthParams(max_side=32, pairs_per_image=1, test_images=2)
    build(raw, out, params)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (raw / "images" / "coffee.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="coffee.png: cannot decode image"):
        build(raw, out, params)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # old snapshot intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no partial dirs


def test_missing_source_folder_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="nope: source folder not found"):
        build(tmp_path / "nope", tmp_path / "out", SynthParams())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no image folder; looked for images/"):
        build(tmp_path / "empty", tmp_path / "out", SynthParams())
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"images: folder is empty \(no \.png"):
        build(tmp_path / "empty", tmp_path / "out", SynthParams())
    assert not (tmp_path / "out").exists()


def test_missing_image_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="x.png: image not found"):
        read_image(tmp_path / "x.png")


def test_export_embedded_copies_real_photographs_byte_for_byte(tmp_path):
    out = export_embedded(tmp_path / "e")
    manifest = json.loads((out / "manifest.json").read_text())
    assert len([f for f in manifest["files"] if f["file"].startswith("images/")]) == len(PHOTOGRAPHS)
    assert all("scikit-image" in f["source"] for f in manifest["files"])
    again = export_embedded(tmp_path / "f")
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
