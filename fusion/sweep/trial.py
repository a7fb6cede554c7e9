"""One sweep trial: train, publish, evaluate, into its own MLflow child run.

`execute` is plain Python (the benchmark calls it directly); `ray_trainable` is the Ray
Tune function trainable around it. Everything a trial needs is in its trial folder
(<sweep dir>/<trial id>/) on a disk every node sees, or mirrored to object storage
(fusion/sweep/store.py, storage.uri), so a trial restarted on another
worker, or by a later run of the same sweep, continues from checkpoints/last.pt and logs
into the same child run; the metric callback skips steps that run already has. A trial with
train.ray.num_workers > 1 trains on that many Ray Train workers started from the Tune trial
(fusion.train.distributed.train_trial_with_ray), with the same folder (each worker's own copy
of it on object storage) and the same rules.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion import tracking
from fusion.errors import FusionError

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
WORKER_FILE = "worker.json"
CHECKPOINTS = "checkpoints"
# how a trial ended; "resumable" ones are continued by the next run of the same sweep
DONE = ("completed", "early_stopped")
FINAL = (*DONE, "failed", "skipped")
RUN_STATUS = {
    "completed": "FINISHED",
    "early_stopped": "FINISHED",
    "failed": "FAILED",
    "skipped": "FAILED",
    "out_of_time": "KILLED",
    "interrupted": "KILLED",
    "not_started": "KILLED",
}
TAG_PARENT, TAG_TRIAL, TAG_STATUS, TAG_ERROR = "sweep.parent", "sweep.trial", "sweep.status", "sweep.error"


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep shares (JSON-able: it travels to Ray workers)."""

    name: str
    dir: str  # the sweep folder; trial folders below it
    workspace: str
    parent_run_id: str
    tracking: dict[str, Any]  # TrackingTarget fields
    prepared: dict[str, Any]  # pipeline.Prepared fields
    threads: int
    deadline: float | None  # time.time() by which trials stop (marked out_of_time)
    evaluate: bool
    store: str | None = None  # object storage: the URI trial folders persist under (fusion/sweep/store.py)
    cache: str = ""  # storage.cache: the node-local copies of trial folders and data

    def trial_dir(self, trial_id: str) -> Path:
        """Where this process works on the trial's files (a node-local copy on object storage)."""
        if self.store:
            from fusion.sweep.store import local_dir

            return local_dir(self.cache, Path(self.dir).name, trial_id)
        return Path(self.dir) / trial_id

    def trial_uri(self, trial_id: str) -> str:
        assert self.store is not None
        return f"{self.store}/{trial_id}"

    def save(self, trial_id: str, *names: str) -> None:
        """On object storage: these files of the trial's local copy, to the store."""
        if self.store:
            from fusion.sweep.store import push

            push(self.trial_dir(trial_id), self.trial_uri(trial_id), names)

    def load(self, trial_id: str) -> None:
        """On object storage: the trial's records and checkpoints, from the store."""
        if self.store:
            from fusion.sweep.store import CHECKPOINT_FILES, pull

            pull(self.trial_uri(trial_id), self.trial_dir(trial_id), (STATUS_FILE, WORKER_FILE, *CHECKPOINT_FILES))

    def status(self, trial_id: str) -> dict[str, Any] | None:
        if not self.store:
            return read_status(self.trial_dir(trial_id))
        from fusion.sweep.store import read_bytes

        data = read_bytes(self.trial_uri(trial_id), STATUS_FILE)
        return json.loads(data) if data else None

    def has(self, trial_id: str, name: str) -> bool:
        """The trial has that file (a started trial has its WORKER_FILE)."""
        if not self.store:
            return (self.trial_dir(trial_id) / name).is_file()
        from fusion.sweep.store import exists

        return exists(self.trial_uri(trial_id), name)

    def record(self, trial_id: str, record: dict[str, Any]) -> None:
        write_status(self.trial_dir(trial_id), record)
        self.save(trial_id, STATUS_FILE)

    def prepared_data(self):
        from fusion.pipeline import Prepared

        return Prepared(**{**self.prepared, "root": Path(self.prepared["root"])})


