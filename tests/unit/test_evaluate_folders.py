"""`fusion evaluate` on folders of already-fused images (no model)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fusion.errors import DataError
from fusion.evaluate import score_folders


def _tno_subset(shared_data, tmp_path, n=3):
    dirs = {k: tmp_path / k for k in ("ir", "vi", "fused")}
    for d in dirs.values():
        d.mkdir()
    for i in range(1, n + 1):
        name = f"{i:02d}.png"
        shutil.copy2(shared_data / "irvis/TNO42/ir" / name, dirs["ir"] / name)
        shutil.copy2(shared_data / "irvis/TNO42/vi" / name, dirs["vi"] / name)
        shutil.copy2(shared_data / "irvis/TNO42_fused/SeAFusion" / name, dirs["fused"] / name)
    return dirs


def test_cli_scores_published_fused_images_and_matches_the_reference(shared_data, tmp_path):
    dirs = _tno_subset(shared_data, tmp_path)
    out = tmp_path / "scores.json"
    metrics = [a for m in ("EN", "SD", "MI", "SCD", "Qabf") for a in ("--metric", m)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion",
            "evaluate",
            "--source-a",
            str(dirs["ir"]),
            "--source-b",
            str(dirs["vi"]),
            "--fused",
            str(dirs["fused"]),
            "--json",
            str(out),
            *metrics,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    ref = json.loads((shared_data.parent / "reference/metrics_tno42.json").read_text())["images"]
    assert result["count"] == 3 and result["metrics"] == ["EN", "SD", "MI", "SCD", "Qabf"]
    for name in ("01", "02", "03"):
        for metric in ("EN", "SD", "MI", "SCD"):
            assert result["pairs"][name][metric] == pytest.approx(ref[f"SeAFusion/{name}.png"][metric], rel=1e-6)
        assert result["pairs"][name]["Qabf"] == pytest.approx(ref[f"SeAFusion/{name}.png"]["Qabf"], rel=1e-4)
    assert result["means"]["EN"] == pytest.approx(np.mean([result["pairs"][n]["EN"] for n in ("01", "02", "03")]))


def test_missing_and_mis_sized_fused_images_are_named(shared_data, tmp_path):
    dirs = _tno_subset(shared_data, tmp_path)
    (dirs["ir"] / "02.png").unlink()
    with pytest.raises(DataError, match=r"--source-a .*no image for fused file\(s\) \['02'\]"):
        score_folders(dirs["ir"], dirs["vi"], dirs["fused"])
    shutil.copy2(dirs["vi"] / "02.png", dirs["ir"] / "02.png")
    img = cv2.imread(str(dirs["fused"] / "03.png"))
    cv2.imwrite(str(dirs["fused"] / "03.png"), img[:-5])
    with pytest.raises(DataError, match=r"03.png: size .* differs from its sources"):
        score_folders(dirs["ir"], dirs["vi"], dirs["fused"])
    with pytest.raises(DataError, match="--gt .*folder not found"):
        score_folders(dirs["ir"], dirs["vi"], dirs["fused"], gt=tmp_path / "nope")
