"""Evaluate a trained model beside classical baselines on a prepared test split.

Pure library code: returns numbers and images; the pipeline decides where they are logged.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from fusion import metrics as fm
from fusion.baselines import fuse_baseline
from fusion.data.dataset import PairedFolder, to_image, to_tensor
from fusion.errors import DataError
from fusion.io import write_bytes_atomic, write_image

MODEL_METHOD = "model"


@dataclass
class EvalResult:
    methods: list[str]
    metric_names: list[str]
    rows: list[dict] = field(default_factory=list)          # one per (pair, method)
    means: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds_per_pair: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    def to_json(self) -> dict:
        return {"methods": self.methods, "metrics": self.metric_names, "means": self.means,
                "seconds_per_pair": self.seconds_per_pair, "device": self.device, "pairs": self.rows}


@torch.no_grad()
def fuse_with_model(model: torch.nn.Module, sources: list[np.ndarray], device: torch.device) -> np.ndarray:
    tensors = [to_tensor(s)[None].to(device) for s in sources]
    return to_image(model(*tensors)[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    data_root: str | Path,
    metric_names: list[str],
    baselines: list[str],
    model: torch.nn.Module | None = None,
    model_label: str = MODEL_METHOD,
    device: str | torch.device = "cpu",
    split: str = "test",
    keep_images: int = 0,
) -> tuple[EvalResult, list[dict[str, np.ndarray]]]:
    """Score the model (if given) and each baseline on every pair of `split`.

    Returns the result and, for the first `keep_images` pairs, the images needed for a grid.
    """
    device = torch.device(device)
    data = PairedFolder(data_root, split)
    methods = ([model_label] if model is not None else []) + list(baselines)
    result = EvalResult(methods, list(metric_names), device=str(device))
    seconds = {m: 0.0 for m in methods}
    samples: list[dict[str, np.ndarray]] = []
    if model is not None:  # warm-up: first call pays for allocator and kernel selection
        first = data.load(0)
        fuse_with_model(model, [first["near"], first["far"]], device)
    for i, pid in enumerate(data.ids):
        images = data.load(i)
        near, far, gt = images["near"], images["far"], images["gt"]
        fused_by: dict[str, np.ndarray] = {}
        for method in methods:
            _sync(device)
            start = time.perf_counter()
            if method == model_label:
                fused = fuse_with_model(model, [near, far], device)
                _sync(device)
            else:
                fused = fuse_baseline(method, [near, far])
            seconds[method] += time.perf_counter() - start
            if fused.shape != gt.shape:
                raise DataError(f"{method} produced {fused.shape} for pair {pid}, sources are {gt.shape}")
            values = fm.compute(near, far, fused, gt=gt, names=metric_names)
            result.rows.append({"pair": pid, "method": method, **values})
            fused_by[method] = fused
        if i < keep_images:
            samples.append({"id": pid, "near": near, "far": far, "gt": gt, **fused_by})
    result.seconds_per_pair = {m: s / len(data) for m, s in seconds.items()}
    for method in methods:
        rows = [r for r in result.rows if r["method"] == method]
        result.means[method] = {k: float(np.mean([r[k] for r in rows])) for k in metric_names}
    return result, samples


def best_by_metric(result: EvalResult) -> dict[str, str]:
    out = {}
    for name in result.metric_names:
        higher = fm.METRICS[name].higher_is_better
        pick = max if higher else min
        out[name] = pick(result.methods, key=lambda m: result.means[m][name])
    return out


def write_reports(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    """summary.json, per_pair.csv and a Markdown table (best value per metric in bold)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out_dir / "summary.json", "per_pair": out_dir / "per_pair.csv", "table": out_dir / "table.md"}
    write_bytes_atomic(paths["summary"], (json.dumps(result.to_json(), indent=2) + "\n").encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["pair", "method", *result.metric_names])
    writer.writeheader()
    writer.writerows(result.rows)
    write_bytes_atomic(paths["per_pair"], buf.getvalue().encode())
    write_bytes_atomic(paths["table"], markdown_table(result).encode())
    return paths


