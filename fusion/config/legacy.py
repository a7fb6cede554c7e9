"""Configurations recorded by earlier versions, read with today's schema.

A run's config/resolved.json is what `fusion reproduce` and `fusion train --resume` start
from, so a key that moved must still be read from where an older run recorded it.
"""

from __future__ import annotations

import copy
from typing import Any

# train.<key> before 2026-12-01 -> train.options.<key> (each model declares its own settings)
MOVED_TO_OPTIONS = ("lambda_l1", "loss_crop_border")


def upgrade(tree: dict[str, Any]) -> dict[str, Any]:
    """`tree` with keys that moved put where the schema expects them now. A setting the run's
    model does not declare was only the old schema's default for the other models: dropped."""
    from fusion.models import MODELS

    train = tree.get("train")
    if not isinstance(train, dict) or not any(k in train for k in MOVED_TO_OPTIONS):
        return tree
    tree = copy.deepcopy(tree)
    train = tree["train"]
    spec = MODELS.get(train.get("model", "ufa"))
    options = dict(train.get("options") or {})
    for key in MOVED_TO_OPTIONS:
        if key in train:
            value = train.pop(key)
            if spec is not None and key in spec.options:
                options.setdefault(key, value)
    train["options"] = options
    return tree
