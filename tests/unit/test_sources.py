"""Source loaders on the shared real data (counts pinned from /work/shared/data/README.md)
and on small fixtures in tmp_path for the layouts not on this machine and the bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fusion.data.sources import (
    LAYOUTS,
    MaskedImage,
    Report,
    SourcePair,
    check_pairs,
    load_duts,
    load_harvard,
    load_kaist,
    load_lytro,
    load_mef_scenes,
    load_mffw,
    load_roadscene,
    load_source,
    load_tno,
    split_by_group,
    validate_spec,
)
from fusion.errors import ConfigError, DataError


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def noise(h=12, w=16, ch=3, seed=0, lo=0, hi=256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if ch == 1 else (h, w, ch)
    return rng.integers(lo, hi, shape, dtype=np.uint8)


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --------------------------------------------------------------------------- shared real data

SHARED_COUNTS = [
    ("tno", "irvis/TNO42", {}, 42, 42),
    ("roadscene", "irvis/RoadScene221", {}, 221, 221),
    ("msrs", "irvis/MSRS5", {}, 5, 5),
    ("lytro", "mf/Lytro20", {}, 20, 20),
    ("lytro", "mf/Lytro20", {"triples": True}, 24, 24),
    ("lytro", "mf/Lytro20/triples", {}, 4, 4),
    ("mef-scenes", "mef/IFCNN_ME6", {}, 6, 6),
    ("u2fusion-mef", "mef/U2Fusion_ME8", {}, 8, 8),
    ("harvard", "medical/Harvard", {"subsets": ["CT-MRI"]}, 149, 8),
    ("harvard", "medical/Harvard", {"subsets": ["PET-MRI"]}, 175, 2),
    ("harvard", "medical/Harvard", {"subsets": ["SPECT-MRI"]}, 243, 10),
    ("harvard", "medical/Harvard", {}, 567, 18),  # cases 28 and 41 occur in two subsets
    ("harvard", "medical/Harvard/PET-MRI", {}, 175, 2),
]


@pytest.mark.parametrize("layout,sub,opts,pairs,groups", SHARED_COUNTS)
def test_shared_counts(shared_data, layout, sub, opts, pairs, groups):
    found = LAYOUTS[layout](shared_data / sub, **opts)
    assert len(found) == pairs
    assert len({p.group for p in found}) == groups
    ids = [p.id for p in found]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert found.problems == []
    assert all(isinstance(p, SourcePair) and all(x.is_file() for x in p.paths) for p in found)
    assert found == LAYOUTS[layout](shared_data / sub, **opts)  # deterministic


def test_irvis_pairs_shape(shared_data):
    tno = load_tno(shared_data / "irvis/TNO42")
    first = tno[0]
    assert (first.id, first.task, first.modalities) == ("01", "ir-vis", ("ir", "vis"))
    assert [p.parent.name for p in first.paths] == ["ir", "vi"]
    assert all(p.paths[0].name == p.paths[1].name for p in tno)
    road = load_roadscene(shared_data / "irvis/RoadScene221")
    assert road[0].id == "FLIR_00006" and [p.parent.name for p in road[0].paths] == ["ir", "vi"]


def test_lytro_orders_near_to_far(shared_data):
    pairs = load_lytro(shared_data / "mf/Lytro20", triples=True)
    assert [p.name for p in pairs[0].paths] == ["lytro-01-A.jpg", "lytro-01-B.jpg"]
    assert pairs[0].modalities == ("near", "far")
    triples = [p for p in pairs if p.id.startswith("triples/")]
    assert len(triples) == 4 and all(len(p.paths) == 3 for p in triples)
    assert triples[0].modalities == ("near", "mid", "far")
    assert [p.name[-5] for p in triples[0].paths] == ["A", "B", "C"]


def _mean(path: Path) -> float:
    return float(cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_4).mean())


def test_mef_scenes_ordered_by_brightness(shared_data):
    scenes = {p.id: p for p in load_mef_scenes(shared_data / "mef/IFCNN_ME6")}
    assert sorted(scenes) == ["chair", "door", "garage", "house", "igloo", "window"]
    assert {k: len(v.paths) for k, v in scenes.items()} == {
        "chair": 5,
        "door": 5,
        "garage": 6,
        "house": 4,
        "igloo": 6,
        "window": 5,
    }
    for scene in scenes.values():
        means = [_mean(p) for p in scene.paths]
        assert means == sorted(means), scene.id
        assert scene.modalities[0] == "under" and scene.modalities[-1] == "over"
    # igloo's names run bright -> dark, the opposite of the other scenes
    assert [p.name for p in scenes["igloo"].paths][0] == "igloo6.jpg"
    by_name = {p.id: p for p in load_mef_scenes(shared_data / "mef/IFCNN_ME6", order="name")}
    assert by_name["igloo"].paths[0].name == "igloo1.jpg"


def test_u2fusion_mef_is_under_then_over(shared_data):
    pairs = LAYOUTS["u2fusion-mef"](shared_data / "mef/U2Fusion_ME8")
    assert [p.id for p in pairs][:2] == ["dataset1/1", "dataset1/2"]
    assert all([x.parent.name for x in p.paths] == ["ue", "oe"] for p in pairs)
    assert _mean(pairs[0].paths[0]) < _mean(pairs[0].paths[1])


def test_harvard_groups_are_case_ids(shared_data):
    pairs = load_harvard(shared_data / "medical/Harvard")
    p = next(x for x in pairs if x.id == "CT-MRI/2004")
    assert p.group == "2" and p.modalities == ("mri", "ct")  # 4-digit name: case 2, slice 004
    assert [x.parent.name for x in p.paths] == ["MRI", "CT"]
    assert next(x for x in pairs if x.id == "CT-MRI/20005").group == "20"
    assert next(x for x in pairs if x.id == "PET-MRI/30025").modalities == ("mri", "pet")


def test_split_by_case_never_shares_a_case(shared_data):
    pairs = load_harvard(shared_data / "medical/Harvard")
    train, test = split_by_group(pairs, test_fraction=0.25, seed=3)
    assert len(train) + len(test) == len(pairs) and train and test
    assert not {p.group for p in train} & {p.group for p in test}
    assert len({p.group for p in test}) == round(0.25 * 18)
    assert split_by_group(pairs, 0.25, seed=3) == (train, test)
    tests_by_seed = {frozenset(p.group for p in split_by_group(pairs, 0.25, seed=s)[1]) for s in range(5)}
    assert len(tests_by_seed) > 1
    pet = load_harvard(shared_data / "medical/Harvard", subsets=["PET-MRI"])
    tr, te = split_by_group(pet, 0.1, seed=0)  # 2 cases: always one each side
    assert len({p.group for p in tr}) == 1 and len({p.group for p in te}) == 1


def test_split_needs_two_groups():
    pairs = [SourcePair(f"c1/{i}", "medical", (Path("a"), Path("b")), ("mri", "ct"), "c1") for i in range(5)]
    with pytest.raises(ConfigError, match=r"needs >= 2 groups.*have 1 \(c1\)"):
        split_by_group(pairs, 0.2, seed=0)
    with pytest.raises(ConfigError, match="test_fraction"):
        split_by_group(pairs, 1.0, seed=0)


def test_check_pairs_passes_real_data(shared_data):
    assert check_pairs(load_tno(shared_data / "irvis/TNO42")) == []
    pairs = load_harvard(shared_data / "medical/Harvard/PET-MRI")[:10]
    assert check_pairs(pairs) == []
    good, report = check_pairs(LAYOUTS["msrs"](shared_data / "irvis/MSRS5"), skip_bad=True)
    assert len(good) == 5 and report == []


# --------------------------------------------------------------------------- fixtures in published layouts


@pytest.fixture
def kaist(tmp_path) -> Path:
    root = tmp_path / "kaist"
    frames = {("set00", "V000"): 3, ("set00", "V001"): 2, ("set01", "V000"): 2}
    for (s, v), n in frames.items():
        for i in range(n):
            gray = noise(ch=1, seed=i)
            write(root / s / v / "lwir" / f"I{i:05d}.jpg", cv2.merge([gray] * 3))
            write(root / s / v / "visible" / f"I{i:05d}.jpg", noise(seed=100 + i))
    return root


def test_kaist_fixture(kaist):
    pairs = load_kaist(kaist)
    assert len(pairs) == 7
    assert pairs[0].id == "set00/V000/I00000" and pairs[0].group == "set00/V000"
    assert [p.parent.name for p in pairs[0].paths] == ["lwir", "visible"]
    assert {p.group for p in pairs} == {"set00/V000", "set00/V001", "set01/V000"}
    assert len(load_kaist(kaist, sets=["set01"])) == 2
    assert len(load_kaist(kaist, sets=[0])) == 5
    assert check_pairs(pairs) == []  # JPEG-coded gray LWIR counts as gray
    train, test = split_by_group(pairs, 0.34, seed=0)
    assert not {p.group for p in train} & {p.group for p in test}
    with pytest.raises(DataError, match=r"set07 not found; available: set00, set01"):
        load_kaist(kaist, sets=["set07"])


def test_kaist_images_subfolder_and_missing_frames(tmp_path, kaist):
    moved = tmp_path / "KAIST"
    moved.mkdir()
    kaist.rename(moved / "images")
    assert len(load_kaist(moved)) == 7
    orphan = moved / "images/set01/V000/lwir/I00001.jpg"
    orphan.unlink()
    with pytest.raises(DataError, match="I00001.jpg: no partner"):
        load_kaist(moved)
    kept = load_kaist(moved, skip_bad=True)
    assert len(kept) == 6 and [p.path.name for p in kept.problems] == ["I00001.jpg"]


@pytest.fixture
def duts(tmp_path) -> Path:
    root = tmp_path / "DUTS"
    for i, stem in enumerate(["ILSVRC_a", "ILSVRC_b", "sun_c"]):
        write(root / "DUTS-TR" / "DUTS-TR-Image" / f"{stem}.jpg", noise(seed=i))
        mask = np.zeros((12, 16), np.uint8)
        mask[3:9, 4:12] = 255
        write(root / "DUTS-TR" / "DUTS-TR-Mask" / f"{stem}.png", mask)
    return root


def test_duts_fixture(duts):
    recs = load_duts(duts)
    assert [r.id for r in recs] == ["ILSVRC_a", "ILSVRC_b", "sun_c"]
    assert all(isinstance(r, MaskedImage) and r.mask.suffix == ".png" for r in recs)
    assert check_pairs(recs) == []
    assert len(load_duts(duts / "DUTS-TR")) == 3  # root may also be DUTS-TR itself


def test_duts_image_without_mask_and_zero_mask(duts):
    base = duts / "DUTS-TR"
    write(base / "DUTS-TR-Image" / "lonely.jpg", noise(seed=9))
    write(base / "DUTS-TR-Image" / "lonely2.jpg", noise(seed=10))
    with pytest.raises(DataError) as err:
        load_duts(duts)
    msg = str(err.value)
    assert "lonely.jpg: image has no mask" in msg and "lonely2.jpg: image has no mask" in msg
    assert str(base / "DUTS-TR-Mask" / "lonely.png") in msg
    write(base / "DUTS-TR-Mask" / "sun_c.png", np.zeros((12, 16), np.uint8))
    recs = load_duts(duts, skip_bad=True)
    assert len(recs) == 3
    good, report = check_pairs(recs, skip_bad=True)
    assert [r.id for r in good] == ["ILSVRC_a", "ILSVRC_b"]
    problems = {p.path.name: p.problem for p in report}
    assert set(problems) == {"lonely.jpg", "lonely2.jpg", "sun_c.png"}
    assert "all zero" in problems["sun_c.png"]


def test_mffw_layout_with_ground_truth(tmp_path):
    root = tmp_path / "MFI-WHU"
    for i in range(3):
        write(root / "source_1" / f"{i}.png", noise(seed=i))
        write(root / "source_2" / f"{i}.png", noise(seed=10 + i))
        if i < 2:
            write(root / "full_clear" / f"{i}.png", noise(seed=20 + i))
    with pytest.raises(DataError, match=r"2\.png: no ground truth named 2\.\* in .*full_clear"):
        load_mffw(root)
    pairs = load_mffw(root, skip_bad=True)
    assert [p.id for p in pairs] == ["0", "1"]
    assert pairs[0].gt.parent.name == "full_clear" and pairs[0].modalities == ("source_1", "source_2")
    (root / "full_clear" / "0.png").unlink()
    (root / "full_clear" / "1.png").unlink()
    (root / "full_clear").rmdir()
    assert all(p.gt is None for p in load_mffw(root))  # ground truth is optional


def test_lytro_fixture_problems(tmp_path):
    root = tmp_path / "lytro"
    for scene, letters in {"s1": "AB", "s2": "A", "s3": "AC", "s4": "ABC"}.items():
        for c in letters:
            write(root / f"{scene}-{c}.png", noise(seed=ord(c)))
    write(root / "stray.png", noise())
    with pytest.raises(DataError) as err:
        load_lytro(root)
    msg = str(err.value)
    for name in ("s2-A.png", "s3-A.png", "s3-C.png", "stray.png"):
        assert name in msg
    assert "expected s2-B.*" in msg
    pairs = load_lytro(root, skip_bad=True)
    assert [(p.id, len(p.paths)) for p in pairs] == [("s1", 2), ("s4", 3)]


def test_roadscene_published_names_and_error(tmp_path):
    root = tmp_path / "RoadScene"
    write(root / "cropinfrared" / "FLIR_1.jpg", noise(ch=1))
    write(root / "crop_LR_visible" / "FLIR_1.jpg", noise())
    write(root / "crop_HR_visible" / "FLIR_1.jpg", noise(h=24, w=32))
    pairs = load_roadscene(root)
    assert [p.parent.name for p in pairs[0].paths] == ["cropinfrared", "crop_LR_visible"]
    with pytest.raises(DataError, match=r"no infrared folder; looked for cropinfrared/, ir/"):
        load_roadscene(tmp_path / "RoadScene" / "crop_HR_visible")
    with pytest.raises(DataError, match="source folder not found"):
        load_tno(tmp_path / "nowhere")


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture
def irvis(tmp_path) -> Path:
    root = tmp_path / "tno"
    for i in range(6):
        write(root / "ir" / f"{i:02d}.png", noise(ch=1, seed=i))
        write(root / "vi" / f"{i:02d}.png", noise(seed=50 + i))
    return root


def test_missing_partner_named_both_ways(irvis):
    (irvis / "vi" / "01.png").unlink()
    (irvis / "ir" / "02.png").unlink()
    with pytest.raises(DataError) as err:
        load_tno(irvis)
    msg = str(err.value)
    assert f"{irvis / 'ir' / '01.png'}: no partner named 01.* in {irvis / 'vi'}/" in msg
    assert f"{irvis / 'vi' / '02.png'}: no partner named 02.* in {irvis / 'ir'}/" in msg
    assert "2 problem(s)" in msg


def test_every_bad_file_reported_at_once(irvis, tmp_path):
    truncate(irvis / "ir" / "00.png")
    write(irvis / "vi" / "01.jpg", noise(seed=7))
    (irvis / "vi" / "01.png").unlink()
    truncate(irvis / "vi" / "01.jpg")
    write(irvis / "vi" / "02.png", noise(h=10, w=16, seed=8))  # size mismatch
    write(irvis / "ir" / "03.png", noise(seed=9))  # colour content in an IR image
    (irvis / "vi" / "04.png").unlink()  # missing partner
    pairs = load_tno(irvis, skip_bad=True)
    assert [p.id for p in pairs] == ["00", "01", "02", "03", "05"]
    with pytest.raises(DataError) as err:
        check_pairs(pairs)
    msg = str(err.value)
    expected = {
        irvis / "ir" / "00.png": "truncated PNG",
        irvis / "vi" / "01.jpg": "truncated JPEG",
        irvis / "vi" / "02.png": f"size 16x10 (vis) differs from its partner {irvis / 'ir' / '02.png'} (ir, 16x12)",
        irvis / "ir" / "03.png": "ir must be gray",
        irvis / "ir" / "04.png": "no partner named 04.*",
    }
    for path, problem in expected.items():
        assert f"{path}: {problem}" in msg
    assert "5 problem(s) in 5 file(s)" in msg
    good, report = check_pairs(pairs, skip_bad=True)
    assert [p.id for p in good] == ["05"]
    assert {p.path for p in report} == set(expected)
    assert isinstance(report, Report) and str(report).count("\n") == 4


def test_undecodable_image(irvis):
    (irvis / "vi" / "05.png").write_bytes(b"\x89PNG not really" + b"IEND\xaeB`\x82")
    good, report = check_pairs(load_tno(irvis), skip_bad=True)
    assert len(good) == 5 and "cannot decode image" in report[0].problem


def test_a_symlink_to_a_text_file_is_named_as_such_not_as_a_truncated_image(irvis, tmp_path):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (irvis / "vi" / "05.png").unlink()
    (irvis / "vi" / "05.png").symlink_to(target)
    good, report = check_pairs(load_tno(irvis), skip_bad=True)
    assert len(good) == 5
    assert report[0].path == irvis / "vi" / "05.png"
    assert (
        report[0].problem == f"not a PNG image: its content is text, not .png data; the file is a symlink to {target}"
    )


def test_empty_folder_named(irvis):
    for p in (irvis / "vi").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=rf"{irvis / 'vi'}: folder is empty"):
        load_tno(irvis)
    with pytest.raises(DataError, match=rf"{irvis / 'vi'}: folder is empty"):
        load_tno(irvis, skip_bad=True)  # nothing left to keep


def test_mef_scene_with_one_exposure_and_corrupt_file(tmp_path):
    root = tmp_path / "mef"
    for i, level in enumerate([200, 40, 120]):
        write(root / "a" / f"a{i}.jpg", noise(seed=i, lo=level - 30, hi=level + 30))
    write(root / "b" / "b1.jpg", noise())
    write(root / "c" / "c1.jpg", noise())
    (root / "c" / "c2.jpg").write_bytes(b"nope")
    with pytest.raises(DataError) as err:
        load_mef_scenes(root)
    assert f"{root / 'b'}: needs >= 2 exposures, found 1" in str(err.value)
    assert f"{root / 'c' / 'c2.jpg'}: cannot decode" in str(err.value)
    pairs = load_mef_scenes(root, skip_bad=True)
    assert [p.name for p in pairs[0].paths] == ["a1.jpg", "a2.jpg", "a0.jpg"]
    assert pairs[0].modalities == ("under", "mid1", "over")


# --------------------------------------------------------------------------- specs and registry


def test_validate_spec_errors():
    with pytest.raises(ConfigError, match=r"sources\.x\.layout: unknown layout 'tnoo'; valid: .*kaist.*tno"):
        validate_spec("x", {"layout": "tnoo", "path": "p"})
    with pytest.raises(ConfigError, match=r"sources\.x\.layout: missing"):
        validate_spec("x", {"path": "p"})
    with pytest.raises(ConfigError, match=r"sources\.x\.path: missing"):
        validate_spec("x", {"layout": "tno"})
    with pytest.raises(ConfigError, match=r"sources\.k\.set: unknown option for layout kaist; valid: .*sets"):
        validate_spec("k", {"layout": "kaist", "path": "p", "set": ["set00"]})
    with pytest.raises(ConfigError, match=r"sources\.k\.sets: expected a list"):
        validate_spec("k", {"layout": "kaist", "path": "p", "sets": "set00"})
    with pytest.raises(ConfigError, match=r"sources\.t\.task: layout tno gives ir-vis, not 'medical'"):
        validate_spec("t", {"layout": "tno", "path": "p", "task": "medical"})
    with pytest.raises(ConfigError, match=r"sources\.f\.folders: required"):
        validate_spec("f", {"layout": "folders", "path": "p", "task": "ir-vis"})
    with pytest.raises(ConfigError, match=r"sources\.s: expected a mapping"):
        validate_spec("s", "../data")
    assert validate_spec("t", {"layout": "tno", "path": "p", "task": "ir-vis"}) == ("tno", "p", {})


def test_load_source_forms(irvis, tmp_path):
    assert len(load_source({"layout": "tno", "path": str(irvis)})) == 6
    assert len(load_source("tno", {"layout": "tno", "path": "tno"}, base=tmp_path)) == 6
    assert len(load_source(f"tno:{irvis}")) == 6
    generic = load_source(
        "mine",
        {
            "layout": "folders",
            "path": str(irvis),
            "task": "ir-vis",
            "folders": ["ir", "vi"],
            "modalities": ["ir", "vis"],
        },
    )
    assert generic == load_tno(irvis)
    with pytest.raises(ConfigError, match=r"sources\.mine\.modalities: 1 names for 2 folders"):
        load_source(
            "mine",
            {"layout": "folders", "path": str(irvis), "task": "ir-vis", "folders": ["ir", "vi"], "modalities": ["ir"]},
        )
    with pytest.raises(ConfigError, match="layout:path"):
        load_source("tno")


def test_every_loader_option_is_validated():
    import inspect

    from fusion.data import sources

    for layout, loader in LAYOUTS.items():
        for p in inspect.signature(loader).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                assert p.name in sources.LAYOUT_REGISTRY[layout].options, (
                    f"{layout}.{p.name} has no check in validate_spec"
                )
        assert layout in sources.LAYOUT_TASKS
