"""How good our training gets: each paper's proposed model trained for a fixed time on the real
data the project can read, then scored beside the five classical baselines (and, for CADNIF on
IR-VIS, the authors' own checkpoint run as released) with each paper's metrics.

    python -m benchmarks.run quality                       # 20 minutes of training per job
    python -m benchmarks.run quality --minutes 5 --test-pairs 12
    python -m benchmarks.run quality --device cuda

Jobs (train -> test; never the same images):
  ufa        multi-focus     synthetic pairs (paper Eq. 11) from every natural photograph here:
                             the embedded set, RoadScene's and MSRS's visible images -> Lytro
  crossfuse  ir-vis          RoadScene's training split (stage 1 a third of the time, stage 2 the
                             rest) -> TNO
  cadnif     ir-vis          RoadScene's training split -> TNO (+ the authors' IV checkpoint)
  cadnif     medical         Harvard's training cases -> its test cases (split by case)
  cadnif     multi-exposure  the training sequences of both MEF sets -> their test sequences

A job trains until its time is up (an epoch that would end later is not started); the paper's
whole schedule is hours to days on a GPU, so the recipes below keep each paper's loss, model and
crop and raise the learning rate where a few CPU minutes are a tiny fraction of the paper's
steps (each row says which). It writes a Markdown table per job (best value in bold), rows for
benchmarks/results/<machine>.json, one comparison figure per job and keeps every trained
checkpoint under benchmarks/scratch/quality/<model>/<task>/best.pt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
SCRATCH = REPO / "benchmarks" / "scratch" / "quality"
AUTHORS_CADNIF = SHARED / "reference" / "official" / "cadnif_iv" / "model-11"
OPTIONS = ("minutes", "device", "test_pairs", "jobs")

log = logging.getLogger(__name__)


def _say(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{time.strftime('%H:%M:%S')}[/] quality: {text}")


PAPER_METRICS = {
    "cadnif": ["EN", "SCD", "SD", "Qabf", "MI", "FMI_pixel", "CC"],
    "crossfuse": ["EN", "SD", "MI", "FMI_dct", "FMI_pixel", "SCD"],
    "ufa": ["AG", "SD", "EN", "VIF", "Qabf", "Qc", "Qm"],  # the paper's AVG, STD, SEN, VIFF
}

SOURCES = {
    "roadscene": {"layout": "roadscene", "path": str(DATA / "irvis/RoadScene221")},
    "tno": {"layout": "tno", "path": str(DATA / "irvis/TNO42")},
    "lytro": {"layout": "lytro", "path": str(DATA / "mf/Lytro20")},
    "harvard": {"layout": "harvard", "path": str(DATA / "medical/Harvard")},
    "mef6": {"layout": "mef-scenes", "path": str(DATA / "mef/IFCNN_ME6")},
    "mef8": {"layout": "u2fusion-mef", "path": str(DATA / "mef/U2Fusion_ME8")},
}


@dataclass(frozen=True)
class Job:
    model: str
    variant: str
    task: str
    train: tuple[str, ...]  # SOURCES names, or ("synthetic",)
    test: str  # "split" = the held-out split of the training sources
    recipe: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.model}/{self.task}"


JOBS = [
    Job(
        "ufa", "UFA", "multi-focus", ("synthetic",), "lytro", {"batch_size": 8, "crop": 256, "lr": 1e-4}, "paper recipe"
    ),
    Job(
        "crossfuse",
        "full",
        "ir-vis",
        ("roadscene",),
        "tno",
        {"batch_size": 2, "crop": 256, "lr": 1e-4},
        "stage 1 paper recipe; stage 2 lr 1e-3 (released code), batch 2",
    ),
    Job(
        "cadnif",
        "CA-DRDB-AU-GRL-Net",
        "ir-vis",
        ("roadscene",),
        "tno",
        {"batch_size": 8, "crop": 132, "lr": 1e-4},
        "132 windows, batch 8 (code); lr 1e-4 (paper 1e-5)",
    ),
    Job(
        "cadnif",
        "CA-DRDB-AU-GRL-Net",
        "medical",
        ("harvard",),
        "split",
        {"batch_size": 8, "crop": 132, "lr": 1e-4},
        "as ir-vis",
    ),
    Job(
        "cadnif",
        "CA-DRDB-AU-GRL-Net",
        "multi-exposure",
        ("mef6", "mef8"),
        "split",
        {"batch_size": 8, "crop": 132, "lr": 1e-4},
        "as ir-vis",
    ),
]
CROSSFUSE_STAGE2 = {"batch_size": 2, "crop": 256, "lr": 1e-3}


def run(
    quick: bool = False,
    minutes: float | None = None,
    device: str = "auto",
    test_pairs: int | None = None,
    jobs: list[str] | None = None,
) -> list[dict]:
    from benchmarks.machine import describe, slug

    if not DATA.is_dir():
        raise SystemExit(f"quality benchmark: the shared data is not at {DATA}")
    known = [j.key for j in JOBS]
    unknown = sorted(set(jobs or ()) - set(known))
    if unknown:
        raise SystemExit(f"quality benchmark: unknown job(s) {unknown}; jobs: {known}")
    selected = [j for j in JOBS if not jobs or j.key in jobs]
    minutes = minutes if minutes is not None else (0.3 if quick else 20.0)
    test_pairs = test_pairs if test_pairs is not None else (2 if quick else None)
    machine = slug(describe()) + ("-quick" if quick else "")
    rows: list[dict] = []
    tables: list[str] = []
    for n, job in enumerate(selected, 1):
        start = time.perf_counter()
        _say(f"job {n}/{len(selected)} {job.key}: training {minutes:g} min on {'+'.join(job.train)}")
        result, train_info = _run_job(job, minutes, device, test_pairs, quick)
        tables.append(_job_table(job, result, train_info, minutes, str(_device(device)), test_pairs))
        for method, values in result.means.items():
            for metric, value in values.items():
                rows.append(
                    {"benchmark": "quality", "measure": f"{job.key} {method} {metric}", "value": value, "unit": ""}
                )
        rows += [
            {
                "benchmark": "quality",
                "measure": f"{job.key} training steps",
                "value": train_info["steps"],
                "unit": "steps",
            },
            {
                "benchmark": "quality",
                "measure": f"{job.key} training minutes",
                "value": train_info["minutes"],
                "unit": "min",
            },
            {
                "benchmark": "quality",
                "measure": f"{job.key} job wall time",
                "value": time.perf_counter() - start,
                "unit": "s",
            },
        ]
    out = REPO / "benchmarks" / "results" / f"quality-{machine}.md"
    _write_tables(out, tables)
    print(f"wrote {out}")
    return rows


HEADER = (
    "# Quality benchmark\n\nMean of each paper metric per method on the test set; best in bold. "
    "`python -m benchmarks.run quality` (benchmarks/bench_quality.py).\n\n"
)


def _write_tables(out: Path, tables: list[str]) -> None:
    """One section per job; a run of some jobs (--jobs) replaces only their sections."""
    from fusion.io import write_bytes_atomic

    sections: dict[str, str] = {}
    if out.is_file():
        for part in out.read_text().split("\n## ")[1:]:
            sections[part.split(" ", 1)[0]] = "## " + part.rstrip() + "\n"
    for table in tables:
        sections[table[3:].split(" ", 1)[0]] = table
    order = [j.key for j in JOBS]
    body = "\n".join(sections[k] for k in sorted(sections, key=lambda k: order.index(k) if k in order else len(order)))
    write_bytes_atomic(out, (HEADER + body).encode())


def _run_job(job: Job, minutes: float, device: str, test_pairs: int | None, quick: bool):
    from fusion.evaluate import baseline_methods, evaluate_methods, model_method
    from fusion.inference import load_model
    from fusion.report import evaluation_figure

    folder = SCRATCH / job.model / job.task
    folder.mkdir(parents=True, exist_ok=True)
    test_set = _test_set(job, test_pairs)
    ckpt, info = _train(job, folder, minutes, device, quick)
    dev = _device(device)
    methods = baseline_methods(["all"])
    model, _ = load_model(ckpt, dev)
    methods[f"{job.model} (ours, {info['minutes']:.1f} min)"] = model_method(model, dev)
    if job.model == "cadnif" and job.task == "ir-vis":
        authors = _authors_cadnif(folder)
        if authors is not None:
            net, _ = load_model(authors, dev)
            methods["cadnif (authors' checkpoint, released)"] = model_method(net, dev)
    _say(
        f"{job.key}: trained {info['steps']} steps in {info['minutes']:.1f} min; scoring {len(methods)} methods "
        f"on {len(test_set)} {test_set.name} pairs"
    )

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            _say(f"{job.key}: scored {done}/{total} pairs")

    result, samples = evaluate_methods(
        test_set, methods, PAPER_METRICS[job.model], dev, keep_images=2, progress=progress
    )
    evaluation_figure(
        samples,
        test_set.source_labels,
        list(methods),
        folder / "comparison.png",
        title=f"{job.key}: {test_set.name}",
        caption_metric="Qabf",
        rows=result.rows,
    )
    return result, info


def _device(device: str):
    from fusion.device import pick_device

    return pick_device(device)


def _config(job: Job, recipe: dict, device: str, extra: dict | None = None):
    from fusion.config import load_config
    from fusion.device import cpu_has_bfloat16

    dev = _device(device)
    source = None if job.train == ("synthetic",) else job.train[0]
    train = {
        "model": job.model,
        "variant": job.variant,
        "task": job.task,
        "epochs": 100_000,
        "steps_per_epoch": 10,
        "lr_step_epochs": 100_000,
        "device": device,
        "amp": dev.type == "cuda" or cpu_has_bfloat16(),
        "source": source,
        **recipe,
        **(extra or {}),
    }
    return load_config(REPO, None, {"sources": SOURCES, "train": train})


def _train(job: Job, folder: Path, minutes: float, device: str, quick: bool) -> tuple[Path, dict]:
    from fusion.checkpoint import checkpoint_in
    from fusion.train.loop import Trainer

    # the data is built before the clock starts: the budget is training time
    synthetic = _synthetic(folder.parent / "synthetic", quick) if job.train == ("synthetic",) else None
    steps, start = 0, time.time()
    recipe = {**job.recipe, **({"crop": 64, "batch_size": 2} if quick else {})}
    if job.model == "crossfuse":  # two stages: the auto-encoders, then the fusion stage from them
        s1 = _fit(
            Trainer(_config(job, recipe, device, {"stage": "autoencoder"}), None),
            folder / "stage1",
            start + minutes * 60 / 3,
        )
        stage2 = {**CROSSFUSE_STAGE2, **({"crop": 64} if quick else {})}
        cfg = _config(job, stage2, device, {"stage": "fusion", "init_from": str(checkpoint_in(folder / "stage1"))})
        trainer = Trainer(cfg, None)
        steps = s1.global_step
    elif job.train == ("synthetic",):
        trainer = Trainer(_config(job, recipe, device), synthetic)
    else:
        trainer = Trainer(_config(job, recipe, device), None)
        if len(job.train) > 1:
            _join_training_sources(trainer, job)
    state = _fit(trainer, folder, start + minutes * 60)
    return checkpoint_in(folder), {
        "steps": steps + state.global_step,
        "minutes": (time.time() - start) / 60,
        "epochs": state.epoch,
    }


def _fit(trainer, folder: Path, deadline: float):
    for stale in folder.glob("*.pt"):  # scratch of an earlier benchmark run: this one starts over
        stale.unlink()
    state = trainer.fit(folder, deadline=deadline)
    if state.global_step == 0:  # the deadline came before the first epoch: train one anyway
        trainer.tcfg = trainer.tcfg.model_copy(update={"epochs": 1})
        state = trainer.fit(folder)
    return state


def _join_training_sources(trainer, job: Job) -> None:
    """Train on the training splits of several sources (both MEF sets) and validate on theirs."""
    from fusion.config import SourceSpec
    from fusion.data.training import SourcePairs, load_source_split

    train, test = [], []
    for name in job.train:
        a, b = load_source_split(SourceSpec(**SOURCES[name], name=name), trainer.cfg.seed)
        train, test = train + a, test + b
    trainer.train_set = SourcePairs(train, f"{'+'.join(job.train)}:train")
    trainer.val_set = SourcePairs(test, f"{'+'.join(job.train)}:test")


def _test_set(job: Job, limit: int | None):
    from fusion.config import SourceSpec
    from fusion.data import sources
    from fusion.data.training import load_source_split
    from fusion.evaluate import pairs_test_set

    if job.test == "split":
        pairs = []
        for name in job.train:
            pairs += load_source_split(SourceSpec(**SOURCES[name], name=name), 0)[1]
        name = f"{'+'.join(job.train)} test split"
    else:
        pairs, name = list(sources.load_source(SOURCES[job.test])), job.test
    if limit is not None:
        pairs = pairs[:limit]
    return pairs_test_set(pairs, name)


def _synthetic(out: Path, quick: bool) -> Path:
    """Synthetic multi-focus pairs from every natural photograph the project can read here."""
    from fusion.data.embedded import export_embedded
    from fusion.data.sources import load_photos
    from fusion.data.synth_multifocus import SynthInput, SynthParams, build_records

    if (out / "manifest.json").is_file():
        return out
    raw = (
        export_embedded(out.parent / "embedded") if not (out.parent / "embedded").is_dir() else out.parent / "embedded"
    )
    inputs = [SynthInput(f"embedded-{r.id}", r.image, r.mask) for r in load_photos(raw)]
    for folder, prefix in ((DATA / "irvis/RoadScene221/vi", "roadscene"), (DATA / "irvis/MSRS5/vi", "msrs")):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        inputs += [SynthInput(f"{prefix}-{p.stem}", p, None) for p in files[: 8 if quick else None]]
    build_records(
        inputs,
        out,
        SynthParams(max_side=256 if quick else 520, pairs_per_image=1 if quick else 2, test_images=4),
        "natural photographs: embedded + RoadScene/MSRS visible",
    )
    return out


def _authors_cadnif(folder: Path) -> Path | None:
    from fusion.errors import FusionError
    from fusion.weights import import_weights

    if not AUTHORS_CADNIF.with_name("model-11.index").is_file():
        return None
    out = folder / "authors-cadnif-iv.pt"
    try:
        import_weights("cadnif", [AUTHORS_CADNIF], out, overwrite=True)
    except FusionError as exc:
        log.warning("the authors' CADNIF checkpoint could not be imported: %s", exc)
        return None
    return out


def _job_table(job: Job, result, info: dict, minutes: float, device: str, test_pairs: int | None) -> str:
    from fusion.evaluate import markdown_table

    pairs = len(result.rows) // max(1, len(result.methods))
    title = (
        f"## {job.key} ({job.variant}) on {result.test_set}, {pairs} pairs "
        f"({time.strftime('%Y-%m-%d')}, {device})\n\n"
        f"Trained {info['minutes']:.1f} min ({info['steps']} steps; budget {minutes:g} min) on "
        f"{' + '.join(job.train)}; recipe {job.recipe} ({job.note})."
    )
    return markdown_table(result.means, result.metric_names, result.seconds_per_pair, title)
