"""Options several commands share, declared once so their help reads the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Workspace = Annotated[
    Path | None,
    # parentheses: rich would take "[default: ...]" for a style tag and print nothing of it
    typer.Option(
        "--workspace",
        "-w",
        help="Folder with params.yaml and dvc.yaml (default: the current folder or the nearest "
        "one above it with both, else $FUSIONFLOW_WORKSPACE, else this checkout)",
    ),
]
Profile = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="Profile from params.yaml: smoke (minutes on a CPU), tiny (tests), paper, or default (no overrides)",
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a parameter, e.g. --set train.lr=2e-4 (repeatable)"
    ),
]
Workers = Annotated[int, typer.Option("--workers", min=0, help="Processes (0 = every core, 1 = this process only)")]
NoRay = Annotated[bool, typer.Option("--no-ray", help="Train in this process instead of through Ray")]
