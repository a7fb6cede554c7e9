"""Ray adapter: run the trainer as a Ray Train job (current Train V2 API).

Local Ray by default, sized for a small machine (no dashboard, small object store); an
existing cluster when RAY_ADDRESS is set, with this package shipped through the runtime
environment. Ray persists each reported checkpoint under `storage_path` and, when a worker
dies, restarts the loop from the latest one (FailureConfig.max_failures).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from fusion.checkpoint import BEST, LAST
from fusion.config import Config
from fusion.errors import ConfigError

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 1024**2


class _AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class _NoTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()} ({type(exc).__name__}: {exc})", None
            record.exc_info = record.exc_text = None
        return True


_EXECUTION = "ray.train.v2._internal.execution"
# Filters, not levels: Ray Train's dictConfig in a worker resets its child loggers' levels.
_QUIET_RAY_LOGGERS: dict[str, logging.Filter] = {
    # The placement-group cleaner asks the State API, which lives in the dashboard, whether its
    # controller is alive, once a second; without a dashboard (a local instance) each answer is
    # a warning forwarded to the driver: 135 identical lines in one nightly run. The cleaner only
    # matters when a controller dies ungracefully, which ray.shutdown() covers locally.
    f"{_EXECUTION}.controller.placement_group_cleaner": _AtLeast(logging.ERROR),
    # Each report printed two INFO lines beside the trainer's own epoch line, one repeating its
    # metrics as a dict: "Reporting training result N: TrainingReport(...)" and "Checkpoint
    # successfully created at: ...", the only INFO records of their modules (their warnings
    # still show).
    f"{_EXECUTION}.context": _AtLeast(logging.WARNING),
    f"{_EXECUTION}.storage": _AtLeast(logging.WARNING),
    # The controller's resource request to the autoscaling coordinator times out after 5 s while
    # that actor's process still starts (a cold local instance on 2 busy cores), and Ray logs a
    # 20-line traceback it calls "safe to ignore" when transient: one line says the same.
    f"{_EXECUTION}.scaling_policy.autoscaling_coordinator_client": _NoTraceback(),
}
# modules whose logger is `logging.getLogger(__file__)`, named after the file's path (Ray 2.60)
_LOGGER_NAMED_BY_FILE = {f"{_EXECUTION}.context"}


def quiet_ray_workers() -> None:
    """worker_process_setup_hook: runs in every Ray worker process before its first task.

    Names the loggers without importing their modules (Ray Train's import costs seconds in a
    process that may never train): a logger made now is the one the module gets later."""
    import ray

    root = Path(ray.__file__).parent.parent
    for module, only in _QUIET_RAY_LOGGERS.items():
        name = f"{root.joinpath(*module.split('.'))}.py" if module in _LOGGER_NAMED_BY_FILE else module
        logging.getLogger(name).addFilter(only)  # once: addFilter skips a filter it holds


def init_ray() -> dict[str, Any]:
    import ray

    from fusion.stop_signals import stop_on_sigterm

    if ray.is_initialized():
        return ray.cluster_resources()
    address = os.environ.get("RAY_ADDRESS")
    import fusion

    common: dict[str, Any] = dict(log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    hook = {"worker_process_setup_hook": quiet_ray_workers}
    if address:
        # Ship the package so cluster nodes run the same code as this checkout.
        ray.init(address=address, runtime_env={"py_modules": [str(Path(fusion.__file__).parent)], **hook}, **common)
    else:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            runtime_env=hook,
            object_store_memory=OBJECT_STORE_BYTES,
            **common,
        )
    # ray.init put in a bare sys.exit. Ours routes SIGTERM through Ray Train's Ctrl-C handler,
    # which aborts the training cleanly; Prefect's handler put back instead (in a flow run)
    # raised its TerminationSignal into ray.get, which came out as a SystemError, exit 1
    stop_on_sigterm()
    return ray.cluster_resources()


def _worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Runs inside the Ray Train worker."""
    import ray.train

    from fusion.train.loop import Trainer

    cfg_json, data_root, spool = config["cfg"], config["data_root"], config["spool"]
    if config.get("data"):  # object storage: this node's copy of the run's data version
        from fusion.data.node_cache import DataRef, localise, materialise

        ref = DataRef(**config["data"])
        local = materialise(ref, config["cache"])
        cfg_json, data_root = localise(cfg_json, ref, local), localise(data_root, ref, local)
        spool = str(Path(config["cache"]).expanduser() / "spool" / f"{config['run_id']}.jsonl")
    cfg = Config.model_validate(cfg_json)
    # Ray pins OMP_NUM_THREADS to the worker's CPU share; make torch use exactly that share.
    import torch

    torch.set_num_threads(max(1, int(cfg.train.ray.cpus_per_worker)))
    trial = config.get("ckpt_dir")  # a sweep trial: its checkpoints live in its folder on the shared disk
    store = config.get("store")  # ... or, on object storage, in this node's copy of it (fusion/sweep/store.py)
    if store:
        from fusion.sweep.store import CHECKPOINT_FILES, local_dir, pull

        tdir = local_dir(config["cache"], store["sweep"], store["trial"])
        pull(store["uri"], tdir, CHECKPOINT_FILES)  # where the trial got to, perhaps on another node
        trial = str(tdir / Path(CHECKPOINT_FILES[0]).parent)
    if trial:
        ckpt_dir = Path(trial)
        resume_from = ckpt_dir / LAST if (ckpt_dir / LAST).is_file() else None
    else:
        ckpt_dir = Path(tempfile.mkdtemp(prefix="fusionflow-ckpt-"))
        resume_from = None
        restored = ray.train.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as d:
                shutil.copytree(d, ckpt_dir, dirs_exist_ok=True)
            resume_from = ckpt_dir / LAST if (ckpt_dir / LAST).is_file() else None
    callbacks: list = []
    main = ray.train.get_context().get_world_rank() == 0  # rank 0 logs; every worker reports to Ray
    if config.get("run_id") and main:
        from fusion.tracking import MlflowCallback, TrackingTarget

        callbacks.append(MlflowCallback(TrackingTarget(**config["tracking"]), config["run_id"], Path(spool)))
    if store and main:  # rank 0 wrote this epoch's checkpoints: to the store before Tune hears of it
        from fusion.sweep.store import Mirror

        callbacks.append(Mirror(tdir, store["uri"]))
    callbacks.append(_RayReport(cfg.train.checkpoint_every, cfg.train.epochs, main, persist=not trial))
    state = Trainer(cfg, data_root, callbacks).fit(ckpt_dir, resume_from, deadline=config.get("deadline"))
    # rank 0's return value is the Result's: how the training ended, for the sweep's status record
    return {"epoch": state.epoch, "best_val": state.best_val, "stopped": state.stopped, "history": state.history[-1:]}


