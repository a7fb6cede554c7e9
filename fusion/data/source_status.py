"""The state of every entry of the `sources` registry: what `fusion data sources` lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusion.config import Config, source_spec
from fusion.errors import FusionError


@dataclass(frozen=True)
class SourceStatus:
    name: str
    layout: str
    path: str  # as written in params.yaml
    records: int | None  # None: the source failed
    problem: str | None = None  # why it failed


def source_statuses(cfg: Config, workspace: Path, check: bool = False) -> list[SourceStatus]:
    """Every registered source, by name, with its pairs counted (and, with `check`, every image
    decoded); a source that fails says why and the others are still listed."""
    from fusion.data import sources
    from fusion.data.training import load_pairs

    statuses = []
    for name in sorted(cfg.sources):
        spec = source_spec(cfg, name, workspace)
        records, problem = None, None
        try:
            recs = load_pairs(spec)
            if check:
                sources.check_pairs(recs)
            records = len(recs)
        except FusionError as exc:
            problem = str(exc)
        statuses.append(SourceStatus(name, spec.layout, str(cfg.sources[name]["path"]), records, problem))
    return statuses
