"""The nightly's retry and cache policy: what is worth retrying, and when a stage's earlier
result stands (same code, data and parameters)."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from prefect import get_run_logger

from fusion import pipeline, tracking
from fusion.config import Config
from fusion.errors import FusionError
from fusion.git_info import git_diff_hash, git_state

CACHE_DAYS = 30
log = logging.getLogger("flows.nightly")


def is_transient(exc: BaseException | None) -> bool:
    """Worth retrying: infrastructure failed, not the inputs. fusionflow's own errors name a
    bad parameter or file, and a retry would fail the same way."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FusionError):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        module = type(exc).__module__
        if tracking.is_mlflow_error(exc):
            # unreachable, or "try again" codes: transient (a missing run is not)
            return tracking.unreachable(exc)
        if module.startswith("ray"):
            # Ray wraps a worker's exception; a deterministic one shows by name in the text
            return not any(n in str(exc) for n in ("ConfigError", "DataError", "ReproducibilityError"))
        if module.startswith(("requests", "urllib3", "httpx")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_transient(task_, task_run, state) -> bool:
    try:
        state.result()
    except BaseException as exc:  # classified, not handled
        transient = is_transient(exc)
        if not transient:
            get_run_logger().error("%s failed with a deterministic error; not retrying: %s", task_.name, exc)
        return transient
    return False


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def train_key(context, args: dict) -> str | None:
    cfg: Config = args["cfg"]
    git = git_state()
    if git["git.commit"] == "unknown":
        return None  # code not under git: nothing pins it, train again
    code = git["git.commit"] + ("+" + git_diff_hash() if git["git.dirty"] == "true" else "")
    target = tracking.target(cfg, args["workspace"])
    prepared: pipeline.Prepared = args["prepared"]
    return "train-" + digest(
        str(args["workspace"]),
        target.uri,
        target.experiment,
        prepared.version,
        prepared.data_hash,
        cfg.model_dump(mode="json"),
        code,
        args["use_ray"],
    )


def evaluate_key(context, args: dict) -> str:
    cfg: Config = args["cfg"]
    return "evaluate-" + digest(
        args["run"].run_id, args["run"].target.uri, args["prepared"].version, cfg.evaluate.model_dump(mode="json")
    )


def stage_options(cfg: Config) -> dict:
    delays = list(cfg.nightly.retry_delay_seconds) or [0.0]
    return {"retries": cfg.nightly.retries, "retry_delay_seconds": delays}


# --------------------------------------------------------------------------- tasks
