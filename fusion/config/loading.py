"""Loading a configuration: params.yaml, then a profile (and its per-model part), then
`--set` overrides, with paths made relative to the workspace; validated once (schema.py).

`params.yaml` is the one source of truth; DVC reads the `data` section for its stages and
everything else reads the resolved `Config`. Unknown keys are errors (a typo must not be
silently ignored), and every error names the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fusion.config.dotted import merge_trees, set_dotted
from fusion.config.legacy import MOVED_TO_OPTIONS
from fusion.config.schema import Config
from fusion.config.source_registry import SourceSpec, registry_spec
from fusion.errors import ConfigError
from fusion.workspace import PARAMS_FILE, read_params, resolve_workspace


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key.sub=value` strings -> nested dict; values parsed as YAML (numbers, lists, bools)."""
    tree: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=2e-4")
        key, raw = item.split("=", 1)
        if key.split(".")[0] in ("data", "sources"):
            raise ConfigError(
                f"--set {key}: data parameters and the sources registry are versioned by DVC; "
                f"edit them in {PARAMS_FILE} instead"
            )
        set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def load_config(
    workspace: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    ws = resolve_workspace(workspace)
    tree = read_params(ws)
    profiles = tree.pop("profiles", {}) or {}
    if profile and profile != "default":  # "default": params.yaml as written, no profile
        if profile not in profiles:
            raise ConfigError(f"profile {profile!r} is not defined in {ws / PARAMS_FILE}; valid: {sorted(profiles)}")
        chosen = dict(profiles[profile] or {})
        if "data" in chosen:
            raise ConfigError(f"profile {profile!r}: profiles may not change `data` (the DVC data version)")
        per_model = chosen.pop("models", None) or {}
        tree = merge_trees(tree, chosen)
        tree["profile"] = profile
    else:
        per_model = {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    tree = merge_trees(tree, extra)
    if per_model:
        # a profile's per-model part (each paper's own schedule) applies to the model the
        # overrides chose; the overrides still win over it
        for key in _schedule_keys(profile, per_model, tree.get("train") or {}):
            tree = merge_trees(tree, per_model[key])
        tree = merge_trees(tree, extra)
    # Paths relative to the workspace, never the current directory: Ray workers and Prefect
    # runs start elsewhere, and the recorded config must name one place.
    train = tree.get("train") or {}
    source = train.get("source")
    if isinstance(source, str):  # a name from the `sources` registry
        registry = tree.get("sources") or {}
        if source not in registry or not isinstance(registry[source], dict):
            raise ConfigError(
                f"train.source: {source!r} is not in the `sources` registry of {ws / PARAMS_FILE}; "
                f"registered: {sorted(registry) or 'none'} (or give {{layout: ..., path: ...}})"
            )
        source = train["source"] = registry_spec(source, registry[source])
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        source["path"] = _in_workspace(ws, source["path"])
    if isinstance(train.get("patches"), str):
        train["patches"] = _in_workspace(ws, train["patches"])
    storage = tree.get("storage") or {}
    if isinstance(storage.get("uri"), str) and storage["uri"].strip() and "://" not in storage["uri"]:
        storage["uri"] = _in_workspace(ws, storage["uri"])  # a folder, relative to the workspace like every path
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, ws / PARAMS_FILE)) from None


def _schedule_keys(profile: str | None, per_model: dict[str, Any], train: dict[str, Any]) -> list[str]:
    """Which entries of `profiles.<profile>.models` apply: `<model>`, then `<model>.<stage>`
    (autoencoder, fusion or joint for CrossFuse)."""
    from fusion.models import MODELS, resolve_stage

    for key, entry in per_model.items():
        model = key.split(".")[0]
        if model not in MODELS or not isinstance(entry, dict) or set(entry) - {"train", "evaluate"}:
            raise ConfigError(
                f"profiles.{profile}.models.{key}: expected <model>[.<stage>] with train/evaluate "
                f"sections; models: {sorted(MODELS)}"
            )
    model, variant = train.get("model", "ufa"), train.get("variant", "")
    stage = train.get("stage", "auto")
    if stage == "auto" and model in MODELS and variant in MODELS[model].variants:
        try:
            stage = resolve_stage(MODELS[model], variant, "auto", train.get("init_from")).name
        except ConfigError:
            pass  # the trainer reports it, with the whole train section resolved
    return [k for k in (model, f"{model}.{stage}") if k in per_model]


def source_spec(cfg: Config, name: str, ws: Path) -> SourceSpec:
    """Registry entry `name` with its path resolved against the workspace."""
    spec = registry_spec(name, cfg.sources[name])
    return SourceSpec.model_validate({**spec, "path": _in_workspace(ws, str(spec["path"]))})


def _in_workspace(ws: Path, path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (ws / p).resolve())


def _describe(exc: ValidationError, source: Path) -> str:
    lines = [f"invalid configuration ({source} + profile/overrides):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            moved = loc.startswith("train.") and loc.split(".", 1)[1] in MOVED_TO_OPTIONS
            msg = f"moved to train.options.{loc.split('.', 1)[1]}" if moved else "unknown parameter (typo?)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)
