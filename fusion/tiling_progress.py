"""The tiles-done bar of a long fusion (fusion.inference.fuse(progress=True))."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

PROGRESS_DELAY = 2.0  # seconds before a fusion shows its progress bar: quick ones stay silent


class TileProgress:
    """A tiles-done bar on stderr, shown only once a fusion has run for `delay` seconds."""

    def __init__(self, total: int, enabled: bool, delay: float | None = None, console=None, label: str = "fusing"):
        self.total, self.enabled, self.console, self.label = total, enabled, console, label
        self.delay = PROGRESS_DELAY if delay is None else delay
        self.bar: Progress | None = None
        self.timer: threading.Timer | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> TileProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tiles"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console or Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task(self.label, total=self.total)
            self.timer = threading.Timer(self.delay, self.bar.start)
            self.timer.daemon = True
            self.timer.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        if self.bar is not None:
            self.bar.stop()