def read_status(trial_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((trial_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_status(trial_dir: Path, record: dict[str, Any]) -> None:
    from fusion.io import write_json_atomic

    write_json_atomic(trial_dir / STATUS_FILE, record)


def child_run(ctx: SweepContext, trial: dict[str, Any], cfg=None):
    """The trial's MLflow run under the sweep's parent: found by its tags when an earlier
    attempt made it (reopened), else created."""
    from fusion import pipeline

    target = tracking.TrackingTarget(**ctx.tracking)
    client = tracking.client(target)
    tdir = ctx.trial_dir(trial["id"])
    found = find_child_run(ctx, trial["id"])
    name = f"{ctx.name}/{trial['id']}"
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return pipeline.RunInfo(name, tdir, target, run_id, Path(ctx.workspace))
    tags = {
        "mlflow.parentRunId": ctx.parent_run_id,
        TAG_PARENT: ctx.parent_run_id,
        TAG_TRIAL: trial["id"],
        "sweep.name": ctx.name,
        "report.label": trial["id"],
        **({"sweep.depends_on": trial["depends_on"]} if trial.get("depends_on") else {}),
    }
    if cfg is None:  # a trial whose configuration did not resolve: a run that says why
        run_id = client.create_run(
            tracking.experiment_id(target), run_name=name, tags={**tags, TAG_STATUS: "failed"}
        ).info.run_id
        from fusion.config import flatten

        for k, v in sorted(flatten(trial.get("overrides", {})).items()):
            client.log_param(run_id, k, tracking.param_value(v))
        return pipeline.RunInfo(name, tdir, target, run_id, Path(ctx.workspace))
    return pipeline.start(
        Path(ctx.workspace), cfg, ctx.prepared_data(), name=name, extra_tags=tags, run_dir=tdir, target=target
    )


def find_child_run(ctx: SweepContext, trial_id: str) -> list:
    """The trial's MLflow run under the sweep's parent, if one was made ([] if not)."""
    target = tracking.TrackingTarget(**ctx.tracking)
    return tracking.client(target).search_runs(
        [tracking.experiment_id(target)],
        max_results=1,
        filter_string=f"tags.`{TAG_PARENT}` = '{ctx.parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
    )


def record_failure(ctx: SweepContext, trial: dict[str, Any], run, error: str, status: str = "failed") -> dict:
    client = tracking.client(run.target)
    client.set_tag(run.run_id, TAG_STATUS, status)
    client.set_tag(run.run_id, TAG_ERROR, error[:5000])
    client.log_text(run.run_id, error, "error.txt")
    client.set_terminated(run.run_id, RUN_STATUS[status])
    record = {"status": status, "run_id": run.run_id, "error": error}
    ctx.record(trial["id"], record)
    return record


def execute(trial: dict[str, Any], ctx: SweepContext, report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run one trial to its end (completed, early_stopped, out_of_time or failed); returns
    its status record, also written to <trial dir>/status.json."""
    import torch

    from fusion import pipeline
    from fusion.config import Config

    tdir = ctx.trial_dir(trial["id"])
    tdir.mkdir(parents=True, exist_ok=True)
    ctx.load(trial["id"])  # object storage: where an earlier attempt, perhaps on another node, got to
    attempt = _next_attempt(tdir)
    ctx.save(trial["id"], WORKER_FILE)
    torch.set_num_threads(ctx.threads)
    if not ctx.tracking["artifact_location"]:
        # a worker has its node's environment, not the driver's: runs:/ and models:/ URIs
        # read in this trial (init_from, champions) must go to the sweep's server
        os.environ[tracking.TRACKING_ENV] = ctx.tracking["uri"]
    if trial.get("error"):
        return record_failure(ctx, trial, child_run(ctx, trial), trial["error"])
    config, prepared, local = trial["config"], ctx.prepared_data(), None
    if trial.get("data"):  # object storage: this node's copy of the data the trial reads
        from dataclasses import replace

        from fusion.data.node_cache import DataRef, localise, materialise

        ref = DataRef(**trial["data"])
        local = materialise(ref, ctx.cache)
        config = localise(config, ref, local)
        prepared = replace(prepared, root=Path(localise(str(prepared.root), ref, local)))
    cfg = Config.model_validate(config)
    run = child_run(ctx, trial, cfg)  # on object storage the driver made it: found, not made here
    if local is not None:
        run = replace(run, workspace=local)  # the prepared test sets are read from there
    tracking.set_tags(run.target, run.run_id, {"sweep.attempts": str(attempt)})
    ckpt = tdir / CHECKPOINTS
    try:
        if cfg.train.ray.num_workers > 1:
            state = _train_data_parallel(trial, cfg, prepared, run, ctx, attempt, under_tune=report is not None)
        else:
            callbacks: list = [_Report(report)] if report else []
            if ctx.store:
                from fusion.sweep.store import Mirror

                callbacks.append(Mirror(tdir, ctx.trial_uri(trial["id"])))
            state = pipeline.train_in_process(
                cfg, prepared, run, ckpt, callbacks, ctx.deadline, executor="ray-tune" if report else "local"
            )
        status = state.stopped or "completed"
        if status in DONE:
            pipeline.publish(run, ckpt)
            if ctx.evaluate:
                pipeline.evaluate(cfg, prepared, run, ckpt)
    except (FusionError, FloatingPointError) as exc:  # deterministic: retrying cannot help
        log.error("trial %s failed: %s", trial["id"], exc)
        return record_failure(ctx, trial, run, f"{type(exc).__name__}: {exc}")
    history = state.history
    final = {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, float)}
    record = {
        "status": status,
        "run_id": run.run_id,
        "epochs": state.epoch,
        "attempts": attempt,
        "best_val_loss": state.best_val if history else None,
        "final": final,
    }
    tracking.set_tags(run.target, run.run_id, {TAG_STATUS: status})
    tracking.end_run(run.target, run.run_id, RUN_STATUS[status])
    ctx.record(trial["id"], record)
    return record


def _train_data_parallel(trial: dict[str, Any], cfg, prepared, run, ctx: SweepContext, attempt: int, under_tune: bool):
    """train.ray.num_workers > 1: the trial's training as a Ray Train run of N workers."""
    from fusion import pipeline
    from fusion.config import Config
    from fusion.errors import ConfigError
    from fusion.train.distributed import train_trial_with_ray

    if not under_tune:
        raise ConfigError(
            f"train.ray.num_workers={cfg.train.ray.num_workers}: a data-parallel trial trains on Ray workers; "
            "run the sweep without --no-ray"
        )
    pipeline.executor_tags(cfg, run, "ray-tune", max(1, int(cfg.train.ray.cpus_per_worker)))
    tdir, root, remote = ctx.trial_dir(trial["id"]), prepared.root, None
    if ctx.store:  # workers on other nodes: the workspace's paths, each mapped to that node's copy there
        cfg, root = Config.model_validate(trial["config"]), ctx.prepared_data().root
        store = {"uri": ctx.trial_uri(trial["id"]), "sweep": Path(ctx.dir).name, "trial": trial["id"]}
        remote = {"data": trial["data"], "cache": ctx.cache, "store": store}
    state = train_trial_with_ray(cfg, root, run, tdir / CHECKPOINTS, ctx.deadline, attempt, remote)
    if ctx.store:  # rank 0 may have trained on another node: the checkpoints to publish and evaluate
        from fusion.sweep.store import CHECKPOINT_FILES, pull

        pull(ctx.trial_uri(trial["id"]), tdir, CHECKPOINT_FILES)
    return state


def _next_attempt(tdir: Path) -> int:
    """Count starts of this trial and say where it runs and from which epoch (an operator's
    first questions)."""
    from fusion.checkpoint import LAST, load_checkpoint
    from fusion.io import write_json_atomic

    previous = 0
    try:
        previous = int(json.loads((tdir / WORKER_FILE).read_text())["attempt"])
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        pass
    last = tdir / CHECKPOINTS / LAST
    epoch = int(load_checkpoint(last)["epoch"]) if last.is_file() else 0
    write_json_atomic(
        tdir / WORKER_FILE,
        {
            "attempt": previous + 1,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "starts_at_epoch": epoch,  # 0: from the start; else it continues from checkpoints/last.pt
        },
    )
    if epoch:
        log.warning("trial %s: attempt %d continues from epoch %d", tdir.name, previous + 1, epoch)
    return previous + 1


class _Report:
    """Trainer callback: each epoch's metrics to Ray Tune (its progress table and results)."""

    def __init__(self, report: Callable[[dict], None]):
        self.report = report

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        self.report({k: v for k, v in metrics.items() if k in ("epoch", "val/loss", "train/epoch_loss")})


def ray_trainable(config: dict[str, Any], trials: dict[str, dict], sweep: dict[str, Any]) -> None:
    """Ray Tune function trainable: config = {"trial": trial id}; `trials` (id -> payload) and
    `sweep` (SweepContext fields) come through tune.with_parameters."""
    from ray import tune

    record = execute(trials[config["trial"]], SweepContext(**sweep), report=tune.report)
    tune.report({"status": record["status"], "done_epochs": float(record.get("epochs", 0))})
