"""MLflow, behind one door: every MLflow call of fusionflow goes through this package.

- store: where runs go (the embedded SQLite store or MLFLOW_TRACKING_URI), runs and logging
- spool: records that wait while the server is unreachable, `fusion sync`
- callback: the trainer callback logging a run's metrics
- artifacts: reading a run's artifacts back
- registry: registered models and aliases
- failures: which errors mean "the server is not there" (spool and retry policy)
- model_flavor: the MLflow pyfunc model `mlflow models serve` runs

The core (training, inference, evaluation) imports this package only where a command
asks for tracking, so it runs without MLflow installed.
"""

from fusion.tracking.artifacts import download, download_first, read_text
from fusion.tracking.callback import MlflowCallback
from fusion.tracking.failures import is_mlflow_error, mlflow_error, unreachable
from fusion.tracking.registry import ensure_registered_model, version_by_alias
from fusion.tracking.spool import SPOOL, Spool, SpoolError, sync
from fusion.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    TRACKING_ENV,
    UI_VIEW,
    RunNotFound,
    TrackingError,
    TrackingTarget,
    checked_uri,
    client,
    current_uri,
    end_run,
    environment_tags,
    experiment_id,
    get_run,
    kill_open_runs,
    local_store_path,
    log_artifact,
    log_artifacts,
    log_metric_batch,
    log_metrics,
    metric_key,
    param_value,
    reachable,
    reopen_run,
    run_url,
    set_tags,
    start_run,
    target,
    ui_command,
)

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "SPOOL",
    "TRACKING_ENV",
    "UI_VIEW",
    "MlflowCallback",
    "RunNotFound",
    "Spool",
    "SpoolError",
    "TrackingError",
    "TrackingTarget",
    "checked_uri",
    "client",
    "current_uri",
    "download",
    "download_first",
    "end_run",
    "ensure_registered_model",
    "environment_tags",
    "experiment_id",
    "get_run",
    "is_mlflow_error",
    "kill_open_runs",
    "local_store_path",
    "log_artifact",
    "log_artifacts",
    "log_metric_batch",
    "log_metrics",
    "metric_key",
    "mlflow_error",
    "param_value",
    "reachable",
    "read_text",
    "reopen_run",
    "run_url",
    "set_tags",
    "start_run",
    "sync",
    "target",
    "ui_command",
    "unreachable",
    "version_by_alias",
]
