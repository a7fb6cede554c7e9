"""Evaluation of models and baselines on test sets; checkpoints by path or MLflow URI; bad input."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from fusion import evaluate as ev
from fusion.checkpoint import resolve_checkpoint, untrained_checkpoint
from fusion.errors import ConfigError, DataError
from fusion.inference import fuse, fuse_chroma, load_model
from fusion.models import build_model

QUICK = ["EN", "SD", "Qabf", "SSIM", "SSIM_gt", "PSNR_gt"]


def _checkpoint(path, model="ufa", variant="UFA", poison=False):
    if not poison:
        return untrained_checkpoint(path, model, variant)
    state = build_model(model, variant).state_dict()
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    return untrained_checkpoint(path, model, variant, state_dict=nan)


def test_model_and_baselines_on_a_prepared_split(tiny_prepared, tmp_path):
    net, payload = load_model(_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt"))
    test_set = ev.prepared_test_set(tiny_prepared)
    methods = {"UFA": ev.model_method(net, "cpu"), **ev.baseline_methods(["average", "choose_max_gradient"])}
    seen = []
    result, samples = ev.evaluate_methods(
        test_set, methods, QUICK, keep_images=2, progress=lambda d, t: seen.append((d, t)), warm_up=["UFA"]
    )
    assert result.methods == ["UFA", "average", "choose_max_gradient"]
    assert len(result.rows) == 3 * len(test_set) and seen[-1] == (len(test_set), len(test_set))
    for m in result.methods:
        assert set(result.means[m]) == set(QUICK)
        assert all(math.isfinite(v) for v in result.means[m].values())
        assert result.seconds_per_pair[m] > 0
    assert len(samples) == 2 and set(samples[0]["fused"]) == set(result.methods)
    # means are the means of the per-pair rows
    rows = [r["EN"] for r in result.rows if r["method"] == "average"]
    assert result.means["average"]["EN"] == pytest.approx(np.mean(rows))

    paths = ev.write_reports(result, tmp_path / "eval")
    table = paths["table"].read_text()
    best_ssim = max(result.methods, key=lambda m: result.means[m]["SSIM_gt"])
    assert f"| {best_ssim} |" in table and f"**{result.means[best_ssim]['SSIM_gt']:.4f}**" in table
    csv_rows = paths["table_csv"].read_text().splitlines()
    assert csv_rows[0].startswith("method,EN,SD") and csv_rows[-1].startswith("best,")
    written = ev.save_samples(samples, tmp_path / "eval" / "samples", test_set.source_labels)
    index = json.loads((tmp_path / "eval" / "samples" / "index.json").read_text())
    assert index["labels"]["UFA"] == "UFA" and "ground truth" in index["inputs"] and len(written) == 2 * 6 + 1


def test_all_metrics_resolve_by_test_set_kind():
    with_gt = ev.resolve_metrics(None, has_gt=True)
    assert {"SSIM_gt", "PSNR_gt", "L1_gt", "FMI_w", "Qc"} <= set(with_gt)
    assert not {"SSIM_gt", "PSNR_gt", "L1_gt"} & set(ev.resolve_metrics(["all"], has_gt=False))
    with pytest.raises(ConfigError, match="unknown metric.*'ENN'"):
        ev.resolve_metrics(["ENN"], has_gt=True)
    with pytest.raises(ConfigError, match="need a ground truth"):
        ev.resolve_metrics(["PSNR_gt"], has_gt=False)
    with pytest.raises(ConfigError, match="baseline.*'avg'.*valid"):
        ev.baseline_methods(["avg"])


def test_checkpoint_from_file_folder_and_mlflow_uri(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    ckpt = _checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert resolve_checkpoint(ckpt) == ckpt
    assert resolve_checkpoint(tmp_path / "run") == ckpt
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp).info.run_id
    client.log_artifact(run, str(ckpt), "checkpoints")
    for spec in (f"runs:/{run}", f"runs:/{run}/checkpoints/best.pt", f"runs:/{run}/checkpoints"):
        local = resolve_checkpoint(spec, tmp_path / f"dl-{len(spec)}")
        assert local.name == "best.pt" and local.read_bytes() == ckpt.read_bytes()
    net, payload = load_model(f"runs:/{run}")
    assert payload["model"] == "ufa" and "state_dict" not in payload
    with pytest.raises(DataError, match="cannot download a checkpoint"):
        resolve_checkpoint(f"runs:/{'0' * 32}")
    with pytest.raises(DataError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(DataError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_a_model_that_outputs_nan_is_named_not_scored(tiny_prepared, tmp_path):
    net, _ = load_model(_checkpoint(tmp_path / "bad.pt", poison=True))
    with pytest.raises(DataError, match=r"UFA on pair \S+: the model's output contains NaN"):
        ev.evaluate_methods(ev.prepared_test_set(tiny_prepared), {"UFA": ev.model_method(net, "cpu")}, ["EN"])


def test_an_output_of_the_wrong_size_is_named(tiny_prepared):
    crop = {"cropper": lambda srcs: srcs[0][:-3]}
    with pytest.raises(DataError, match=r"cropper produced a \(\d+, \d+\) image for pair"):
        ev.evaluate_methods(ev.prepared_test_set(tiny_prepared), crop, ["EN"])


def test_constant_images_give_documented_values_never_nan():
    flat_a, flat_b = np.full((32, 32), 90, np.uint8), np.full((32, 32), 90, np.uint8)
    values = ev.score([flat_a, flat_b], flat_a.copy(), flat_a.copy(), ev.resolve_metrics(None, True))
    assert not any(math.isnan(v) for v in values.values())
    assert values["EN"] == 0 and values["SD"] == 0 and values["CC"] == 0 and values["PSNR"] == math.inf
    # a constant fused image against textured sources: finite everywhere
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (32, 32), dtype=np.uint8), rng.integers(0, 255, (32, 32), dtype=np.uint8)
    values = ev.score([a, b], np.full((32, 32), 7, np.uint8), None, ev.resolve_metrics(None, False))
    assert all(math.isfinite(v) for v in values.values()), values
    # and the tables print them without NaN
    table = ev.markdown_table({"flat": {"PSNR": math.inf, "EN": 0.0}}, ["PSNR", "EN"])
    assert "nan" not in table.lower() and "inf" in table


def test_gray_model_fuses_luminance_and_keeps_the_colour_of_the_colour_source():
    torch.manual_seed(0)
    from fusion.models.ufa import UFAFuse

    net = UFAFuse(in_channels=1, out_channels=1).eval()
    rng = np.random.default_rng(1)
    ir = rng.integers(0, 255, (21, 33), dtype=np.uint8)
    vis = rng.integers(0, 255, (21, 33, 3), dtype=np.uint8)
    out = fuse(net, [ir, vis])
    assert out.shape == (21, 33, 3)
    got = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(int)
    want = cv2.cvtColor(vis, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(int)
    in_gamut = ((out > 0) & (out < 255)).all(axis=2)  # elsewhere RGB clipping moves the chroma
    assert in_gamut.mean() > 0.5
    assert np.abs(got - want)[in_gamut].max() <= 2  # YCrCb -> RGB -> YCrCb rounding only
    assert fuse(net, [ir, ir]).shape == (21, 33)  # gray in, gray out
    # chroma rule: neutral sources have no say, two coloured ones are weighted by saturation
    neutral = np.full((1, 1, 3), 128, np.uint8)
    red = np.array([[[100, 200, 60]]], np.uint8)
    assert fuse_chroma([neutral, red]).tolist() == red[..., 1:].tolist()
    assert fuse_chroma([neutral, neutral]).tolist() == [[[128, 128]]]


def test_folder_test_set_names_missing_partners_and_size_mismatch(shared_data, tmp_path):
    a, b = tmp_path / "ir", tmp_path / "vi"
    for d, sub in ((a, "ir"), (b, "vi")):
        d.mkdir()
        for n in ("01.png", "02.png"):
            shutil.copy2(shared_data / "irvis/TNO42" / sub / n, d / n)
    (b / "02.png").unlink()
    with pytest.raises(DataError, match=r"--source-b .*no partner for \['02'\]"):
        ev.folder_test_set(a, b)
    img = cv2.imread(str(a / "02.png"))
    cv2.imwrite(str(b / "02.png"), img[:-4])
    test_set = ev.folder_test_set(a, b)
    with pytest.raises(DataError, match=r"pair 02: images differ in size"):
        ev.evaluate_methods(test_set, ev.baseline_methods(["average"]), ["EN"])


def test_missing_fused_images_fail_unless_allowed(shared_data, tmp_path):
    dirs = {k: tmp_path / k for k in ("ir", "vi", "fused")}
    for d in dirs.values():
        d.mkdir()
    for n in ("01.png", "02.png"):
        shutil.copy2(shared_data / "irvis/TNO42/ir" / n, dirs["ir"] / n)
        shutil.copy2(shared_data / "irvis/TNO42/vi" / n, dirs["vi"] / n)
    shutil.copy2(shared_data / "irvis/TNO42_fused/SeAFusion/01.png", dirs["fused"] / "01.png")
    with pytest.raises(DataError, match=r"missing fused image\(s\) for \['02'\].*--allow-missing"):
        ev.score_folders(dirs["ir"], dirs["vi"], dirs["fused"], metric_names=["EN"])
    result = ev.score_folders(dirs["ir"], dirs["vi"], dirs["fused"], metric_names=["EN"], allow_missing=True)
    assert result["count"] == 1 and result["sources_without_fused_image"] == ["02"]


def test_cli_evaluates_a_checkpoint_with_baselines_and_writes_reports(tiny_prepared, tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt")
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "evaluate",
            "--model",
            str(ckpt),
            "--prepared",
            str(tiny_prepared),
            "-b",
            "average",
            "-b",
            "dwt",
            "-m",
            "EN",
            "-m",
            "SSIM_gt",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "s.json"),
            "--figure-pairs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["methods"] == ["UFA-Fuse (UFA)", "average", "dwt"] and summary["metrics"] == ["EN", "SSIM_gt"]
    assert {"table.md", "table.csv", "per_pair.csv", "summary.json", "figure.png", "samples"} <= {
        p.name for p in out.iterdir()
    }
    assert cv2.imread(str(out / "figure.png")) is not None

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "evaluate",
            "--model",
            str(ckpt),
            "--prepared",
            str(tiny_prepared),
            "-b",
            "median",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "baseline(s) ['median'] unknown" in bad.stderr
    assert not (tmp_path / "x").exists()
