"""The generic layout: any task, one folder per source, files matched by stem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fusion.data.sources.listing import find_folder, folder_pairs, source_root
from fusion.data.sources.options import FOLDERS, GT, MODALITIES, TASK, required
from fusion.data.sources.records import TASKS, Sources
from fusion.data.sources.registry import layout
from fusion.errors import ConfigError


@layout(
    "folders",
    task=None,  # the spec says
    options={"folders": required(FOLDERS), "task": required(TASK), "modalities": MODALITIES, "gt": GT},
)
def load_folders(
    root: str | Path,
    *,
    folders: Sequence[str],
    task: str,
    modalities: Sequence[str] | None = None,
    gt: str | None = None,
    skip_bad: bool = False,
) -> Sources:
    """Generic: root/<folders[i]>/ hold the i-th source of each pair under the same stem."""
    root = source_root(root)
    if task not in TASKS:
        raise ConfigError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    if len(folders) < 2:
        raise ConfigError(f"folders: needs at least 2 folders, got {list(folders)}")
    modalities = list(modalities) if modalities else list(folders)
    if len(modalities) != len(folders):
        raise ConfigError(f"modalities: {len(modalities)} names for {len(folders)} folders")
    dirs = [find_folder(root, [f], f"source {i + 1}") for i, f in enumerate(folders)]
    gt_dir = find_folder(root, [gt], "ground-truth") if gt else None
    return folder_pairs(root, dirs, task, modalities, skip_bad, gt_dir)
