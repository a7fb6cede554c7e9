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
from pathlib import Path
from typing import Any

from fusion.checkpoint import BEST, LAST
from fusion.config import Config
from fusion.errors import ConfigError

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 1024**2


# Ray Train's placement-group cleaner asks the State API, which lives in the dashboard, whether
# its controller is alive, once a second; without a dashboard (a local instance) each answer
# is a warning forwarded to the driver: 135 identical lines in one nightly run. The cleaner
# only matters when a controller dies ungracefully, which ray.shutdown() covers locally.
_NOISY_WORKER_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_ray_workers() -> None:
    """worker_process_setup_hook: runs in every Ray worker process before its first task."""
    for name in _NOISY_WORKER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray() -> dict[str, Any]:
    import ray

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
    return ray.cluster_resources()


def _worker_loop(config: dict[str, Any]) -> None:
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
    callbacks.append(_RayReport(cfg.train.checkpoint_every, cfg.train.epochs, main))
    Trainer(cfg, data_root, callbacks).fit(ckpt_dir, resume_from)


class _RayReport:
    def __init__(self, every: int, epochs: int, main: bool = True):
        self.every, self.epochs, self.main = every, epochs, main

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        import ray.train

        if self.main and (epoch % self.every == 0 or epoch == self.epochs):  # rank 0 wrote it
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
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from fusion.train.storage import storage_path as ray_storage

    where = ray_storage(cfg, storage_path)
    remote = preflight(cfg, data_root, workspace, tracking)
    available = init_ray()
    rc = cfg.train.ray
    n = rc.num_workers
    for kind, per_worker, key in (
        ("CPU", rc.cpus_per_worker, "cpus_per_worker"),
        ("GPU", rc.gpus_per_worker, "gpus_per_worker"),
    ):
        if per_worker * n > available.get(kind, 0):  # refused now rather than waiting for resources forever
            workers = f"train.ray.num_workers={n} x " if n > 1 else ""
            raise ConfigError(
                f"{workers}train.ray.{key}={per_worker} but the Ray cluster has {available.get(kind, 0)} {kind}s"
            )
    use_gpu = rc.gpus_per_worker > 0
    resources = {"CPU": rc.cpus_per_worker, **({"GPU": rc.gpus_per_worker} if use_gpu else {})}
    if cfg.storage.uri is not None and run_id:
        # one bucket serves many workspaces and Ray continues a run found under the same name:
        # the MLflow run id makes it this run's alone (and the same when the run is resumed)
        run_name = f"{run_name}-{run_id[:8]}"
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "data_root": str(Path(data_root).resolve()),
            "run_id": run_id,
            "tracking": tracking,
            "spool": str(spool) if spool else str(Path(storage_path).resolve() / "mlflow-spool.jsonl"),
            "data": remote.to_dict() if remote else None,
            "cache": cfg.storage.cache,
        },
        scaling_config=ScalingConfig(num_workers=n, use_gpu=use_gpu, resources_per_worker=resources),
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
    reads: dict[str, Path] = {}
    if t.source is None:
        reads["the prepared data"] = Path(data_root)
    else:
        reads["train.source.path"] = Path(t.source.path)
    if t.patches:
        reads["train.patches"] = Path(t.patches)
    return data_ref(workspace, reads)
