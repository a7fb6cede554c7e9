"""Checkpoints: the file format, atomic save, data-only load, and finding one.

A checkpoint is a dict tagged with CHECKPOINT_FORMAT holding the model's registry name,
variant, options and stage beside its weights, so `model_from_checkpoint` can rebuild the
network without the config that trained it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from fusion.device import in_layout
from fusion.errors import ConfigError, DataError, output_error

CHECKPOINT_FORMAT = "fusionflow-checkpoint/1"
LAST, BEST = "last.pt", "best.pt"
CHECKPOINT_NAMES = (BEST, LAST)
# what a resumed run needs and a fused image does not
TRAINING_STATE = ("state_dict", "optimizer", "scheduler", "scaler", "torch_rng")
_MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "gs://", "http://", "https://", "file://")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path, exc) from exc
    except RuntimeError as exc:  # torch.save's zip writer reports a failed write as RuntimeError
        if "writ" not in str(exc) and "inline_container" not in str(exc):
            raise
        raise output_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def untrained_checkpoint(path: Path, model: str, variant: str, seed: int = 0, **extra: Any) -> Path:
    """A checkpoint of `model`/`variant` freshly initialised under `seed`: what the tests, the
    benchmarks and the GPU check fuse with where trained weights are not the point (`extra`
    adds or replaces payload keys)."""
    from fusion.models import build_model

    torch.manual_seed(seed)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model,
        "variant": variant,
        "model_options": {"released": False},
        "state_dict": build_model(model, variant).state_dict(),
    }
    save_checkpoint(path, {**payload, **extra})
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Checkpoints are data, never code: weights_only=True refuses pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any unreadable file is the same one-line error
        raise DataError(f"{path}: not a loadable fusionflow checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a fusionflow checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    return payload


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from fusion.models import build_model

    payload = load_checkpoint(path, map_location=device)
    try:
        model = build_model(payload["model"], payload["variant"], **payload["model_options"])
    except ConfigError as exc:  # the tags name no model we have: say so about the file, not about train.*
        raise DataError(
            f"{path}: its tags (model {payload['model']!r}, variant {payload['variant']!r}) name no "
            f"registered network ({exc})"
        ) from exc
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # same names, other shapes (strict=False still refuses those)
        first = str(exc).strip().splitlines()[-1].strip()
        raise DataError(
            f"{path}: its weights do not fit {payload['model']} {payload['variant']} ({first}): a "
            "checkpoint of another variant or options under a wrong tag"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        # strict loading would raise a RuntimeError listing hundreds of keys; one line names the cause
        raise DataError(
            f"{path}: its weights are not those of {payload['model']} {payload['variant']} "
            f"({len(result.missing_keys)} missing, e.g. {result.missing_keys[:2]}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:2]}): a checkpoint "
            "of another model or variant under a wrong tag"
        )
    # the layout it trained in: channels-last and NCHW kernels round differently
    return in_layout(model, device).eval(), payload


def checkpoint_in(folder: Path) -> Path:
    """best.pt, else last.pt, in `folder` or its checkpoints/ or artifacts/ (an MLflow model folder)."""
    for sub in (folder, folder / "checkpoints", folder / "artifacts"):
        for name in CHECKPOINT_NAMES:
            if (sub / name).is_file():
                return sub / name
    raise DataError(
        f"{folder}: no checkpoint ({' or '.join(CHECKPOINT_NAMES)}) in this folder, its checkpoints/ or artifacts/"
    )


def resolve_checkpoint(spec: str | Path, download_dir: Path | None = None) -> Path:
    """A local checkpoint file for `spec`: a .pt file, a run folder, or an MLflow artifact URI.

    `runs:/RUN_ID` alone means that run's best checkpoint (checkpoints/best.pt, else last.pt);
    any other MLflow URI (runs:/RUN_ID/path, models:/name@alias, mlflow-artifacts:/...) is
    downloaded with MLflow's client from the tracking server in MLFLOW_TRACKING_URI.
    """
    text = str(spec)
    if not text.startswith(_MLFLOW_SCHEMES):
        path = Path(text)
        if path.is_file():
            return path
        if path.is_dir():
            return checkpoint_in(path)
        raise DataError(
            f"--model {text}: no such checkpoint file or folder (or use an MLflow URI such as runs:/RUN_ID)"
        )

    from fusion.tracking import current_uri, download_first

    dest = Path(download_dir or tempfile.mkdtemp(prefix="fusionflow-model-"))
    candidates = [text]
    if text.startswith("runs:/") and text.rstrip("/").count("/") == 1:
        candidates = [f"{text.rstrip('/')}/checkpoints/{name}" for name in CHECKPOINT_NAMES]
    local, errors = download_first(candidates, dest)
    if local is None:
        raise DataError(f"--model {text}: cannot download a checkpoint from {current_uri()} ({'; '.join(errors)})")
    return local if local.is_file() else checkpoint_in(local)


def inference_payload(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint's tags without its training state, and where it was read from."""
    out = {k: v for k, v in payload.items() if k not in TRAINING_STATE}
    out["path"] = str(path)
    return out