# what mypy sees of ray.train is the V1 API, whose loop returns None; Train V2's returns a value
# (rank 0's becomes Result.return_value) and takes V2 callbacks such as TuneReportCallback
_LOOP: Any = _worker_loop


class _RayReport:
    def __init__(self, every: int, epochs: int, main: bool = True, persist: bool = True):
        self.every, self.epochs, self.main, self.persist = every, epochs, main, persist

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        import ray.train

        due = epoch % self.every == 0 or epoch == self.epochs
        if self.persist and self.main and due:  # rank 0 wrote it
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)))
        else:
            ray.train.report(metrics)


def train_with_ray(
    cfg: Config,
    data_root: Path,
    storage_path: Path,
    run_name: str,
    out_dir: Path,
    tracking: dict[str, Any] | None = None,
    run_id: str | None = None,
    spool: Path | None = None,
    workspace: Path | None = None,
) -> Path:
    """Train through Ray; copy the final checkpoint folder (last.pt, best.pt) into `out_dir`.

    `storage_path` is the run folder Ray persists checkpoints in, unless `storage.uri` names
    other storage; on object storage the workers also take their data from the DVC remote of
    `workspace` (fusion/data/node_cache.py), so they need no disk shared with this machine.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from fusion.train.storage import storage_path as ray_storage

    where = ray_storage(cfg, storage_path)
    remote = preflight(cfg, data_root, workspace, tracking)
    check_fits(cfg, init_ray())
    rc = cfg.train.ray
    if cfg.storage.uri is not None and run_id:
        # one bucket serves many workspaces and Ray continues a run found under the same name:
        # the MLflow run id makes it this run's alone (and the same when the run is resumed)
        run_name = f"{run_name}-{run_id[:8]}"
    trainer = TorchTrainer(
        _LOOP,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "data_root": str(Path(data_root).resolve()),
            "run_id": run_id,
            "tracking": tracking,
            "spool": str(spool) if spool else str(Path(storage_path).resolve() / "mlflow-spool.jsonl"),
            "data": remote.to_dict() if remote else None,
            "cache": cfg.storage.cache,
        },
        scaling_config=_scaling(cfg),
        run_config=RunConfig(
            name=run_name,
            storage_path=where,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=rc.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray run {run_name} finished without a checkpoint")
    out_dir.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as d:
        for name in (LAST, BEST):
            if (Path(d) / name).is_file():
                shutil.copy2(Path(d) / name, out_dir / name)
    return out_dir


def check_fits(cfg: Config, available: dict[str, Any], besides: dict[str, float] | None = None) -> None:
    """Refuse now, naming the keys, workers the cluster can never schedule (Ray would wait forever).
    `besides`: what else the run holds meanwhile (a sweep trial's own resources)."""
    rc = cfg.train.ray
    n = rc.num_workers
    for kind, per_worker, key in (
        ("CPU", rc.cpus_per_worker, "cpus_per_worker"),
        ("GPU", rc.gpus_per_worker, "gpus_per_worker"),
    ):
        held = (besides or {}).get(kind, 0.0)
        if per_worker * n + held > available.get(kind, 0):
            workers = f"train.ray.num_workers={n} x " if n > 1 else ""
            also = f" + the trial's own {held:g}" if held else ""
            raise ConfigError(
                f"{workers}train.ray.{key}={per_worker}{also} but the Ray cluster has {available.get(kind, 0)} {kind}s"
            )


def _scaling(cfg: Config):
    from ray.train import ScalingConfig

    rc = cfg.train.ray
    use_gpu = rc.gpus_per_worker > 0
    resources = {"CPU": rc.cpus_per_worker, **({"GPU": rc.gpus_per_worker} if use_gpu else {})}
    return ScalingConfig(num_workers=rc.num_workers, use_gpu=use_gpu, resources_per_worker=resources)


def train_trial_with_ray(
    cfg: Config,
    data_root: Path,
    run,
    ckpt_dir: Path,
    deadline: float | None,
    attempt: int,
    remote: dict[str, Any] | None = None,
):
    """A sweep trial's data-parallel training: a Ray Train run started from the Tune trial, its
    N workers placed by Ray on top of the trial's own resources. Rank 0 writes the checkpoints
    into the trial folder, so a restarted worker group, a retried trial and the next run of the
    sweep all continue from its last.pt, as a one-worker trial does; the workers' epoch metrics
    reach Tune through TuneReportCallback. Returns the TrainState fields the trial's status
    record needs.

    The trial folder is on a disk every node shares, or, on object storage, `remote` says where
    each worker finds the trial's data and folder: {"data": DataRef fields, "cache":
    storage.cache, "store": {"uri", "sweep", "trial"}} (`cfg` and `data_root` then name the
    workspace's paths, which each worker maps to its own node's copy); every worker pulls the
    checkpoints from the store and rank 0 pushes them there each epoch."""
    from ray.train import FailureConfig, RunConfig, WorkerGroupError
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from fusion.errors import FusionError
    from fusion.tracking import SPOOL
    from fusion.train.loop import TrainState

    trainer = TorchTrainer(
        _LOOP,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "data_root": str(Path(data_root).resolve()),
            "run_id": run.run_id,
            "tracking": asdict(run.target),
            "spool": str(run.dir / SPOOL),
            "ckpt_dir": str(ckpt_dir),
            "deadline": deadline,
            **(remote or {}),
        },
        scaling_config=_scaling(cfg),
        run_config=RunConfig(
            # a fresh Ray run each attempt: the trial folder, not Ray's storage, says where to continue
            name=f"attempt-{attempt}",
            storage_path=f"{remote['store']['uri']}/ray" if remote else str(ckpt_dir.parent / "ray"),
            failure_config=FailureConfig(max_failures=cfg.train.ray.max_failures),
            callbacks=[cast(Any, TuneReportCallback())],
        ),
    )
    try:
        result: Any = trainer.fit()
    except WorkerGroupError as exc:
        for failure in exc.worker_failures.values():  # deterministic: the trial fails, Tune does not retry it
            cause = getattr(failure, "_base_exc", failure)  # Ray Train's wrapper of the worker's exception
            if isinstance(cause, (FusionError, FloatingPointError)):
                raise cause from exc
        raise
    done = result.return_value
    return TrainState(epoch=done["epoch"], best_val=done["best_val"], history=done["history"], stopped=done["stopped"])


