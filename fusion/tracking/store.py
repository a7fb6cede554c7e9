"""The tracking store: where runs go, and the calls that create, log to and end them.

Embedded default: a SQLite store and an artifact folder under the workspace's `mlflow/`.
Set MLFLOW_TRACKING_URI to use the team's server instead. Everything goes through an
explicit run id (no fluent global state), so Prefect tasks and Ray workers can all log
into the same run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.config import Config
from fusion.errors import FusionError
from fusion.stop_signals import is_stop

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
# MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) make a command wait about 4
# minutes on a server that is down; these bound it to seconds. A value the user set wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
PROBE_SECONDS = 5.0
# The experiment's kind: MLflow 3 UIs without the GenAI / Model training switch open an
# experiment of this kind on its runs, not on the GenAI "Traces" view.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "workflowType=machine_learning"  # the UI's "Model training" view (3.x, its workflow switch)


class TrackingError(FusionError):
    """The tracking store cannot be reached, or does not exist where the URI points."""


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    experiment: str
    artifact_location: str | None  # only set for the embedded store

    @property
    def is_embedded(self) -> bool:
        return self.artifact_location is not None


# Runs this process started or reopened and has not ended: what a Ctrl-C leaves behind.
_OPEN: dict[str, TrackingTarget] = {}
_INTERRUPTED: dict[str, TrackingTarget] = {}  # ended KILLED by a handler while an interrupt propagated


def target(cfg: Config, workspace: Path) -> TrackingTarget:
    uri = os.environ.get(TRACKING_ENV)
    if uri:
        return TrackingTarget(checked_uri(uri, TRACKING_ENV), cfg.tracking.experiment, None)
    db = cfg.tracking.default_uri
    prefix = "sqlite:///"
    if db.startswith(prefix) and not Path(db[len(prefix) :]).is_absolute():
        # the project's own store under the workspace: the one store created unasked
        path = (workspace / db[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = f"{prefix}{path}"
    db = checked_uri(db, "tracking.default_uri")
    artifacts = (workspace / cfg.tracking.artifact_root).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return TrackingTarget(db, cfg.tracking.experiment, artifacts.as_uri())


def current_uri(workspace: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the embedded store of the workspace (this checkout by default):
    where `runs:/...` and `models:/...` URIs given on the command line are looked up. A
    server that does not answer fails here, within seconds, naming the URI."""
    uri = os.environ.get(TRACKING_ENV)
    if uri:
        return reachable(checked_uri(uri, TRACKING_ENV), TRACKING_ENV)
    from fusion.config import load_config, resolve_workspace

    ws = resolve_workspace(workspace)
    return reachable(target(load_config(ws), ws).uri)


def checked_uri(uri: str, source: str) -> str:
    """`uri`, once MLflow's HTTP retries are bounded and a local store's folder is known to
    exist: MLflow creates a missing SQLite or file store without a word, so a typo in the
    path would start a new, empty store instead of failing."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    path = local_store_path(uri)
    if path is not None and not path.parent.is_dir():
        raise TrackingError(
            f"{source}={uri}: folder {path.parent} does not exist, so there is no tracking store "
            "there; fix the URI (or create the folder to start a new store)"
        )
    return uri


def local_store_path(uri: str) -> Path | None:
    """The file (SQLite) or folder (file store) a local tracking URI names; None for servers
    and databases elsewhere."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:"):
        rest = uri.split("?", 1)[0][len("sqlite:") :]
        if not rest.startswith("///") or rest[3:] in ("", ":memory:"):
            return None  # in memory
        return Path(unquote(rest[3:])).resolve()
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme == "":  # a plain path is a file store
        return Path(uri).resolve()
    return None


def reachable(uri: str, source: str | None = None) -> str:
    """`uri`, once a TCP connection to its server succeeds: a refused or silent server fails in
    PROBE_SECONDS rather than after MLflow's retries. `source` names where the URI came from."""
    import socket
    from urllib.parse import urlparse

    source = source or (TRACKING_ENV if os.environ.get(TRACKING_ENV) else "tracking.default_uri")
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return uri
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        socket.create_connection((parsed.hostname or "", port), timeout=PROBE_SECONDS).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise TrackingError(
            f"{source}={uri}: tracking server unreachable ({reason}); start it, or point "
            f"{TRACKING_ENV} at one that runs"
        ) from None
    return uri


def client(t: TrackingTarget):
    return _client(t.uri)


@functools.lru_cache(maxsize=8)
def _client(uri: str):
    # One client per store and process: opening a SQLite store checks its schema, which
    # costs far more than logging a step.
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


