"""The short GPU quality run of `python -m benchmarks.run gpu` (jobs: quality).

  UFA-Fuse  3/5 of the budget (default 5 min: 3 min) on synthetic multi-focus pairs (paper
            Eq. 11) from the embedded photographs, plus RoadScene's and MSRS's visible images
            where the data is here; scored on the synthetic test split (ground truth: SSIM_gt,
            PSNR_gt) and on Lytro where it is here
  CADNIF    2/5 of the budget (2 min) on RoadScene's training split, scored on TNO (else
            RoadScene's test split); skipped, with the reason as a row, without RoadScene

each beside the five classical baselines, with each paper's metrics. The data is read from
GPU_CHECK_DATA (a folder laid out as ../shared/data: irvis/RoadScene221, irvis/TNO42,
irvis/MSRS5, mf/Lytro20), else ../shared/data beside the checkout. Offline GPU machines
often have none of it: the UFA-Fuse job needs none (scikit-image ships the photographs).
The time is training time: data synthesis and scoring come on top (a minute at most).
Tables go to GPU_QUALITY_TABLES (default benchmarks/scratch/gpu-quality/tables.md) for
benchmarks/gpu_summary.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / "benchmarks" / "scratch" / "gpu-quality"
SHARES = {"ufa": 0.6, "cadnif": 0.4}
METRICS = {
    "ufa": ["AG", "SD", "EN", "VIF", "Qabf", "Qc", "Qm"],  # UFA-Fuse's paper
    "cadnif": ["EN", "SCD", "SD", "Qabf", "MI", "FMI_pixel", "CC"],
}


def data_root() -> Path:
    return Path(os.environ.get("GPU_CHECK_DATA") or REPO.parent / "shared" / "data")


def _row(measure: str, value: float, unit: str = "") -> dict:
    return {"benchmark": "gpu", "measure": f"quality {measure}", "value": float(value), "unit": unit}


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} gpu quality: {text}", flush=True)


def run(
    device: torch.device, minutes: float | None = None, test_pairs: int | None = None, quick: bool = False
) -> list[dict]:
    from fusion.io import write_bytes_atomic

    minutes = minutes if minutes is not None else (0.2 if quick else 5.0)
    test_pairs = test_pairs if test_pairs is not None else (2 if quick else 8)
    data = data_root()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    rows, tables = [], []
    for job in (_ufa, _cadnif):
        name = job.__name__.strip("_")
        budget = minutes * SHARES[name] * 60
        out = job(device, budget, test_pairs, quick, data)
        if isinstance(out, str):  # skipped: why
            _say(f"{name}: skipped: {out}")
            rows.append(_row(f"{name} skipped: {out}", 1, "bool"))
            tables.append(f"## {name}\n\nSkipped: {out}.\n")
            continue
        job_rows, job_tables = out
        rows += job_rows
        tables += job_tables
    write_bytes_atomic(Path(os.environ.get("GPU_QUALITY_TABLES") or SCRATCH / "tables.md"), "\n".join(tables).encode())
    return rows


def _config(model: str, variant: str, task: str, device: torch.device, recipe: dict, sources: dict | None = None):
    from fusion.config import load_config

    amp = "bfloat16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "float16"
    train = {
        "model": model,
        "variant": variant,
        "task": task,
        "epochs": 100_000,
        "steps_per_epoch": 10,
        "lr_step_epochs": 100_000,
        "device": device.type,
        "amp": device.type == "cuda",
        "amp_dtype": amp,
        **recipe,
    }
    return load_config(REPO, None, {"sources": sources or {}, "train": train})


def _fit(cfg, data_root: Path | None, folder: Path, seconds: float) -> tuple[Path, dict]:
    from fusion.checkpoint import checkpoint_in
    from fusion.train.loop import Trainer

    for stale in folder.glob("*.pt"):  # this job's own scratch from an earlier run: start over
        stale.unlink()
    start = time.time()
    trainer = Trainer(cfg, data_root)
    state = trainer.fit(folder, deadline=start + seconds)
    if state.global_step == 0:  # the budget ended before the first epoch: train one anyway
        trainer.tcfg = trainer.tcfg.model_copy(update={"epochs": 1})
        state = trainer.fit(folder)
    return checkpoint_in(folder), {"steps": state.global_step, "minutes": (time.time() - start) / 60}


def _first(test_set, n: int | None):
    from fusion.evaluate import TestSet

    ids = test_set.ids[:n] if n else test_set.ids
    return TestSet(test_set.name, ids, test_set.source_labels, {i: test_set._files[i] for i in ids}, test_set.has_gt)


def _score(key: str, ckpt: Path, info: dict, test_set, names: list[str], device: torch.device, budget: float):
    from fusion.evaluate import baseline_methods, evaluate_methods, markdown_table, model_method
    from fusion.inference import load_model

    methods = baseline_methods(["all"])
    model, _ = load_model(ckpt, device)
    label = f"{key} ({info['minutes']:.1f} min, {info['steps']} steps)"
    methods[label] = model_method(model, device)
    result, _ = evaluate_methods(test_set, methods, names, device, warm_up=[label])
    rows = [
        _row(f"{key} on {test_set.name}: {method} {metric}", value)
        for method, values in result.means.items()
        for metric, value in values.items()
    ]
    title = (
        f"## {key} on {test_set.name}, {len(test_set)} pairs ({time.strftime('%Y-%m-%d')}, {device})\n\n"
        f"Trained {info['minutes']:.2f} min of a {budget / 60:.2f} min budget ({info['steps']} steps)."
    )
    return rows, markdown_table(result.means, result.metric_names, result.seconds_per_pair, title)


def _synthetic(quick: bool, data: Path) -> Path:
    from fusion.data.embedded import export_embedded, is_complete
    from fusion.data.sources import load_photos
    from fusion.data.synth_multifocus import SynthInput, SynthParams, build_records

    out = SCRATCH / ("synthetic-quick" if quick else "synthetic")
    if (out / "manifest.json").is_file():
        return out
    raw = SCRATCH / "embedded"
    if not is_complete(raw):
        export_embedded(raw)
    inputs = [SynthInput(f"embedded-{r.id}", r.image, r.mask) for r in load_photos(raw)]
    if not quick:
        for folder, prefix in ((data / "irvis/RoadScene221/vi", "roadscene"), (data / "irvis/MSRS5/vi", "msrs")):
            if folder.is_dir():
                inputs += [
                    SynthInput(f"{prefix}-{p.stem}", p, None)
                    for p in sorted(folder.iterdir())
                    if p.suffix.lower() in (".jpg", ".png")
                ]
    build_records(
        inputs,
        out,
        SynthParams(max_side=128 if quick else 520, pairs_per_image=1 if quick else 2, test_images=4),
        "embedded photographs (+ RoadScene/MSRS visible)",
        workers=0,
    )
    return out


def _ufa(device, budget: float, test_pairs: int, quick: bool, data: Path):
    from fusion.data import sources
    from fusion.evaluate import pairs_test_set, prepared_test_set

    synthetic = _synthetic(quick, data)
    recipe = (
        {"batch_size": 2, "crop": 64, "steps_per_epoch": 2} if quick else {"batch_size": 8, "crop": 256, "lr": 1e-4}
    )
    _say(f"ufa: training {budget / 60:.2f} min on {synthetic.name}")
    ckpt, info = _fit(_config("ufa", "UFA", "multi-focus", device, recipe), synthetic, SCRATCH / "ufa", budget)
    rows = [_row("ufa training steps", info["steps"], "steps"), _row("ufa training minutes", info["minutes"], "min")]
    tables = []
    test_sets = [prepared_test_set(synthetic, "test")]
    lytro = data / "mf" / "Lytro20"
    if lytro.is_dir() and not quick:
        test_sets.append(pairs_test_set(list(sources.load_source({"layout": "lytro", "path": str(lytro)})), "Lytro"))
    for test_set in test_sets:
        names = METRICS["ufa"] + (["SSIM_gt", "PSNR_gt"] if test_set.has_gt else [])
        r, table = _score("ufa UFA", ckpt, info, _first(test_set, test_pairs), names, device, budget)
        rows += r
        tables.append(table)
    return rows, tables


def _cadnif(device, budget: float, test_pairs: int, quick: bool, data: Path):
    from fusion.config import SourceSpec
    from fusion.data import sources
    from fusion.data.training import load_source_split
    from fusion.evaluate import pairs_test_set

    roadscene = data / "irvis" / "RoadScene221"
    if not roadscene.is_dir():
        return f"no RoadScene at {roadscene} (set GPU_CHECK_DATA to a folder laid out as ../shared/data)"
    registry = {"roadscene": {"layout": "roadscene", "path": str(roadscene)}}
    recipe = (
        {"batch_size": 2, "crop": 48, "steps_per_epoch": 2} if quick else {"batch_size": 16, "crop": 132, "lr": 1e-4}
    )
    cfg = _config("cadnif", "CA-DRDB-AU-GRL-Net", "ir-vis", device, {**recipe, "source": "roadscene"}, registry)
    _say(f"cadnif: training {budget / 60:.2f} min on RoadScene's training split")
    ckpt, info = _fit(cfg, None, SCRATCH / "cadnif", budget)
    tno = data / "irvis" / "TNO42"
    if quick:  # a CPU check of this code: small pairs (CADNIF fuses 132-pixel tiles, seconds each on a CPU)
        from fusion.evaluate import prepared_test_set

        test_set = prepared_test_set(_synthetic(quick, data), "test")
    elif tno.is_dir():
        test_set = pairs_test_set(list(sources.load_source({"layout": "tno", "path": str(tno)})), "TNO")
    else:
        _, held_out = load_source_split(SourceSpec(**registry["roadscene"], name="roadscene"), cfg.seed)
        test_set = pairs_test_set(held_out, "RoadScene test split")
    rows, table = _score(
        "cadnif CA-DRDB-AU-GRL-Net", ckpt, info, _first(test_set, test_pairs), METRICS["cadnif"], device, budget
    )
    return [
        _row("cadnif training steps", info["steps"], "steps"),
        _row("cadnif training minutes", info["minutes"], "min"),
        *rows,
    ], [table]
