"""The model registry (fusion/models/registry.py) and the models that register in it.

Models register themselves on import (BasicSR style); a config picks one by `train.model`
and `train.variant`. Adding a model: its module, and one import line below.
"""

from fusion.models.registry import (
    MODELS,
    SINGLE,
    ModelSpec,
    Option,
    Stage,
    build_loss,
    build_model,
    check_options,
    checkpoint_stage,
    count_parameters,
    network_options,
    option,
    register,
    resolve_stage,
    switches,
    with_defaults,
)

# Imported for the side effect of registration.
from fusion.models import ufa  # noqa: F401  isort: skip
from fusion.models import cadnif  # noqa: F401  isort: skip
from fusion.models import crossfuse  # noqa: F401  isort: skip

__all__ = [
    "MODELS",
    "SINGLE",
    "ModelSpec",
    "Option",
    "Stage",
    "build_loss",
    "build_model",
    "check_options",
    "checkpoint_stage",
    "count_parameters",
    "network_options",
    "option",
    "register",
    "resolve_stage",
    "switches",
    "with_defaults",
]
