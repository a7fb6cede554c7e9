"""What the prepare stage hands to training: where the data is and the hashes that pin it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Prepared:
    root: Path
    raw_hash: str
    data_hash: str
    stages_ran: list[str]
    stages_skipped: list[str]
    counts: dict[str, int]
    version: str = "unknown"  # sha256 of the prepared set's manifest (fusion.data.manifest)
