"""The core (models, losses, trainer, metrics, baselines, evaluation, inference and the
`fusion train --out` / `fuse` / `evaluate` commands) on a machine without Ray, MLflow,
Prefect or DVC: an offline GPU machine has no room for them (issue 18).

Each check runs in a subprocess whose `sitecustomize` makes those packages, and every
submodule of them, impossible to import, the way an install without them behaves; the
block reaches the subprocesses it starts too (DVC's command line is `python -m dvc`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[2]
STACK = ("ray", "mlflow", "prefect", "dvc")

BLOCKER = f"""
import sys

STACK = {STACK!r}


class _NotInstalled:
    # first on sys.meta_path: found by nobody, as when the package was never installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in STACK:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed here)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""

CORE = [
    "fusion.models",
    "fusion.losses",
    "fusion.train.loop",
    "fusion.train.compiled",
    "fusion.metrics",
    "fusion.baselines",
    "fusion.evaluate",
    "fusion.inference",
    "fusion.tiling",
    "fusion.config",
    "fusion.cli",
    "fusion.pipeline",
    "fusion.data.training",
    "fusion.data.synth_multifocus",
]


@pytest.fixture
def without_stack(tmp_path):
    """Environment of a subprocess in which the orchestration stack is not installed."""
    site = tmp_path / "no-stack"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _python(env, code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _fusion(env, *args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusion", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_the_block_makes_the_stack_unimportable(without_stack):
    proc = _python(
        without_stack,
        f"""
        import importlib
        for name in {STACK!r} + ("mlflow.pyfunc", "ray.tune", "prefect.flows", "dvc.api"):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                continue
            raise SystemExit(f"{{name}} imported")
        print("blocked")
    """,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "blocked", proc.stderr


def test_core_modules_import_and_run_without_the_stack(without_stack):
    """Every model and variant runs forward, its loss backward, the metrics and baselines score a pair."""
    proc = _python(
        without_stack,
        f"""
        import importlib, json, sys
        for name in {CORE!r}:
            importlib.import_module(name)
        import numpy as np, torch
        from fusion import baselines, metrics
        from fusion.models import MODELS, build_loss, build_model
        from fusion.config import load_config

        cfg = load_config({str(REPO)!r}, "tiny")      # params.yaml's nightly cron is checked by Prefect when present
        ran = []
        for model, spec in sorted(MODELS.items()):
            for variant in spec.variants:
                torch.manual_seed(0)
                net = build_model(model, variant)
                stage = getattr(net, "stages", ("single",))[-1]
                if stage == "fusion":
                    net.freeze_encoders()
                x = torch.rand(1, net.in_channels, 32, 32)
                y = torch.rand(1, net.in_channels, 32, 32)
                loss_fn = build_loss(model, cfg.train.model_copy(update={{"model": model}}))
                pred = net(x, y)
                losses = loss_fn(pred, x) if spec.supervised else loss_fn(pred, x, y)
                losses["loss"].backward()
                assert torch.isfinite(losses["loss"]), (model, variant)
                ran.append(f"{{model}}/{{variant}}")
        rng = np.random.default_rng(0)
        a, b = (rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(2))
        fused = {{name: fn([a, b]) for name, fn in baselines.BASELINES.items()}}
        scores = metrics.compute(a, b, fused["average"])
        print(json.dumps({{"ran": ran, "baselines": sorted(fused), "metrics": scores,
                          "stack": sorted(m for m in sys.modules if m.partition(".")[0] in {STACK!r})}}))
    """,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    from fusion.models import MODELS

    assert len(out["ran"]) == sum(len(s.variants) for s in MODELS.values())
    assert "average" in out["baselines"] and len(out["baselines"]) >= 5
    assert out["metrics"] and all(math.isfinite(v) for v in out["metrics"].values())
    assert out["stack"] == []


def _workspace(tmp_path: Path, prepared: Path | None) -> Path:
    from fusion.pipeline import new_workspace

    ws = new_workspace(tmp_path / "ws", REPO)
    if prepared is not None:
        import shutil

        shutil.copytree(prepared, ws / "prepared" / "multifocus_synthetic")
    return ws


def _lytro_crops(shared_data: Path, folder: Path, pairs: int = 2, side: int = 64) -> tuple[Path, Path]:
    """A/B folders of small crops of real Lytro pairs, matched by file name."""
    a, b = folder / "a", folder / "b"
    a.mkdir(parents=True)
    b.mkdir()
    for k in range(1, pairs + 1):
        for src, dst in (("A", a), ("B", b)):
            img = cv2.imread(str(shared_data / "mf" / "Lytro20" / f"lytro-{k:02d}-{src}.jpg"))
            cv2.imwrite(str(dst / f"{k:02d}.png"), img[100 : 100 + side, 120 : 120 + side])
    return a, b


def test_train_out_fuse_and_evaluate_run_without_the_stack(without_stack, tmp_path, tiny_prepared, shared_data):
    ws = _workspace(tmp_path, tiny_prepared)
    out = tmp_path / "ckpt"
    proc = _fusion(without_stack, "train", "--profile", "tiny", "--workspace", ws, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DVC is not installed" in proc.stderr  # the user is told the data was not versioned
    assert not (ws / ".dvc").exists()
    import torch

    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["model"] == "ufa" and payload["epoch"] == 2

    a, b = _lytro_crops(shared_data, tmp_path / "pairs")
    fused = tmp_path / "fused.png"
    proc = _fusion(
        without_stack,
        "fuse",
        a / "01.png",
        b / "01.png",
        "--model",
        out / "best.pt",
        "--out",
        fused,
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cv2.imread(str(fused)).shape == (64, 64, 3)

    scores = tmp_path / "scores.json"
    proc = _fusion(
        without_stack,
        "evaluate",
        "--source-a",
        a,
        "--source-b",
        b,
        "--model",
        out / "best.pt",
        "--baseline",
        "average",
        "--metric",
        "EN",
        "--metric",
        "Qabf",
        "--json",
        scores,
        "--out",
        tmp_path / "report",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(scores.read_text())
    assert set(result["means"]) == {"UFA-Fuse (UFA)", "average"}
    assert all(math.isfinite(v) for means in result["means"].values() for v in means.values())
    assert (tmp_path / "report" / "table.md").read_text().count("|") > 4


def test_train_out_without_dvc_or_prepared_data_says_how_to_build_it(without_stack, tmp_path):
    ws = _workspace(tmp_path, None)
    out = tmp_path / "ckpt"
    proc = _fusion(without_stack, "train", "--profile", "tiny", "--workspace", ws, "--out", out, cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) <= 3  # one line, wrapped by the terminal at most
    assert "multifocus_synthetic" in line and "fusion data synth-multifocus" in line and "train.source" in line
    assert not out.exists() and not (ws / ".dvc").exists() and not (ws / "prepared").exists()


def test_a_command_that_needs_the_stack_names_it_in_one_line(without_stack, tmp_path):
    """`fusion report` reads MLflow: on a core install it used to end in a ModuleNotFoundError traceback."""
    ws = _workspace(tmp_path, None)
    proc = _fusion(
        without_stack, "report", "--experiment", "fusionflow", "--workspace", ws, "--out", tmp_path / "r", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "this command needs MLflow (mlflow is not installed)" in proc.stderr