class RunNotFound(TrackingError):
    """The store answered, and has no such run; `detail` is the store's own first line."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def get_run(t: TrackingTarget, run_id: str) -> Any:
    """Run `run_id` of store `t`; RunNotFound when the store does not hold it."""
    from fusion.tracking.failures import is_mlflow_error

    try:
        return client(t).get_run(run_id)
    except Exception as exc:
        if not is_mlflow_error(exc):
            raise
        detail = str(exc).splitlines()[0]
        raise RunNotFound(f"run {run_id}: not found in {t.uri} ({detail})", detail) from None


def experiment_id(t: TrackingTarget) -> str:
    c = client(t)
    exp = c.get_experiment_by_name(t.experiment)
    if exp is None:
        return c.create_experiment(
            t.experiment, artifact_location=t.artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older fusionflow; a kind the user chose stays
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def environment_tags() -> dict[str, str]:
    import numpy
    import torch

    return {
        "env.python": platform.python_version(),
        "env.torch": torch.__version__,
        "env.numpy": numpy.__version__,
        "env.platform": platform.platform(),
        "env.cuda": str(torch.cuda.is_available()).lower(),
    }


def start_run(t: TrackingTarget, run_name: str, cfg: Config, tags: dict[str, str]) -> str:
    from mlflow.entities import Param

    c = client(t)
    run = c.create_run(experiment_id(t), run_name=run_name, tags={**tags, **environment_tags()})
    _OPEN[run.info.run_id] = t
    params = [Param(k, param_value(v)) for k, v in sorted(cfg.flat().items())]
    for i in range(0, len(params), 100):  # MLflow's batch limit for params
        c.log_batch(run.info.run_id, params=params[i : i + 100])
    c.log_text(run.info.run_id, json.dumps(cfg.loggable(), indent=2), "config/resolved.json")
    return run.info.run_id


def param_value(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:MAX_PARAM_LEN]


def log_metrics(t: TrackingTarget, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    log_metric_batch(client(t), run_id, metrics, step)


def log_metric_batch(c: Any, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """`metrics` into run `run_id` through client `c`, as few requests as MLflow allows."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(batch), 1000):
        c.log_batch(run_id, metrics=batch[i : i + 1000])


def metric_key(name: str) -> str:
    # MLflow keys allow / . - _ and spaces; a metric like "SSIM_gt mean" stays readable.
    return "".join(ch if ch.isalnum() or ch in "/._- " else "_" for ch in name)


def set_tags(t: TrackingTarget, run_id: str, tags: dict[str, str]) -> None:
    c = client(t)
    for k, v in tags.items():
        c.set_tag(run_id, k, v)


def log_artifact(t: TrackingTarget, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    client(t).log_artifact(run_id, str(path), artifact_path)


def log_artifacts(t: TrackingTarget, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    client(t).log_artifacts(run_id, str(folder), artifact_path)


def end_run(t: TrackingTarget, run_id: str, status: str = "FINISHED") -> None:
    if status == "FAILED" and is_stop(sys.exception()):
        # ended by a handler while Ctrl-C or SIGTERM propagates (a Prefect task's): stopped, not failed
        status = "KILLED"
        _INTERRUPTED[run_id] = t
    client(t).set_terminated(run_id, status)
    _OPEN.pop(run_id, None)


def reopen_run(t: TrackingTarget, run_id: str) -> None:
    """Mark an ended run RUNNING again (a resumed training); end_run ends it as before."""
    client(t).update_run(run_id, status="RUNNING")
    _OPEN[run_id] = t
    _INTERRUPTED.pop(run_id, None)


def kill_open_runs() -> list[str]:
    """Mark KILLED every run this process left RUNNING; returns the runs an interrupt already
    ended KILLED, then those."""
    killed = dict(_INTERRUPTED)
    for run_id, t in list(_OPEN.items()):
        try:
            client(t).set_terminated(run_id, "KILLED")
        except Exception as exc:  # an interrupt's cleanup must not raise past the user
            log.warning("could not mark MLflow run %s KILLED in %s: %s", run_id, t.uri, str(exc).splitlines()[0])
        killed[run_id] = t
        del _OPEN[run_id]
    _INTERRUPTED.clear()
    return list(killed)


def ui_command(t: TrackingTarget) -> str:
    if t.is_embedded:
        import sys

        mlflow_bin = Path(sys.executable).parent / "mlflow"
        return f"{mlflow_bin} ui --backend-store-uri {t.uri} --port 5000"
    return f"open {t.uri}"


def run_url(t: TrackingTarget, run_id: str, base: str = "http://127.0.0.1:5000") -> str:
    exp = client(t).get_run(run_id).info.experiment_id
    root = base if t.is_embedded or not t.uri.startswith("http") else t.uri.rstrip("/")
    # MLflow 3's UI picks its view from this parameter (else the browser's last choice, by
    # default GenAI), not from the experiment's kind tag
    return f"{root}/#/experiments/{exp}/runs/{run_id}?{UI_VIEW}"
