"""Dotted keys (`train.ray.max_failures`) and the nested trees they name: one reading for the
`--set` overrides, a sweep's grid and the flattened parameters logged with a run."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fusion.errors import ConfigError


def set_dotted(tree: dict[str, Any], dotted: str, value: Any, where: str = "--set") -> None:
    """Put `value` at `dotted` in `tree`, creating the sections on the way; `where` starts the
    error when a section on the way already holds a value."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where} {dotted}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def nest_dotted(dotted: Mapping[str, Any], where: str = "--set") -> dict[str, Any]:
    """`{"train.lr": 1e-3}` -> `{"train": {"lr": 1e-3}}`."""
    tree: dict[str, Any] = {}
    for key, value in dotted.items():
        set_dotted(tree, key, value, where)
    return tree


def merge_trees(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, section by section; neither is changed."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_trees(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of nest_dotted: `section.key` -> value."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
