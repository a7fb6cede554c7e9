"""Which workspace a command works in, and reading its params.yaml.

A workspace is a folder holding params.yaml and dvc.yaml (and the pipeline outputs). Like
git and dvc, a command finds it from the current directory upwards; then
$FUSIONFLOW_WORKSPACE; then the checkout fusionflow runs from (an editable install).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fusion.errors import ConfigError

PARAMS_FILE = "params.yaml"
PIPELINE_FILE = "dvc.yaml"
WORKSPACE_ENV = "FUSIONFLOW_WORKSPACE"
_CREATE_HINT = "create one with `fusion init DIR`"


def project_root() -> Path:
    """The checkout this package was installed from (editable install), if it has params.yaml."""
    return Path(__file__).resolve().parents[1]


def find_workspace(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding both params.yaml and dvc.yaml."""
    # both files, so a stray params.yaml of some other tool higher up is not mistaken for one
    for folder in (start, *start.parents):
        if (folder / PARAMS_FILE).is_file() and (folder / PIPELINE_FILE).is_file():
            return folder
    return None


def resolve_workspace(workspace: str | Path | None = None) -> Path:
    """Explicit argument (--workspace), else the current directory or the nearest folder
    above it that is a workspace, else $FUSIONFLOW_WORKSPACE, else the checkout."""
    if workspace:
        candidate, how = Path(workspace), "--workspace"
    elif (found := find_workspace(Path.cwd().resolve())) is not None:
        return found
    elif os.environ.get(WORKSPACE_ENV):
        candidate, how = Path(os.environ[WORKSPACE_ENV]), f"${WORKSPACE_ENV}"
    elif (project_root() / PARAMS_FILE).is_file():
        return project_root()
    else:
        raise ConfigError(
            f"no workspace: no {PARAMS_FILE} + {PIPELINE_FILE} in {Path.cwd()} or any folder above it, "
            f"and {WORKSPACE_ENV} is unset; {_CREATE_HINT}, or pass --workspace"
        )
    candidate = candidate.expanduser().resolve()
    if not (candidate / PARAMS_FILE).is_file():
        raise ConfigError(
            f"workspace {candidate} (from {how}): no {PARAMS_FILE} there; {_CREATE_HINT}, "
            f"or point {how} at a fusionflow workspace or checkout"
        )
    return candidate


def read_params(workspace: Path) -> dict[str, Any]:
    """params.yaml as a mapping; an unusable file is one line naming it and what is wrong."""
    path = workspace / PARAMS_FILE
    fix = f"fix it, or write the default one with `fusion init --force {workspace}`"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; {_CREATE_HINT}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8); {fix}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if "\x00" in text:  # YAML would report a NUL as an unprintable character several lines long
        raise ConfigError(f"{path}: not a text file (contains NUL bytes); {fix}")
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{_where(exc)}; {fix}") from None
    if tree is None:
        raise ConfigError(f"{path}: empty (no parameters); {fix}")
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: the top level is a {type(tree).__name__}, not a mapping of sections "
            f"(seed, sources, data, train, ...); {fix}"
        )
    return tree


def _where(exc: yaml.YAMLError) -> str:
    # PyYAML's own message spans several lines (with a caret under the offending column)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or ""
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{at}{': ' + problem if problem else ''}"
