"""Fusion in tiles under a memory budget: the untiled image, refusals before allocating, progress."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import torch

from fusion import tiling, tiling_progress
from fusion.checkpoint import untrained_checkpoint
from fusion.data.dataset import to_image, to_tensor
from fusion.device import memory_format
from fusion.errors import DataError
from fusion.inference import fuse, fuse_chroma, prepare_for_inference
from fusion.io import read_image
from fusion.models import MODELS, build_model
from fusion.tiling_probe import Probe
from fusion.tiling_rules import Whole, rule_for

CASES = [
    (name, variant, released)
    for name, spec in MODELS.items()
    for variant in spec.sweep_variants()
    for released in (False, True)
]
# (crop h, w, tile side): two tiles, each with a halo cut off inside the image; sides of
# multiples of 8 keep CrossFuse's released sizing tileable; CADNIF's non-local variants fuse in
# 132x132 windows, so they need more than one window
SIZES = {"ufa": (48, 104, 56), "cadnif": (48, 104, 56), "crossfuse": (64, 136, 72)}
WINDOWED = (140, 100, 120)


def _model(name, variant, released=False):
    torch.manual_seed(0)
    return prepare_for_inference(build_model(name, variant, released=released))


def _pair(shared_data, model, h, w):
    """A real pair: a colour Lytro multi-focus pair for RGB models, TNO IR + visible for gray ones."""
    if getattr(model, "in_channels", 3) == 3:
        names, gray = ["mf/Lytro20/lytro-01-A.jpg", "mf/Lytro20/lytro-01-B.jpg"], False
    else:
        names, gray = ["irvis/TNO42/ir/01.png", "irvis/TNO42/vi/01.png"], True
    return [read_image(shared_data / n, gray=gray)[40 : 40 + h, 30 : 30 + w] for n in names]


def _untiled(model, planes):
    """The model called once on whole images, as fuse() did before tiling."""
    fmt = memory_format(model)
    with torch.inference_mode():
        return to_image(model(*[to_tensor(p)[None].contiguous(memory_format=fmt) for p in planes])[0].float())


@pytest.mark.parametrize("name,variant,released", CASES)
def test_tiles_give_the_untiled_image_for_every_model_and_variant(shared_data, name, variant, released):
    model = _model(name, variant, released)
    rule = rule_for(model)
    h, w, side = WINDOWED if type(rule).__name__ == "CADNIFWindows" else SIZES[name]
    pair = _pair(shared_data, model, h, w)
    untiled = _untiled(model, pair)
    if isinstance(rule, Whole):  # whole-image statistics: fused whole when it fits, --tile refused by name
        assert np.array_equal(fuse(model, pair), untiled)
        with pytest.raises(DataError, match=f"--tile {side}: .* cannot be tiled"):
            fuse(model, pair, tile=side)
        return
    plan = tiling.plan(model, rule, (h, w), 2, model.in_channels, torch.device("cpu"), tile=side)
    assert len(plan.tiles) > 1
    tiled = fuse(model, pair, tile=side)
    assert tiled.shape == untiled.shape
    assert np.abs(tiled.astype(int) - untiled.astype(int)).max() <= 1


def test_crossfuse_tiles_reproduce_the_shift_that_wraps_round_the_image(shared_data):
    """The shifted windows at the image's edges mix its opposite edges: tiles far narrower than
    the image (the halo cut off inside it) still give the untiled image."""
    model = _model("crossfuse", "s1-c1")
    pair = _pair(shared_data, model, 64, 312)
    plan = tiling.plan(model, rule_for(model), (64, 312), 2, 1, torch.device("cpu"), tile=96)
    assert any(t.x0 > 0 and t.x1 < 312 for t in plan.tiles)
    untiled = _untiled(model, pair).astype(int)
    diff = np.abs(fuse(model, pair, tile=96).astype(int) - untiled)
    # A freshly initialised CrossFuse divides by sums of local feature means near 0 at a few
    # pixels, where float32 rounding of any summation order (CPU kernels differ: AVX-512 or
    # AVX2) moves the output by many gray levels, untiled too. Where untiled float32 is the
    # float64 image within a gray level, the tiles must be too; a wrong shift would move whole
    # tiles' edges, far more than these few pixels.
    with torch.inference_mode():
        exact = model.double()(*[to_tensor(p)[None].double() for p in pair])[0]
    model.float()
    stable = np.abs(untiled - _to_gray_levels(exact)) <= 1
    assert stable.mean() > 0.9, f"only {stable.mean():.1%} of the pixels are well-conditioned"
    assert diff[stable].max() <= 1, f"{(diff[stable] > 1).sum()} well-conditioned pixels differ"


def _to_gray_levels(t: torch.Tensor) -> np.ndarray:
    """A float64 C x H x W image on 0..1 as to_image rounds it, without going through float32."""
    arr = (t.clamp(0, 1) * 255.0).round().to(torch.int64).numpy().transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


@pytest.fixture
def steady_process(monkeypatch):
    """The plan adds the process's resident size, read afresh on each call; the allocator returning
    pages (or a test before this one in the same process leaving them) moves it by more than
    the few MB these budgets leave, so these tests hold it at its size when they start."""
    size = tiling.current_rss()
    monkeypatch.setattr(tiling, "current_rss", lambda: size)
    return size


def test_auto_fuses_whole_when_it_fits_and_in_tiles_under_a_tight_budget(shared_data, steady_process):
    model = _model("ufa", "UFA")
    pair = _pair(shared_data, model, 96, 128)
    untiled = _untiled(model, pair)
    roomy = tiling.plan(model, rule_for(model), (96, 128), 2, 3, torch.device("cpu"))
    assert roomy.side is None and len(roomy.tiles) == 1
    assert np.array_equal(fuse(model, pair), untiled)
    budget = roomy.need - roomy.model_bytes // 3  # a third too little for the whole image
    tight = tiling.plan(model, rule_for(model), (96, 128), 2, 3, torch.device("cpu"), max_memory=budget)
    assert tight.side is not None and len(tight.tiles) > 1 and tight.need <= budget
    assert np.abs(fuse(model, pair, max_memory=budget).astype(int) - untiled.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "name,variant,side", [("ufa", "UFA", 56), ("cadnif", "CA-DRDB-AU-GRL-Net", None), ("crossfuse", "s1-c1", 72)]
)
def test_memory_estimate_covers_what_the_tiles_hold(shared_data, name, variant, side):
    """The plan's tensor estimate is at least the measured peak of live tensors while fusing."""
    model = _model(name, variant)
    h, w = WINDOWED[:2] if name == "cadnif" else SIZES[name][:2]
    pair = _pair(shared_data, model, h, w)
    plan = tiling.plan(model, rule_for(model), (h, w), 2, model.in_channels, torch.device("cpu"), tile=side or "auto")
    with Probe(w) as probe:
        fuse(model, pair, tile=side or "auto")
    assert 0 < probe.peak <= plan.model_bytes


