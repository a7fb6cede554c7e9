"""The records a layout reader returns, and the report of what is wrong with its files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from fusion.errors import DataError
from fusion.tasks import TASKS


@dataclass(frozen=True)
class SourcePair:
    """2..N registered source images of one scene, in the order the task expects."""

    id: str
    task: str
    paths: tuple[Path, ...]
    modalities: tuple[str, ...]
    group: str
    gt: Path | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"SourcePair {self.id}: task {self.task!r} not one of {TASKS}")
        if len(self.paths) < 2 or len(self.paths) != len(self.modalities):
            raise ValueError(f"SourcePair {self.id}: needs >= 2 paths and one modality per path")


@dataclass(frozen=True)
class MaskedImage:
    """A photograph and its saliency mask (DUTS, or a disparity map as .npz), input of the
    multi-focus synthesis; mask None: the synthesis computes a saliency map."""

    id: str
    image: Path
    mask: Path | None
    group: str


class Problem(NamedTuple):
    path: Path
    problem: str


class Report(list):
    """A list of Problem(path, problem); str() renders one line per offending file."""

    def render(self) -> str:
        return "\n".join(f"  {p.path}: {p.problem}" for p in self)

    def __str__(self) -> str:
        return self.render()

    def error(self, headline: str) -> DataError:
        files = len({p.path for p in self})
        return DataError(f"{headline}: {len(self)} problem(s) in {files} file(s)/folder(s)\n{self.render()}")


class Sources(list):
    """Loader result: the records, plus what the loader dropped under skip_bad=True."""

    def __init__(self, items: Iterable = (), problems: Iterable[Problem] = (), root: Path | None = None):
        super().__init__(items)
        self.problems = Report(problems)
        self.root = root
