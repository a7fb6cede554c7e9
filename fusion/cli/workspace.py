"""`fusion init`: make a folder a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to make a workspace (created if missing)")] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Replace a params.yaml or dvc.yaml that differs from the default")
    ] = False,
) -> None:
    """Create a workspace: default params.yaml and dvc.yaml, .gitignore, git, DVC.

    For a team's own repository, with fusionflow installed by pip: commands run in the folder (or below it) use it. A file already there and different is refused unless --force; .gitignore only gets the missing lines.
    """
    from fusion.init_workspace import init_workspace

    report = init_workspace(directory, force=force)
    out = Console()
    out.print(f"[bold]workspace[/] {report.root}")
    out.print(f"wrote: {', '.join(report.written) or 'nothing'}; kept: {', '.join(report.kept) or 'nothing'}")
    for note in report.notes:
        out.print(note)
    out.print(f"next: cd {report.root} && fusion data prepare && fusion run")
