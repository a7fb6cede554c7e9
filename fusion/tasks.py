"""The four fusion tasks, spelled once: configs, data layouts and losses use these names."""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["multi-focus", "ir-vis", "medical", "multi-exposure"]
TASKS: tuple[str, ...] = get_args(Task)
