"""Reading a run's artifacts back: checkpoints, its resolved config, recorded decisions."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fusion.tracking.failures import is_mlflow_error
from fusion.tracking.store import TrackingTarget, current_uri


def download(uri: str, artifact_uri: str, dst: Path) -> Path:
    """The local copy (file or folder) of `artifact_uri` (runs:/..., models:/...) from store `uri`."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per command, not a tqdm bar
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst), tracking_uri=uri))


def download_first(candidates: list[str], dest: Path) -> tuple[Path | None, list[str]]:
    """The first of `candidates` that downloads from the current store, and why the others did not."""
    uri = current_uri()
    errors: list[str] = []
    for artifact_uri in candidates:
        try:
            return download(uri, artifact_uri, dest), errors
        except Exception as exc:  # a missing artifact is an MlflowException or an OSError; anything else is a bug
            if not (isinstance(exc, OSError) or is_mlflow_error(exc)):
                raise
            errors.append(f"{artifact_uri}: {str(exc).splitlines()[0]}")
    return None, errors


def read_text(t: TrackingTarget, artifact_uri: str) -> str:
    """A text artifact's content; MLflow's errors (a missing run or file) propagate."""
    with tempfile.TemporaryDirectory() as tmp:
        return download(t.uri, artifact_uri, Path(tmp)).read_text()
