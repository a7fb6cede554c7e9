"""What the commands print with: the error console, logging, progress bars, tables of means."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console(stderr=True, soft_wrap=True)  # errors stay one greppable line


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    # Client libraries log every HTTP request at INFO; that drowns the pipeline's own lines.
    for noisy in ("httpx", "httpcore", "urllib3", "alembic", "mlflow.store.db.utils", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress_bar(label: str) -> tuple[Progress, Callable[[int, int | None], None]]:
    """A rich progress bar on stderr, driven through a (done, total) callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    )
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def print_means(
    means: dict[str, dict[str, float]], names: list[str], title: str, seconds: dict[str, float] | None = None
) -> None:
    from fusion.evaluate import best_by_metric

    best = best_by_metric(means, names)
    table = Table(title=title)
    table.add_column("metric")
    for m in means:  # method names break at their underscores rather than being cut ("choose_m…")
        table.add_column(escape(m).replace("_", "_\n"), justify="right", overflow="fold")
    for n in names:
        table.add_row(
            n,
            *(
                f"[bold]{means[m][n]:.4f}[/]" if m in best[n] and len(means) > 1 else f"{means[m][n]:.4f}"
                for m in means
            ),
        )
    if seconds:
        table.add_row("s/pair", *(f"{seconds[m]:.4f}" for m in means))
    Console().print(table)


def exit_interrupted(workspace: Path | None, out: Path | None = None) -> NoReturn:
    """Ctrl-C or SIGTERM: runs left open become KILLED, one line says how to continue, exit 130
    (143 after SIGTERM)."""
    from fusion.interrupts import interrupted
    from fusion.stop_signals import exit_status

    console.print(f"[bold yellow]{escape(interrupted(workspace, out))}[/]", highlight=False)
    raise typer.Exit(exit_status())