def test_what_cannot_fit_is_refused_naming_the_size(shared_data, steady_process):
    model = _model("ufa", "UFA")
    pair = _pair(shared_data, model, 96, 120)
    with pytest.raises(DataError, match=r"fusing 120x96 with UFAFuse needs ~.* above --max-memory 2 MB"):
        fuse(model, pair, max_memory="2MB")
    cadnif = _model("cadnif", "CA-DRDB-AU-GRL-Net", released=True)
    gray = _pair(shared_data, cadnif, 96, 120)
    with pytest.raises(DataError, match="cannot be tiled: its BatchNorm normalises on the whole image"):
        fuse(cadnif, gray, max_memory=steady_process + 2**20)


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header says w x h but which holds (almost) no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fusion", "fuse", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_refuses_a_huge_pair_from_its_headers_before_decoding(tmp_path):
    """20000x20000: one line naming the size and the budget, exit 2, no traceback, no output. The
    files hold no pixels, so the refusal came from their headers, before any decoding."""
    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    for k in "ab":
        (tmp_path / f"{k}.png").write_bytes(_png_header(20000, 20000))
    proc = _cli(
        tmp_path / "a.png",
        tmp_path / "b.png",
        "--model",
        ckpt,
        "--out",
        tmp_path / "f.png",
        "--max-memory",
        "4GB",
        "--device",
        "cpu",
    )
    assert proc.returncode == 2, proc.stderr
    assert "fusing 20000x20000" in proc.stderr and "above --max-memory 4.0 GB" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "f.png").exists()


