"""Typed configuration: params.yaml + a profile + command-line overrides, validated once.

`params.yaml` is the one source of truth; DVC reads the `data` section for its stages and
everything else reads the resolved `Config`. Unknown keys are errors (a typo must not be
silently ignored), and every error names the offending key.

- schema.py, schema_data.py, schema_jobs.py: the sections as pydantic models
- validation.py: the cross-checks against the model, dataset-layout, metric and baseline registries
- loading.py: load_config (profiles, their per-model part, --set overrides, workspace paths)
- dotted.py: `a.b.c` keys and the nested trees they name
- source_registry.py: the `sources` registry entries as SourceSpec
"""

from __future__ import annotations

from fusion.config.dotted import flatten, merge_trees, nest_dotted, set_dotted
from fusion.config.loading import load_config, parse_overrides, source_spec
from fusion.config.schema import (
    REDACTED,
    SECRET_KEYS,
    Config,
    EvaluateConfig,
    PromoteConfig,
    RayConfig,
    TrackingConfig,
    TrainConfig,
)
from fusion.config.schema_data import (
    DataConfig,
    EmbeddedData,
    KaistPairs,
    PatchStage,
    SynthMultifocus,
    TestSetStage,
    check_plain_name,
)
from fusion.config.schema_jobs import NightlyConfig, SweepConfig, SweepEntry, SweepResources, Task
from fusion.config.source_registry import SourceSpec, registry_spec

# re-exported: callers import the workspace helpers from here
from fusion.workspace import PARAMS_FILE, WORKSPACE_ENV, project_root, read_params, resolve_workspace

__all__ = [
    "PARAMS_FILE",
    "REDACTED",
    "SECRET_KEYS",
    "WORKSPACE_ENV",
    "Config",
    "DataConfig",
    "EmbeddedData",
    "EvaluateConfig",
    "KaistPairs",
    "NightlyConfig",
    "PatchStage",
    "PromoteConfig",
    "RayConfig",
    "SourceSpec",
    "SweepConfig",
    "SweepEntry",
    "SweepResources",
    "SynthMultifocus",
    "Task",
    "TestSetStage",
    "TrackingConfig",
    "TrainConfig",
    "check_plain_name",
    "flatten",
    "load_config",
    "merge_trees",
    "nest_dotted",
    "parse_overrides",
    "project_root",
    "read_params",
    "registry_spec",
    "resolve_workspace",
    "set_dotted",
    "source_spec",
]
