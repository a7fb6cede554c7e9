"""Manifests of prepared data: what a folder holds, where it came from, and its version.

Every prepared folder carries `manifest.json` (each file with its sha256, the parameters and
the provenance of its inputs). The sha256 of that manifest is the folder's data version:
it changes exactly when a file, a parameter or an input changes, and it is what MLflow runs
record (`data.version`). Paths inside a manifest are relative (to the folder, or to the
source root), so the version does not depend on where a workspace lives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from fusion.errors import DataError
from fusion.io import write_bytes_atomic, write_json_atomic

MANIFEST = "manifest.json"
BAD_INPUTS = "bad_inputs.txt"


def data_version(folder: str | Path) -> str:
    """sha256 of the folder's manifest: the version of the data it holds."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path}: no manifest, so {folder} is not a complete prepared dataset "
            f"(a stage that failed leaves none; re-run `dvc repro`)"
        )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> str:
    write_json_atomic(folder / MANIFEST, manifest)
    return data_version(folder)


def write_bad_inputs(folder: Path, problems: Iterable, headline: str) -> list[dict]:
    """With skip_bad: the report of what was left out, beside the data (and in the manifest)."""
    rows = [{"path": str(p.path), "problem": p.problem} for p in problems]
    if rows:
        text = f"{headline}: {len(rows)} input(s) skipped (skip_bad: true)\n" + "".join(
            f"{r['path']}: {r['problem']}\n" for r in rows
        )
        write_bytes_atomic(folder / BAD_INPUTS, text.encode())
    return rows


def relative(path: str | Path, root: str | Path) -> str:
    """`path` relative to `root` (posix), or as given when it is not under it."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)