def test_cli_tiles_on_request_and_refuses_bad_tile_and_memory_values(shared_data, tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    paths = []
    for k in "AB":
        img = cv2.imread(str(shared_data / f"mf/Lytro20/lytro-01-{k}.jpg"))[:72, :104]
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), img)
    for tile in ("none", "40"):
        proc = _cli(
            *paths,
            "--model",
            ckpt,
            "--out",
            tmp_path / f"{tile}.png",
            "--tile",
            tile,
            "--max-memory",
            "2GB",
            "--device",
            "cpu",
        )
        assert proc.returncode == 0, proc.stderr
    whole, tiled = (cv2.imread(str(tmp_path / f"{t}.png")).astype(int) for t in ("none", "40"))
    assert np.abs(whole - tiled).max() <= 1
    for option, value, message in (
        ("--tile", "0", "--tile 0: a tile side must be at least"),
        ("--tile", "big", "--tile big: use auto, none or a tile side"),
        ("--max-memory", "lots", "--max-memory lots: give a size such as 4GB"),
    ):
        proc = _cli(*paths, "--model", ckpt, "--out", tmp_path / "x.png", option, value)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_multi_exposure_sequence_and_colour_on_gray_models_are_tiled_alike(shared_data):
    ufa = _model("ufa", "UFA")
    triple = [read_image(shared_data / f"mf/Lytro20/triples/lytro-01-{k}.jpg")[:72, :104] for k in "ABC"]
    assert np.abs(fuse(ufa, triple, tile=40).astype(int) - fuse(ufa, triple, tile=None).astype(int)).max() <= 1
    gray_model = _model("cadnif", "OD-Net")
    colour = [read_image(shared_data / f"mf/Lytro20/lytro-01-{k}.jpg")[:72, :104] for k in "AB"]
    tiled, whole = fuse(gray_model, colour, tile=32), fuse(gray_model, colour, tile=None)
    assert tiled.ndim == 3 and np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_chroma_in_strips_is_the_chroma_of_the_whole_image():
    rng = np.random.default_rng(0)
    ycrcb = [rng.integers(0, 256, (23, 17, 3), dtype=np.uint8) for _ in range(3)]
    assert np.array_equal(fuse_chroma(ycrcb, rows=5), fuse_chroma(ycrcb, rows=1000))


def test_progress_bar_counts_tiles_only_once_a_fusion_is_slow(shared_data, monkeypatch):
    from rich.console import Console

    model = _model("ufa", "UFA")
    pair = _pair(shared_data, model, 72, 104)
    monkeypatch.setattr(tiling_progress, "PROGRESS_DELAY", 60.0)
    quick = io.StringIO()
    fuse(model, pair, tile=40, progress=Console(file=quick, force_terminal=True, width=120))
    assert quick.getvalue() == ""  # done before the bar's delay
    monkeypatch.setattr(tiling_progress, "PROGRESS_DELAY", 0.0)
    slow = io.StringIO()
    plan = tiling.plan(model, rule_for(model), (72, 104), 2, 3, torch.device("cpu"), tile=40)
    fuse(model, pair, tile=40, progress=Console(file=slow, force_terminal=True, width=120))
    assert f"{plan.passes}/{plan.passes}" in slow.getvalue() and "tiles" in slow.getvalue()


@pytest.mark.slow
def test_a_12_megapixel_pair_fuses_within_4_gb(shared_data, tmp_path):
    """Peak RSS of `fusion fuse --max-memory 4GB` on a 4000x3000 pair (the main job's UFA-Fuse)."""
    ckpt = untrained_checkpoint(tmp_path / "ufa.pt", "ufa", "UFA")
    paths = []
    for k in "AB":
        img = cv2.imread(str(shared_data / f"mf/Lytro20/lytro-01-{k}.jpg"))
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), cv2.resize(img, (4000, 3000), interpolation=cv2.INTER_CUBIC))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusion",
            "fuse",
            *map(str, paths),
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "f.png"),
            "--max-memory",
            "4GB",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert usage.ru_maxrss * 1024 <= 4 * tiling.GB
    assert cv2.imread(str(tmp_path / "f.png")).shape == (3000, 4000, 3)