def markdown_table(result: EvalResult) -> str:
    best = best_by_metric(result)
    arrows = {n: ("↑" if fm.METRICS[n].higher_is_better else "↓") for n in result.metric_names}
    head = "| method | " + " | ".join(f"{n} {arrows[n]}" for n in result.metric_names) + " | s/pair |\n"
    head += "|---" * (len(result.metric_names) + 2) + "|\n"
    body = ""
    for m in result.methods:
        cells = [f"**{result.means[m][n]:.4f}**" if best[n] == m else f"{result.means[m][n]:.4f}" for n in result.metric_names]
        body += f"| {m} | " + " | ".join(cells) + f" | {result.seconds_per_pair[m]:.4f} |\n"
    return head + body


def grid_image(samples: list[dict[str, np.ndarray]], columns: list[str], labels: list[str] | None = None) -> np.ndarray:
    """Rows of pairs, columns e.g. near | far | fused | ground truth, with a header strip."""
    if not samples:
        raise ValueError("grid_image needs at least one sample")
    labels = labels or columns
    cell_h = max(s[columns[0]].shape[0] for s in samples)
    cell_w = max(s[columns[0]].shape[1] for s in samples)
    pad = 4
    header = 22
    canvas = np.full((header + len(samples) * (cell_h + pad), len(columns) * (cell_w + pad), 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(canvas, label, (j * (cell_w + pad) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, s in enumerate(samples):
        for j, col in enumerate(columns):
            img = s[col]
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            y, x = header + i * (cell_h + pad), j * (cell_w + pad)
            canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
    return canvas


def save_grid(path: Path, samples: list[dict[str, np.ndarray]], fused_key: str, fused_label: str) -> Path:
    grid = grid_image(samples, ["near", "far", fused_key, "gt"], ["near (synthetic)", "far (synthetic)", fused_label, "ground truth"])
    write_image(path, grid)
    return path


def score_folders(
    source_a: Path, source_b: Path, fused: Path, gt: Path | None = None, metric_names: list[str] | None = None,
    device: str = "cpu",
) -> dict:
    """Score already-fused images: pairs matched by file name across the folders.

    Every fused image must have both sources (and a ground truth when `gt` is given), with
    the same height and width; anything else is an error naming the files.
    """
    from fusion.io import list_images, read_image

    folders = {"source-a": Path(source_a), "source-b": Path(source_b), "fused": Path(fused)}
    if gt is not None:
        folders["gt"] = Path(gt)
    for label, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"--{label} {folder}: folder not found")
    by_stem = {label: {p.stem: p for p in list_images(folder)} for label, folder in folders.items()}
    names = sorted(by_stem["fused"])
    if not names:
        raise DataError(f"--fused {folders['fused']}: no images found")
    for label in folders:
        if label != "fused":
            missing = [n for n in names if n not in by_stem[label]]
            if missing:
                raise DataError(f"--{label} {folders[label]}: no image for fused file(s) {missing[:10]}"
                                f"{' ...' if len(missing) > 10 else ''}")
    unfused = sorted(set(by_stem["source-a"]) - set(names))
    load = lambda name: {label: read_image(by_stem[label][name]) for label in folders}  # noqa: E731
    for name in names:  # validate every pair before the (slow) scoring starts
        shapes = {label: im.shape[:2] for label, im in load(name).items()}
        if len(set(shapes.values())) != 1:
            raise DataError(f"{by_stem['fused'][name]}: size {shapes['fused']} differs from its sources {shapes}")
    pairs: dict[str, dict[str, float]] = {}
    for name in names:
        imgs = load(name)
        pairs[name] = fm.compute(imgs["source-a"], imgs["source-b"], imgs["fused"], gt=imgs.get("gt"),
                                 names=metric_names, device=device)
    metrics = list(next(iter(pairs.values())))
    means = {m: float(np.mean([p[m] for p in pairs.values()])) for m in metrics}
    return {"convention": "docs/metrics.md", "metrics": metrics, "means": means, "pairs": pairs,
            "count": len(pairs), "sources_without_fused_image": unfused}