def preflight(cfg: Config, data_root: Path, workspace: Path | None, tracking: dict[str, Any] | None):
    """Checks storage.uri before anything is started: Ray storage is writable and, on object
    storage, what workers on nodes without the workspace's disk need to find the run's data
    and log it (returned: the DVC outputs training reads, on the remote; None otherwise)."""
    from fusion.data.node_cache import data_ref
    from fusion.train.storage import check_storage
    from fusion.train.storage import storage_path as ray_storage

    if cfg.storage.uri is None:
        return None
    check_storage(ray_storage(cfg, Path(".")))
    if not cfg.storage.object_store:
        return None
    if workspace is None:
        raise ConfigError(f"storage.uri={cfg.storage.uri}: object storage needs a DVC workspace to take data from")
    uri = (tracking or {}).get("uri", "")
    if tracking is not None and not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"storage.uri={cfg.storage.uri}: workers on other nodes log through a tracking server, but the "
            f"tracking URI is {uri} (start `mlflow server` and set MLFLOW_TRACKING_URI)"
        )
    t = cfg.train
    if t.init_from and "://" not in t.init_from and ":/" not in t.init_from:
        raise ConfigError(
            f"train.init_from={t.init_from}: a file on this machine; with storage.uri on object storage "
            "name the checkpoint by its MLflow URI (runs:/RUN_ID) so every worker can download it"
        )
    return data_ref(workspace, training_reads(cfg, data_root))


def training_reads(cfg: Config, data_root: Path) -> dict[str, Path]:
    """The folders training reads (what names each -> path)."""
    t = cfg.train
    reads: dict[str, Path] = {}
    if t.source is None:
        reads["the prepared data"] = Path(data_root)
    else:
        reads["train.source.path"] = Path(t.source.path)
    if t.patches:
        reads["train.patches"] = Path(t.patches)
    return reads
