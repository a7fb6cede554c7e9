"""The `sources` registry of params.yaml: a named dataset in a published layout, read by path."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fusion.config.base import StrictModel


class SourceSpec(StrictModel):
    """A dataset in a published layout, read by path (see fusion/data/sources/)."""

    layout: str
    path: str
    test_fraction: float = Field(0.25, gt=0, lt=1)  # held out by group (scene, case, sequence)
    options: dict[str, Any] = {}
    name: str | None = None  # the `sources` registry entry it came from, if any


def registry_spec(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A `sources` registry entry as a train.source mapping (SourceSpec fields)."""
    entry = dict(entry)
    spec = {"layout": entry.pop("layout", None), "path": entry.pop("path", None), "name": name}
    if "test_fraction" in entry:
        spec["test_fraction"] = entry.pop("test_fraction")
    return {**spec, "options": entry}
