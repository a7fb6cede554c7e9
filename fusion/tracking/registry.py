"""The MLflow model registry: registered models, versions and their aliases."""

from __future__ import annotations

from typing import Any

from fusion.tracking.failures import is_mlflow_error


def ensure_registered_model(c: Any, name: str, description: str) -> None:
    """Create registered model `name` unless it exists."""
    try:
        c.get_registered_model(name)
    except Exception as exc:
        if not is_mlflow_error(exc):
            raise
        c.create_registered_model(name, description=description)


def version_by_alias(c: Any, name: str, alias: str) -> Any | None:
    """The model version `name@alias`, or None when no version holds the alias."""
    try:
        return c.get_model_version_by_alias(name, alias)
    except Exception as exc:
        if not is_mlflow_error(exc):
            raise
        return None
