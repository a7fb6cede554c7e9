"""Ctrl-C (or SIGTERM) in a tracked command, and continuing the run it stopped.

An interrupted `fusion train` or `fusion run` marks every MLflow run the process left open
KILLED (a plain exit would leave it RUNNING, Prefect's task handler would record FAILED) and
says how to go on. `fusion train --resume RUN_ID` reopens that same run and trains on from
its last checkpoint: the trainer resumes bit for bit (fusion/train/loop.py), Ray restores its
own checkpoint from the run's folder, and the MLflow callback skips the steps the run already
holds, so each step is in the metric history once. SIGTERM stops a command as Ctrl-C does
(fusion/stop_signals.py).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fusion import pipeline, stop_signals, tracking
from fusion.config import Config, load_config
from fusion.errors import FusionError

log = logging.getLogger(__name__)

EPHEMERAL_STARTUP_S = 120  # seconds to wait for Prefect's temporary API server (its default: 20)
_RUN_ID = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")


def interrupted(workspace: Path | None = None, out: Path | None = None) -> str:
    """Mark the runs this process left open KILLED; the one line telling the user how to go on
    (`workspace`: the --workspace the command was given, repeated in that line; `out`: the
    folder of an untracked `fusion train --out` run)."""
    stop_signals.ignore_further()  # a second Ctrl-C or SIGTERM must not cut this bookkeeping short
    killed = tracking.kill_open_runs()
    if not killed and out is not None and (out / "last.pt").is_file():
        return (
            f"interrupted: continue with `fusion train --out {out} --resume {out / 'last.pt'}` (same --profile/--set)"
        )
    if not killed:
        return "interrupted before any MLflow run was started; nothing to continue"
    ws = f" --workspace {workspace}" if workspace is not None else ""
    how = " and ".join(f"`fusion train --resume {run_id}{ws}`" for run_id in killed)
    return f"interrupted: MLflow run {', '.join(killed)} marked KILLED; continue it with {how}"


def shield_prefect_server() -> None:
    """Start Prefect's ephemeral API server (used when PREFECT_API_URL is unset) with SIGINT
    blocked, which the server process inherits: the Ctrl-C a terminal sends to the whole
    process group then leaves it running, so Prefect records the interrupted flow run as
    Crashed and returns; with its server gone it would retry for minutes. Prefect still stops
    the server when the command exits (SIGTERM)."""
    import signal

    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    # Prefect waits 20 s by default; on a loaded 2-core machine the server's imports and database
    # migrations alone can take longer, and the nightly would then fail before it started
    wait = max(int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()), EPHEMERAL_STARTUP_S)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start(timeout=wait)  # the instance Prefect's client uses (one per process)
    except RuntimeError as exc:  # Prefect's "Timed out while attempting to connect ..." with the server's output
        raise FusionError(
            f"Prefect's temporary API server did not answer within {wait} s ({str(exc).splitlines()[0]}): "
            "start one with `prefect server start` and set PREFECT_API_URL, or raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        ) from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def run_id_of(spec: str) -> str | None:
    """The MLflow run id `spec` names (RUN_ID or runs:/RUN_ID), else None."""
    m = _RUN_ID.fullmatch(spec.strip())
    return m.group(1) if m else None


def train_new(workspace: Path, cfg: Config, use_ray: bool) -> tuple[pipeline.RunInfo, Path]:
    """A new MLflow run trained to its end: FINISHED, FAILED on an error; on Ctrl-C left for
    `interrupted` to mark KILLED. Returns the run and its checkpoint folder."""
    tracking.reachable(tracking.target(cfg, workspace).uri)
    prepared = pipeline.prepare(workspace, cfg)
    pipeline.check_storage(workspace, cfg, prepared, use_ray)
    run = pipeline.start(workspace, cfg, prepared)
    return run, _train_to_end(cfg, prepared, run, use_ray)


def resume(workspace: Path, spec: str, use_ray: bool) -> tuple[pipeline.RunInfo, Path]:
    """Continue the MLflow run `spec` (RUN_ID or runs:/RUN_ID) from its last checkpoint, with
    the configuration and the executor (Ray or in-process) it was started with."""
    run_id = run_id_of(spec)
    if run_id is None:
        raise FusionError(f"--resume {spec}: neither a checkpoint file nor an MLflow run id (32 hex digits)")
    target = tracking.target(load_config(workspace), workspace)
    tracking.reachable(target.uri)
    try:
        held = tracking.get_run(target, run_id)
    except tracking.RunNotFound as exc:
        raise FusionError(f"--resume {run_id}: no such run in {target.uri} ({exc.detail})") from None
    if held.info.status == "FINISHED":
        raise FusionError(
            f"--resume {run_id}: that run is FINISHED, nothing to continue; train a new one without --resume"
        )
    cfg = pipeline.run_config(target, run_id)
    run = pipeline.RunInfo(
        held.info.run_name, workspace / pipeline.RUNS_DIR / held.info.run_name, target, run_id, workspace
    )
    # on object storage (storage.uri) the checkpoints are in the bucket, found by the run's name
    if not run.dir.is_dir() and not cfg.storage.object_store:
        raise FusionError(
            f"--resume {run_id}: its checkpoints ({run.dir}) are not in this workspace; resume it in "
            "the workspace it was trained in (--workspace)"
        )
    prepared = pipeline.prepare(workspace, cfg)
    trained_on = held.data.tags.get("data.version")
    if trained_on and trained_on != prepared.version:
        raise FusionError(
            f"--resume {run_id}: the run trained on data version {trained_on[:12]}, the workspace now "
            f"prepares {prepared.version[:12]}; resuming would mix the two (train a new run instead)"
        )
    executor = held.data.tags.get("train.executor")
    if executor in ("ray", "local") and (executor == "ray") != use_ray:
        log.info(
            "run %s trained %s: it continues the same way", run_id, "through Ray" if executor == "ray" else "in-process"
        )
        use_ray = executor == "ray"
    tracking.reopen_run(target, run_id)
    log.info("resuming MLflow run %s (%s, was %s)", run_id, run.name, held.info.status)
    return run, _train_to_end(cfg, prepared, run, use_ray)


def _train_to_end(cfg: Config, prepared: pipeline.Prepared, run: pipeline.RunInfo, use_ray: bool) -> Path:
    try:
        ckpt = pipeline.train(cfg, prepared, run, use_ray=use_ray)
    except KeyboardInterrupt:
        raise  # the command's handler marks it KILLED and says how to continue
    except BaseException:
        tracking.end_run(run.target, run.run_id, "FAILED")
        raise
    tracking.end_run(run.target, run.run_id)
    return ckpt
