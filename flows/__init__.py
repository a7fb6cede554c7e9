"""Prefect flows and deployments (thin wrappers around fusion.pipeline)."""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

# Offline-friendly defaults, set before Prefect reads its settings (a user's explicit value
# wins): no usage telemetry from the ephemeral server, no DVC analytics.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _shadows_fusion(entry: str) -> bool:
    folder = Path(entry or ".") / "fusion"
    return folder.is_dir() and not (folder / "__init__.py").is_file()


def _import_installed_fusion() -> None:
    """Import `fusion` from this installation even when a folder of the same name shadows it.

    A worker runs the deployment inside the workspace: Prefect puts that directory first on
    sys.path and on PYTHONPATH. A workspace may hold `fusion/data/*.py` (copies of the DVC
    stages' code dependencies, without an __init__.py); with an editable install, whose
    finder comes after sys.path, that folder becomes a `fusion` namespace package hiding the
    real one, here and in the stage commands (`dvc repro` -> `fusion data ...`) started from here.
    """
    if "fusion" in sys.modules:
        return
    spec = importlib.util.find_spec("fusion")
    if spec is None or spec.origin is not None:  # missing, or a regular package: nothing shadows it
        return
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if not _shadows_fusion(p)]
    try:
        importlib.import_module("fusion")
    except ImportError:  # not installed after all: the entrypoint's own import says so
        return
    finally:
        sys.path[:] = saved
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    if any(_shadows_fusion(e) for e in entries):
        os.environ["PYTHONPATH"] = os.pathsep.join(e for e in entries if not _shadows_fusion(e))


_import_installed_fusion()
