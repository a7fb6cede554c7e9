"""The metrics reproduce the published reference values and agree with the numpy version.

Reference: ../shared/reference/metrics_tno42.json, 42 TNO pairs fused by SeAFusion and
DenseFuse (A = ir, B = vi), computed by an independent implementation of the convention.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fusion import metrics
from fusion.metrics import _numpy_ref

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "reference" / "metrics_tno42.json"
TNO = SHARED / "data" / "irvis" / "TNO42"
FUSED = SHARED / "data" / "irvis" / "TNO42_fused"

REFERENCE_METRICS = ["EN", "SD", "SF", "AG", "MI", "CC", "SCD", "VIF", "Qabf"]
# Qabf sums many sigmoid terms; its value depends on summation order at ~1e-6.
TOLERANCE = defaultdict(lambda: 1e-6, {"Qabf": 1e-4})


def _need_shared():
    if not REFERENCE.is_file() or not TNO.is_dir() or not FUSED.is_dir():
        pytest.skip(
            f"shared TNO data or reference values not found under {SHARED} (expected ../shared beside the repo)"
        )


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cannot read {path}"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _gray(path: Path) -> np.ndarray:
    return metrics.to_gray(_read_rgb(path))


@pytest.fixture(scope="module")
def reference() -> dict:
    _need_shared()
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Run torch single-threaded here: on a shared 2-core machine OpenMP threads that wait on
    each other make these many small kernels several times slower; one thread is steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def computed(reference) -> dict[str, dict[str, float]]:
    """Every reference image through compute_batch, batched by image size."""
    assert reference["A"] == "ir" and reference["B"] == "vi"
    groups: dict[tuple, list] = defaultdict(list)
    for key in reference["images"]:
        method, name = key.split("/")
        a, b, f = _gray(TNO / "ir" / name), _gray(TNO / "vi" / name), _gray(FUSED / method / name)
        groups[f.shape].append((key, a, b, f))
    out = {}
    for items in groups.values():
        stack = [np.stack([item[i] for item in items]) for i in (1, 2, 3)]
        values = metrics.compute_batch(*stack, names=REFERENCE_METRICS)
        for n, (key, *_) in enumerate(items):
            out[key] = {name: float(values[name][n]) for name in REFERENCE_METRICS}
    return out


def test_reference_covers_84_images(reference):
    assert len(reference["images"]) == 84


@pytest.mark.parametrize("name", REFERENCE_METRICS)
def test_matches_reference_values(reference, computed, name):
    bad = []
    for key, expected in reference["images"].items():
        got, want = computed[key][name], expected[name]
        rel = abs(got - want) / abs(want)
        if not rel <= TOLERANCE[name]:
            bad.append(f"{key}: {got!r} vs {want!r} (rel {rel:.2e})")
    assert not bad, f"{name} differs from the reference on {len(bad)} images:\n" + "\n".join(bad[:10])


def test_mi_is_true_mi_not_twice_entropy(reference, computed):
    # The papers' "MI" column equals 2 x EN; the convention reports MI(A,F) + MI(B,F).
    for key in reference["images"]:
        assert computed[key]["MI"] < 2 * computed[key]["EN"] - 1.0


# ------------------------------------------------- torch suite == numpy version
def _pairs(names, crop):
    _need_shared()
    for name in names:
        imgs = [_gray(TNO / "ir" / name), _gray(TNO / "vi" / name), _gray(FUSED / "SeAFusion" / name)]
        if crop is not None:
            h, w = imgs[0].shape
            r, c = (h - crop[0]) // 2, (w - crop[1]) // 2
            imgs = [x[r : r + crop[0], c : c + crop[1]] for x in imgs]
        yield name, imgs


def _assert_same(name, got, want, label):
    tol = TOLERANCE[name]
    if np.isinf(want) or want == 0:
        assert got == want, f"{label} {name}: torch {got!r} vs numpy {want!r}"
    else:
        assert abs(got - want) <= tol * abs(want), f"{label} {name}: torch {got!r} vs numpy {want!r}"


def test_torch_equals_numpy_every_metric_on_crops():
    """Every metric (FMI included) on centre crops of three pairs, the vis image as gt."""
    for pair, (a, b, f) in _pairs(["02.png", "17.png", "33.png"], crop=(96, 128)):
        want = _numpy_ref.compute(a, b, f, gt=b)
        got = metrics.compute(a, b, f, gt=b)
        assert set(got) == set(want) == set(metrics.METRICS)
        for name in metrics.METRICS:
            _assert_same(name, got[name], want[name], pair)


def test_torch_equals_numpy_full_size():
    """Full-size pairs for everything but FMI (its numpy version takes seconds per image)."""
    names = [n for n in metrics.METRICS if not n.startswith("FMI")]
    for pair, (a, b, f) in _pairs(["05.png", "11.png"], crop=None):
        want = _numpy_ref.compute(a, b, f, gt=a, names=names)
        got = metrics.compute(a, b, f, gt=a, names=names)
        for name in names:
            _assert_same(name, got[name], want[name], pair)


def test_batch_equals_single():
    names = list(metrics.METRICS)
    pairs = [imgs for _, imgs in _pairs(["03.png", "04.png"], crop=(64, 80))]
    a, b, f = (np.stack([p[i] for p in pairs]) for i in range(3))
    batch = metrics.compute_batch(a, b, f, gt=b, names=names)
    for n, (pa, pb, pf) in enumerate(pairs):
        single = metrics.compute(pa, pb, pf, gt=pb, names=names)
        for name in names:
            assert batch[name][n] == pytest.approx(single[name], rel=1e-10, abs=1e-12), name
