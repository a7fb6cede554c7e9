"""The authors' published weights as fusionflow checkpoints (`fusion import-weights`).

The registry and the shared checks are in importers.py; each model's importer is a module
here that registers itself on import.
"""

from fusion.weights.importers import (
    IMPORTERS,
    SOURCE_TAG,
    Imported,
    Importer,
    check_layout,
    convert,
    import_weights,
    load_torch_state_dict,
    register_importer,
)

# Importers register on import.
from fusion.weights import cadnif, crossfuse, ufa  # noqa: F401  isort: skip

__all__ = [
    "IMPORTERS",
    "SOURCE_TAG",
    "Imported",
    "Importer",
    "check_layout",
    "convert",
    "import_weights",
    "load_torch_state_dict",
    "register_importer",
]
