"""The main job's stages as plain functions: prepare -> train -> evaluate -> report.

The Prefect flow (flows/nightly.py) and the CLI call these; nothing here imports Prefect.
Ray and MLflow are reached only through their adapters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fusion import tracking, versioning
from fusion.config import Config
from fusion.data import embedded
from fusion.data.manifest import data_version
from fusion.data.prepared import Prepared
from fusion.git_info import git_state
from fusion.pipeline_scoring import evaluate, promote, rescore

log = logging.getLogger(__name__)

RUNS_DIR = "runs"


@dataclass
class RunInfo:
    name: str
    dir: Path
    target: tracking.TrackingTarget
    run_id: str
    workspace: Path


def new_workspace(dest: Path, source: Path | None = None) -> Path:
    """A fresh workspace at `dest`: params.yaml, dvc.yaml and the code files its stages
    depend on (read from dvc.yaml, so the list cannot drift), no data and no runs."""
    import shutil

    import yaml

    from fusion.config import PARAMS_FILE, project_root

    source = source or project_root()
    stages = (yaml.safe_load((source / "dvc.yaml").read_text()) or {}).get("stages", {})
    deps = [d for st in stages.values() for d in (st.get("do") or st).get("deps", [])]  # foreach stages: under `do`
    code_deps = {d for d in deps if (source / d).is_file() or (d.startswith("fusion/") and (source / d).is_dir())}
    for rel in sorted({PARAMS_FILE, "dvc.yaml", *code_deps}):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if (source / rel).is_dir():  # a package (fusion/data/sources): its modules, not the bytecode
            shutil.copytree(source / rel, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source / rel, dest / rel)
    return dest


def prepare(workspace: Path, cfg: Config, push: bool = True) -> Prepared:
    """Embedded photographs -> `dvc add data` -> `dvc repro` -> `dvc push`."""
    from fusion.prepare_local import dvc_installed, prepare_without_dvc

    if not dvc_installed():  # a core install (offline GPU machine): the data as it is, unversioned
        return prepare_without_dvc(workspace, cfg)
    versioning.ensure_repo(workspace)
    raw = workspace / cfg.data.embedded.out
    if not embedded.is_complete(raw):
        log.info("exporting the embedded photographs to %s", raw)
        embedded.export_embedded(raw)
    versioning.track_raw(workspace)
    result = versioning.repro(workspace)
    if push:
        versioning.push(workspace)
    return current_data(workspace, cfg, result.ran, result.skipped)


def current_data(workspace: Path, cfg: Config, ran: Sequence[str] = (), skipped: Sequence[str] = ()) -> Prepared:
    """The prepared data as it is on disk (what `prepare` left), without running DVC."""
    from fusion.errors import DataError

    out = cfg.data.synth_multifocus.out
    manifest = workspace / out / "manifest.json"
    if not manifest.is_file():
        raise DataError(f"{workspace / out}: no prepared data; run the prepare stage first (`fusion data prepare`)")
    hashes = versioning.output_hashes(workspace)
    counts = json.loads(manifest.read_text())["counts"]
    return Prepared(
        workspace / out,
        versioning.raw_hash(workspace),
        hashes.get(out, "unknown"),
        list(ran),
        list(skipped),
        counts,
        data_version(workspace / out),
    )


def run_config_text(target: tracking.TrackingTarget, run_id: str) -> str:
    """The resolved configuration a run was started with, as it recorded it (config/resolved.json)."""
    from fusion.errors import ConfigError

    try:
        return tracking.read_text(target, f"runs:/{run_id}/config/resolved.json")
    except Exception as exc:  # MLflow raises several kinds for a missing run/artifact
        raise ConfigError(
            f"run {run_id}: no config/resolved.json in {target.uri} ({str(exc).splitlines()[0]})"
        ) from None


def run_config(target: tracking.TrackingTarget, run_id: str) -> Config:
    """The resolved configuration a run was started with, read with today's schema (keys that
    moved since it ran are read from where it recorded them)."""
    from fusion.config.legacy import upgrade

    return Config.model_validate(upgrade(json.loads(run_config_text(target, run_id))))


def run_info(workspace: Path, cfg: Config, run_id: str) -> RunInfo:
    """A RunInfo for an existing run (its files in runs/<run name>, as `start` made them)."""
    target = tracking.target(cfg, workspace)
    name = tracking.client(target).get_run(run_id).info.run_name
    return RunInfo(name, workspace / RUNS_DIR / name, target, run_id, workspace)


def run_name(cfg: Config) -> str:
    return f"{cfg.train.model}-{cfg.train.variant}-{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S')}"


def start(
    workspace: Path,
    cfg: Config,
    prepared: Prepared,
    name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    run_dir: Path | None = None,
    target: tracking.TrackingTarget | None = None,
) -> RunInfo:
    """A new MLflow run for training `cfg` in `target` (default: the workspace's); its files
    go to runs/<name> (or `run_dir`)."""
    name = name or run_name(cfg)
    target = target or tracking.target(cfg, workspace)
    tags = {
        **git_state(),
        "data.raw_md5": prepared.raw_hash,
        "data.dvc_md5": prepared.data_hash,
        "data.version": prepared.version,
        **({"data.patches_version": data_version(cfg.train.patches)} if cfg.train.patches else {}),
        "data.path": str(prepared.root.relative_to(workspace)),
        **_data_tags(cfg),
        "profile": cfg.profile,
        "model": cfg.train.model,
        "variant": cfg.train.variant,
        "seed": str(cfg.seed),
        "train.stage": cfg.train.stage,
        **({"init_from": cfg.train.init_from} if cfg.train.init_from else {}),
        "mlflow.note.content": (
            f"{cfg.train.model} {cfg.train.variant}, profile {cfg.profile}, trained on "
            f"{'SYNTHETIC multi-focus pairs' if cfg.train.source is None else cfg.train.source.layout + ' pairs'} "
            f"(data md5 {prepared.data_hash})."
        ),
        **(extra_tags or {}),
    }
    run_id = tracking.start_run(target, name, cfg, tags)
    lock = workspace / "dvc.lock"
    if lock.is_file():
        tracking.log_artifact(target, run_id, lock, "data")
    return RunInfo(name, run_dir or workspace / RUNS_DIR / name, target, run_id, workspace)


def _data_tags(cfg: Config) -> dict[str, str]:
    spec = cfg.train.source
    if spec is None:
        return {
            "data.synthetic": "true",
            "data.description": "SYNTHETIC multi-focus pairs (UFA-Fuse Eq. 11) from scikit-image photographs",
        }
    return {
        "data.synthetic": "false",
        "data.source": f"{spec.layout}:{spec.path}",
        "data.description": f"{cfg.train.task} source pairs, layout {spec.layout}, read from {spec.path}",
    }


def check_storage(workspace: Path, cfg: Config, prepared: Prepared, use_ray: bool) -> None:
    """storage.uri checked before a run is created: an unwritable bucket, a DVC remote the
    workers cannot reach or data not pushed there fail here, naming it (fusion/train/distributed.py)."""
    if use_ray and cfg.storage.uri is not None:
        from fusion.train.distributed import preflight

        preflight(cfg, prepared.root, workspace, asdict(tracking.target(cfg, workspace)))


def train(cfg: Config, prepared: Prepared, run: RunInfo, use_ray: bool = True) -> Path:
    """Returns the folder holding last.pt and best.pt (also logged to the run)."""
    ckpt_dir = run.dir / "checkpoints"
    if use_ray:
        from fusion.tracking import SPOOL
        from fusion.train.distributed import train_with_ray

        executor_tags(cfg, run, "ray", max(1, int(cfg.train.ray.cpus_per_worker)))
        with _ray_interrupts():
            train_with_ray(
                cfg,
                prepared.root,
                run.dir / "ray",
                run.name,
                ckpt_dir,
                tracking=asdict(run.target),
                run_id=run.run_id,
                spool=run.dir / SPOOL,
                workspace=run.workspace,
            )
    else:
        train_in_process(cfg, prepared, run, ckpt_dir)
    publish(run, ckpt_dir)
    return ckpt_dir


@contextlib.contextmanager
def _ray_interrupts():
    """Ctrl-C during Ray training as a KeyboardInterrupt. Ray Train answers SIGINT in its own
    handler: it aborts the training, and Ray's client then raises SystemExit, so an interrupted
    run would end as if the command had exited. That handler stays installed after training
    (a later Ctrl-C would meet a dead controller): the previous one comes back."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as exc:  # the process was told to stop (SIGINT, SIGTERM): the run is killed, not failed
        raise KeyboardInterrupt(f"Ray training stopped (exit {exc.code})") from exc
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


def train_in_process(
    cfg: Config,
    prepared: Prepared,
    run: RunInfo,
    ckpt_dir: Path,
    callbacks: Sequence[Any] = (),
    deadline: float | None = None,
    executor: str = "local",
):
    """Train in this process, logging to the run; continues from ckpt_dir/last.pt when a
    previous attempt left one (a retried sweep trial). Returns the TrainState."""
    import torch

    from fusion.checkpoint import LAST
    from fusion.tracking import SPOOL
    from fusion.train.loop import Trainer

    executor_tags(cfg, run, executor, torch.get_num_threads())
    last = ckpt_dir / LAST
    trainer = Trainer(
        cfg, prepared.root, [tracking.MlflowCallback(run.target, run.run_id, run.dir / SPOOL), *callbacks]
    )
    return trainer.fit(ckpt_dir, resume_from=last if last.is_file() else None, deadline=deadline)


def executor_tags(cfg: Config, run: RunInfo, executor: str, threads: int) -> None:
    from fusion.device import pick_device

    # what `fusion reproduce` needs to redo the arithmetic: CPU reductions depend on the thread count
    tracking.set_tags(
        run.target,
        run.run_id,
        {"train.executor": executor, "train.threads": str(threads), "env.device": str(pick_device(cfg.train.device))},
    )


def publish(run: RunInfo, ckpt_dir: Path) -> None:
    """Log the checkpoints and (for models that fuse) the MLflow model folder to the run."""
    from fusion.checkpoint import checkpoint_in, load_checkpoint
    from fusion.models import checkpoint_stage
    from fusion.tracking import SPOOL, Spool

    spool = Spool(run.target, run.run_id, run.dir / SPOOL)
    for f in sorted(ckpt_dir.glob("*.pt")):
        spool.log_artifact(f, "checkpoints")
    best = checkpoint_in(ckpt_dir)
    if checkpoint_stage(load_checkpoint(best)).fuses:  # CrossFuse's stage-1 auto-encoders do not
        import shutil

        from fusion.tracking import model_flavor as mlflow_model

        model_dir = run.dir / mlflow_model.ARTIFACT_PATH
        shutil.rmtree(model_dir, ignore_errors=True)  # a retried stage writes it again
        spool.log_artifact(mlflow_model.save(best, model_dir), mlflow_model.ARTIFACT_PATH)
    if not spool.flush(force=True):
        log.warning(
            "tracking server %s unreachable: %d record(s) of run %s wait in %s; they are delivered by "
            "`fusion sync` once it is back",
            run.target.uri,
            spool.pending,
            run.run_id,
            spool.path,
        )


__all__ = [
    "RUNS_DIR",
    "Prepared",
    "RunInfo",
    "current_data",
    "evaluate",
    "new_workspace",
    "prepare",
    "promote",
    "publish",
    "rescore",
    "run_config",
    "run_info",
    "run_name",
    "start",
    "train",
    "train_in_process",
]
