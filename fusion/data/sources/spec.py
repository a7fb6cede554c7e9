"""`sources.<name>` entries of params.yaml: validated against the layout registry, then read."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fusion.data.sources.records import Sources
from fusion.data.sources.registry import LAYOUT_REGISTRY
from fusion.errors import ConfigError


def validate_spec(name: str, spec) -> tuple[str, str, dict]:
    """Check one `sources.<name>` entry; returns (layout, path, loader options)."""
    where = f"sources.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{layout: tno, path: ...}}, got {spec!r}")
    layout = spec.get("layout")
    if layout is None:
        raise ConfigError(f"{where}.layout: missing; one of {', '.join(sorted(LAYOUT_REGISTRY))}")
    if layout not in LAYOUT_REGISTRY:
        raise ConfigError(f"{where}.layout: unknown layout {layout!r}; valid: {', '.join(sorted(LAYOUT_REGISTRY))}")
    path = spec.get("path")
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError(f"{where}.path: missing or empty (the folder holding the {layout} data)")
    entry = LAYOUT_REGISTRY[layout]
    allowed = list(entry.options)
    opts = {k: v for k, v in spec.items() if k not in ("layout", "path")}
    if "task" in opts and "task" not in allowed:
        task = opts.pop("task")
        if entry.task is None or task != entry.task:
            gives = entry.task or "no fusion task (synthesis input)"
            raise ConfigError(f"{where}.task: layout {layout} gives {gives}, not {task!r}")
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown option for layout {layout}; "
            f"valid: {', '.join(['layout', 'path', 'task'] + allowed)}"
        )
    for key in entry.required:
        if key not in opts:
            raise ConfigError(f"{where}.{key}: required for layout {layout}")
    for key, value in opts.items():
        option = entry.options[key]
        if not option.check(value):
            raise ConfigError(f"{where}.{key}: expected {option.expected}, got {value!r}")
    return layout, str(path), opts


def load_source(name_or_spec: str | Mapping, spec: Mapping | None = None, *, base: str | Path | None = None) -> Sources:
    """Load one source: `load_source(spec)`, `load_source(name, spec)` (errors name
    sources.<name>), or the shorthand `load_source("tno:/path/to/TNO42")`.
    Relative paths resolve against `base` (the folder of params.yaml) when given."""
    if isinstance(name_or_spec, Mapping):
        name, spec = "<inline>", name_or_spec
    elif spec is None:
        layout, sep, path = str(name_or_spec).partition(":")
        if not sep:
            raise ConfigError(f"source {name_or_spec!r}: give a spec {{layout, path}} or 'layout:path'")
        name, spec = layout, {"layout": layout, "path": path}
    else:
        name = str(name_or_spec)
    layout, path, opts = validate_spec(name, spec)
    root = Path(path).expanduser()
    if base is not None and not root.is_absolute():
        root = Path(base) / root
    try:
        return LAYOUT_REGISTRY[layout].read(root, **opts)
    except ConfigError as exc:  # loader option errors say "<key>: ..."; give them their params.yaml address
        raise ConfigError(f"sources.{name}.{exc}") from exc
