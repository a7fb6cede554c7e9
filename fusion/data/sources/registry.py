"""The layout registry: one `@layout(name, task=, options=)` on each layout's reader.

A reader is `read(root, *, <options>..., skip_bad=False) -> Sources`; its registration
says which fusion task its records have and which params.yaml options it takes, with their
checks, so that validate_spec needs nothing else. `skip_bad` is added to every layout.
The readers register when the package is imported (fusion/data/sources/__init__.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from fusion.data.sources.options import SKIP_BAD, Option
from fusion.data.sources.records import TASKS, Sources

Reader = Callable[..., Sources]
_R = TypeVar("_R", bound=Reader)
_V = TypeVar("_V")


@dataclass(frozen=True)
class Layout:
    name: str
    # None: the layout is not a fusion task (duts) or the spec must say (folders).
    task: str | None
    read: Reader
    options: Mapping[str, Option]  # in the reader's keyword order, skip_bad last

    @property
    def required(self) -> list[str]:
        return [key for key, option in self.options.items() if option.required]


LAYOUT_REGISTRY: dict[str, Layout] = {}


def layout(name: str, *, task: str | None, options: Mapping[str, Option] | None = None) -> Callable[[_R], _R]:
    """Register the decorated reader as layout `name`; returns it unchanged."""
    if task is not None and task not in TASKS:
        raise ValueError(f"layout {name}: task {task!r} not one of {TASKS}")
    if "skip_bad" in (options or {}):
        raise ValueError(f"layout {name}: skip_bad is every layout's option; do not declare it")

    def register(read: _R) -> _R:
        if name in LAYOUT_REGISTRY:
            raise ValueError(
                f"layout {name}: registered twice ({LAYOUT_REGISTRY[name].read.__qualname__}, {read.__qualname__})"
            )
        LAYOUT_REGISTRY[name] = Layout(name, task, read, {**(options or {}), "skip_bad": SKIP_BAD})
        return read

    return register


class _View(Mapping[str, _V]):
    """A read-only name -> <one field of the registration> view of the registry."""

    def __init__(self, field: Callable[[Layout], _V]):
        self._field = field

    def __getitem__(self, name: str) -> _V:
        return self._field(LAYOUT_REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(LAYOUT_REGISTRY)

    def __len__(self) -> int:
        return len(LAYOUT_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


LAYOUTS: Mapping[str, Reader] = _View(lambda entry: entry.read)
LAYOUT_TASKS: Mapping[str, str | None] = _View(lambda entry: entry.task)
