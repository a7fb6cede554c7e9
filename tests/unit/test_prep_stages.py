"""Preparation stages (fusion/data/stages.py) driven by params.yaml, as `dvc repro` runs them:
KAIST pairs, DUTS synthesis (Eq. 11), patches of a registry source, test sets; bad inputs
on real files from ../shared/data and corrupted copies; nothing partial left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fusion.config import load_config
from fusion.data import stages
from fusion.data.kaist_pairs import KaistParams, sample_frames
from fusion.data.manifest import BAD_INPUTS, data_version
from fusion.data.sources import load_kaist, load_source
from fusion.errors import ConfigError, DataError


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def make_kaist(root: Path, frames=(("set00", "V000", 6), ("set00", "V001", 4), ("set01", "V000", 5))) -> Path:
    rng = np.random.default_rng(0)
    for s, v, n in frames:
        for i in range(n):
            write(root / s / v / "lwir" / f"I{i:05d}.jpg", rng.integers(0, 256, (48, 60), dtype=np.uint8))
            write(root / s / v / "visible" / f"I{i:05d}.jpg", rng.integers(0, 256, (48, 60, 3), dtype=np.uint8))
    return root


def make_duts(root: Path, n=4) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), (0, 0), 1.0)
        write(root / "DUTS-TR" / "DUTS-TR-Image" / f"img_{i}.jpg", img)
        mask = np.zeros((40, 56), np.uint8)
        mask[8:30, 10 + i : 40] = 255
        write(root / "DUTS-TR" / "DUTS-TR-Mask" / f"img_{i}.png", mask)
    return root


def configure(ws: Path, sources: dict, **data) -> Path:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["sources"].update(sources)
    for section, value in data.items():
        if section == "synth_multifocus":  # a section of settings: merged; stage lists: replaced
            params["data"][section] = {**params["data"][section], **value}
        else:
            params["data"][section] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- KAIST pairs


def test_kaist_sampling_keeps_every_nth_frame_per_sequence_and_is_seeded(tmp_path):
    frames = load_kaist(make_kaist(tmp_path / "kaist"))
    every_other = sample_frames(frames, KaistParams(pairs=0, frame_stride=2))
    # 6, 4 and 5 frames -> 3 + 2 + 3 kept, always the first of each run of two
    assert [f.id for f in every_other] == [
        "set00/V000/I00000",
        "set00/V000/I00002",
        "set00/V000/I00004",
        "set00/V001/I00000",
        "set00/V001/I00002",
        "set01/V000/I00000",
        "set01/V000/I00002",
        "set01/V000/I00004",
    ]
    a = sample_frames(frames, KaistParams(pairs=4, frame_stride=2, seed=0))
    assert a == sample_frames(frames, KaistParams(pairs=4, frame_stride=2, seed=0))
    assert len(a) == 4 and set(a) <= set(every_other) and a == sorted(a, key=lambda f: f.id)
    assert {f.id for f in sample_frames(frames, KaistParams(pairs=4, frame_stride=2, seed=1))} != {f.id for f in a}
    with pytest.raises(ConfigError, match=r"pairs=9: only 8 frame\(s\) left after frame_stride=2 \(15 in the source\)"):
        sample_frames(frames, KaistParams(pairs=9, frame_stride=2))


def test_kaist_stage_writes_gray_squares_in_a_kaist_tree_with_provenance(workspace, tmp_path):
    make_kaist(tmp_path / "kaist")
    configure(
        workspace,
        {"kaist": {"layout": "kaist", "path": "../kaist"}},
        kaist_pairs={"cf": {"source": "kaist", "pairs": 5, "frame_stride": 2, "size": 32}},
    )
    cfg = load_config(workspace)
    manifest = stages.kaist_pairs(workspace, cfg, "cf", workers=2)
    out = workspace / "prepared/kaist_pairs/cf"
    assert manifest["count"] == 5 and manifest["source"] == {
        "name": "kaist",
        "layout": "kaist",
        "path": "../kaist",
        "options": {},
    }
    back = load_kaist(out)  # the output reads back as KAIST, sequences as groups
    assert [p.id for p in back] == [e["id"] for e in manifest["pairs"]]
    assert {p.group for p in back} == {e["group"] for e in manifest["pairs"]}
    for pair, entry in zip(back, manifest["pairs"]):
        src = cv2.cvtColor(cv2.imread(str(tmp_path / "kaist" / entry["source_files"][1])), cv2.COLOR_BGR2GRAY)
        vis = cv2.imread(str(pair.paths[1]), cv2.IMREAD_UNCHANGED)
        assert vis.shape == (32, 32) and entry["source_size"] == [60, 48]
        assert np.array_equal(vis, cv2.resize(src, (32, 32), interpolation=cv2.INTER_AREA))
    # one process or two: the same bytes, so the same data version
    serial = tree(out)
    stages.kaist_pairs(workspace, cfg, "cf", workers=1)
    assert tree(out) == serial
    assert data_version(out) == __import__("hashlib").sha256(serial["manifest.json"]).hexdigest()


def test_kaist_stage_bad_frames_stop_it_or_are_skipped_and_reported(workspace, tmp_path):
    root = make_kaist(tmp_path / "kaist")
    configure(
        workspace,
        {"kaist": {"layout": "kaist", "path": str(root)}},
        kaist_pairs={"cf": {"source": "kaist", "pairs": 0, "size": 16}},
    )
    bad = root / "set00/V001/visible/I00001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    (root / "set01/V000/lwir/I00003.jpg").unlink()  # its visible partner is now alone
    out = workspace / "prepared/kaist_pairs/cf"
    with pytest.raises(DataError) as err:
        stages.kaist_pairs(workspace, load_config(workspace), "cf")
    assert "set01/V000/visible/I00003.jpg: no partner" in str(err.value)
    (root / "set01/V000/visible/I00003.jpg").unlink()
    with pytest.raises(DataError, match=r"I00001\.jpg: truncated JPEG"):
        stages.kaist_pairs(workspace, load_config(workspace), "cf")
    assert not out.exists() and not list(out.parent.glob(".cf.*"))  # nothing partial
    configure(workspace, {}, kaist_pairs={"cf": {"source": "kaist", "pairs": 0, "size": 16, "skip_bad": True}})
    manifest = stages.kaist_pairs(workspace, load_config(workspace), "cf")
    assert manifest["count"] == 13  # 14 complete frames, one truncated
    assert [s["path"] for s in manifest["skipped"]] == [str(bad)]
    assert f"{bad}: truncated JPEG" in (out / BAD_INPUTS).read_text()


# --------------------------------------------------------------------------- synthetic multi-focus from DUTS


def test_duts_synthesis_follows_eq_11_with_the_recorded_blur(workspace, tmp_path):
    make_duts(tmp_path / "DUTS")
    configure(
        workspace,
        {"duts": {"layout": "duts", "path": str(tmp_path / "DUTS")}},
        synth_multifocus={
            "source": "duts",
            "test_images": 1,
            "pairs_per_image": 3,
            "max_side": 64,
            "blur_weights": [0, 0, 0, 1],
        },
    )
    manifest = stages.synth_multifocus(workspace, load_config(workspace), workers=2)
    out = workspace / "prepared/multifocus_synthetic"
    assert manifest["counts"] == {"train": 9, "test": 3} and manifest["source"]["name"] == "duts"
    for e in manifest["pairs"]:
        assert e["blur_interval"] == [8, 10] and 8 <= e["blur_kernel"] <= 10  # weights pick the last interval
        gt, near, far, focus = (
            cv2.imread(str(out / e["split"] / kind / f"{e['id']}.png"), cv2.IMREAD_UNCHANGED)
            for kind in ("gt", "near", "far", "focus")
        )
        focus = focus > 127
        k = e["blur_kernel"]
        blurred = cv2.blur(gt, (k, k), borderType=cv2.BORDER_REFLECT)
        assert 0.05 < focus.mean() < 0.95
        assert np.array_equal(near[focus], gt[focus]) and np.array_equal(far[~focus], gt[~focus])
        assert np.array_equal(far[focus], blurred[focus]) and np.array_equal(near[~focus], blurred[~focus])


def test_an_all_zero_duts_mask_stops_the_stage_or_is_skipped(workspace, tmp_path):
    root = make_duts(tmp_path / "DUTS")
    zero = write(root / "DUTS-TR/DUTS-TR-Mask/img_2.png", np.zeros((40, 56), np.uint8))
    configure(
        workspace,
        {"duts": {"layout": "duts", "path": str(root)}},
        synth_multifocus={"source": "duts", "test_images": 1, "pairs_per_image": 1},
    )
    with pytest.raises(DataError, match=rf"{zero}: mask is all zero"):
        stages.synth_multifocus(workspace, load_config(workspace))
    assert not (workspace / "prepared/multifocus_synthetic").exists()
    configure(workspace, {}, synth_multifocus={"skip_bad": True})
    manifest = stages.synth_multifocus(workspace, load_config(workspace))
    assert sum(manifest["counts"].values()) == 3 and manifest["skipped"][0]["path"] == str(zero)
    assert "all zero" in (workspace / "prepared/multifocus_synthetic" / BAD_INPUTS).read_text()


# --------------------------------------------------------------------------- test sets and patches


def test_test_sets_keep_colour_and_split_medical_by_case(workspace, shared_data):
    configure(
        workspace,
        {
            "tno": {"layout": "tno", "path": str(shared_data / "irvis/TNO42")},
            "pet": {"layout": "harvard", "path": str(shared_data / "medical/Harvard/PET-MRI"), "test_fraction": 0.2},
        },
        test_sets={"tno": {"source": "tno"}, "pet": {"source": "pet", "split": "test"}},
    )
    cfg = load_config(workspace)
    tno = stages.test_set(workspace, cfg, "tno", workers=2)
    assert tno["count"] == 42 and tno["modalities"] == ["ir", "vis"] and tno["task"] == "ir-vis"
    pet = stages.test_set(workspace, cfg, "pet")
    out = workspace / "prepared/test_sets/pet"
    for e in pet["pairs"]:  # byte-for-byte copies: PET colour survives
        for rel, src in zip(e["files"], e["source_files"]):
            assert (out / rel).read_bytes() == (shared_data / "medical/Harvard/PET-MRI" / src).read_bytes()
    assert cv2.imread(str(out / pet["pairs"][0]["files"][1]), cv2.IMREAD_UNCHANGED).ndim == 3
    from fusion.data.training import load_source_split

    train, _ = load_source_split(load_config(workspace, overrides=["train.source=pet"]).train.source, cfg.seed)
    # PET-MRI holds two cases (30 and 41): one is the test set, the other trains
    assert {e["group"] for e in pet["pairs"]} | {p.group for p in train} == {"30", "41"}
    assert {e["group"] for e in pet["pairs"]}.isdisjoint({p.group for p in train})  # no case on both sides
    from fusion.data.test_sets import load_test_set

    ts = load_test_set(out)  # what the nightly evaluation reads
    assert ts.ids == [e["id"] for e in pet["pairs"]] and ts.source_labels == ["mri", "pet"] and not ts.has_gt
    sources, _ = ts.load(0)
    assert sources[1].ndim == 3 and len(ts.version()) == 64
    # the folders are what `fusion evaluate --source-a/--source-b` and the folders layout read
    again = load_source({"layout": "folders", "path": str(out), "folders": ["mri", "pet"], "task": "medical"})
    assert len(again) == pet["count"]


def test_test_set_of_a_corrupted_copy_names_every_bad_file(workspace, shared_data, tmp_path):
    copy = tmp_path / "TNO"
    shutil.copytree(shared_data / "irvis/TNO42", copy)
    vi = cv2.imread(str(copy / "vi/05.png"))
    cv2.imwrite(str(copy / "vi/05.png"), cv2.resize(vi, (vi.shape[1] // 2, vi.shape[0] // 2)))
    ir = cv2.imread(str(copy / "ir/07.png"))
    ir[..., 2] = 255 - ir[..., 2]  # an "infrared" image with colour
    cv2.imwrite(str(copy / "ir/07.png"), ir)
    (copy / "ir/09.png").write_bytes(b"not an image")
    configure(workspace, {"tno": {"layout": "tno", "path": str(copy)}}, test_sets={"tno": {"source": "tno"}})
    with pytest.raises(DataError) as err:
        stages.test_set(workspace, load_config(workspace), "tno")
    msg = str(err.value)
    assert "3 problem(s) in 3 file(s)" in msg
    assert f"{copy / 'vi/05.png'}: size" in msg and f"{copy / 'ir/07.png'}: ir must be gray" in msg
    assert f"{copy / 'ir/09.png'}: " in msg
    assert not (workspace / "prepared/test_sets/tno").exists()
    empty = tmp_path / "EMPTY"
    (empty / "ir").mkdir(parents=True)
    (empty / "vi").mkdir()
    configure(workspace, {"empty": {"layout": "tno", "path": str(empty)}}, test_sets={"e": {"source": "empty"}})
    with pytest.raises(DataError, match=r"EMPTY/ir: folder is empty"):
        stages.test_set(workspace, load_config(workspace), "e")


def test_test_set_refuses_pair_ids_that_would_share_a_file_name(tmp_path):
    from fusion.data.sources import SourcePair, Sources
    from fusion.data.test_sets import TestSetParams, build_test_set

    a = write(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    pairs = Sources([SourcePair(i, "ir-vis", (a, a), ("ir", "vis"), i) for i in ("x/1", "x_1")], (), tmp_path)
    with pytest.raises(DataError, match=r"pairs 'x/1' and 'x_1' would both be written as 'x_1'"):
        build_test_set(pairs, tmp_path / "out", TestSetParams(), source={})
    assert not (tmp_path / "out").exists()


def test_patch_stage_feeds_training_on_the_same_registry_source(workspace, shared_data):
    from fusion.data.training import training_data

    configure(
        workspace,
        {"tno": {"layout": "tno", "path": str(shared_data / "irvis/TNO42"), "test_fraction": 0.2}},
        patches={"tno": {"source": "tno", "window": 64, "stride": 64, "max_per_pair": 2, "flips": True}},
    )
    manifest = stages.patches(workspace, load_config(workspace), "tno", workers=2)
    assert manifest["provenance"]["source"] == "tno" and "path" not in manifest["provenance"]
    assert all(not Path(p).is_absolute() for s in manifest["sources"] for p in s["paths"])
    cfg = load_config(
        workspace,
        overrides=[
            "train.source=tno",
            "train.patches=prepared/patches/tno",
            "train.model=cadnif",
            "train.variant=CA-DRDB-AU-GRL-Net",
        ],
    )
    train, val, _ = training_data(cfg, None)
    assert len(train) == manifest["count"] == 4 * len(manifest["sources"]) and len(val) + len(manifest["sources"]) == 42
    other = load_config(
        workspace,
        overrides=[
            "train.source.layout=tno",
            f"train.source.path={shared_data / 'irvis/TNO42'}",
            "train.source.test_fraction=0.2",
            "train.patches=prepared/patches/tno",
        ],
    )
    with pytest.raises(ConfigError, match="cut from"):
        training_data(other, None)  # the same folder, but not named as the registry source


def test_stage_config_errors_name_the_parameter(workspace, tmp_path):
    configure(workspace, {}, test_sets={"x": {"source": "nope"}})
    with pytest.raises(
        ConfigError,
        match=r"data\.test_sets\.x\.source: 'nope' is not in the `sources` registry; registered: \['embedded'\]",
    ):
        load_config(workspace)
    configure(workspace, {"tno": {"layout": "tno", "path": "x"}}, test_sets={}, kaist_pairs={"k": {"source": "tno"}})
    with pytest.raises(
        ConfigError, match=r"data\.kaist_pairs\.k\.source: 'tno' has layout tno; this stage reads layout kaist"
    ):
        load_config(workspace)
    configure(workspace, {"tno": {"layout": "tnoo", "path": "x"}}, kaist_pairs={})
    with pytest.raises(ConfigError, match=r"sources\.tno\.layout: unknown layout 'tnoo'"):
        load_config(workspace)
    configure(workspace, {"tno": {"layout": "tno", "path": "x"}})
    with pytest.raises(ConfigError, match=r"--set sources\.tno\.path: .*edit them in params\.yaml"):
        load_config(workspace, overrides=["sources.tno.path=/elsewhere"])
    with pytest.raises(
        ConfigError, match=r"train\.source: 'tn' is not in the `sources` registry .* registered: \['embedded', 'tno'\]"
    ):
        load_config(workspace, overrides=["train.source=tn"])
    with pytest.raises(ConfigError, match=r"data\.patches\.nope: not defined in params\.yaml"):
        stages.patches(workspace, load_config(workspace), "nope")
    json.dumps(load_config(workspace).model_dump(mode="json"))  # the registry stays loggable
