"""The importer registry and what every importer shares: layout checks, conversion, writing.

Each model registers one importer (BasicSR style): it reads the authors' files in their own
layout (a PyTorch state dict, a TensorFlow 1 checkpoint), maps every tensor to the released
model's parameter names and says which source tensors it ignored and why. This module then
checks the result against a freshly built released model (every key, every shape), records
the source files' sha256 and writes the checkpoint atomically. Weights are data only: no
importer unpickles code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SOURCE_TAG = "authors"


@dataclass
class Imported:
    """What an importer hands back: the released model's state dict and how to build it."""

    variant: str
    state_dict: dict[str, torch.Tensor]
    model_options: dict[str, Any] = field(default_factory=lambda: {"released": True})
    task: str = ""
    stage: str = "single"
    ignored: list[str] = field(default_factory=list)  # source tensors not used by the released forward pass
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Importer:
    model: str
    files: tuple[str, ...]  # what each positional FILE is, e.g. ("IR_AE", "VI_AE", "FUSION")
    read: Callable[[Sequence[Path]], Imported]
    help: str


IMPORTERS: dict[str, Importer] = {}


def register_importer(model: str, files: tuple[str, ...], help: str):
    def deco(fn: Callable[[Sequence[Path]], Imported]) -> Callable[[Sequence[Path]], Imported]:
        if model in IMPORTERS:
            raise ValueError(f"importer for {model!r} registered twice")
        IMPORTERS[model] = Importer(model, files, fn, help)
        return fn

    return deco


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `torch.save(model.state_dict())` file, read as data: weights_only refuses any pickle
    that would construct objects or run code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # every failure becomes one line naming the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"{path}: not a readable PyTorch state dict of tensors ({exc.__class__.__name__}: {first[:200]})"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: not a state dict (expected a mapping of tensor names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def check_layout(
    path: Path,
    got: Mapping[str, torch.Tensor | np.ndarray],
    expected: Mapping[str, Sequence[int]],
    what: str,
    optional: Sequence[str] = (),
) -> None:
    """Every expected key present with its shape, nothing else (keys in `optional` may be absent)."""
    missing = [k for k in expected if k not in got and k not in optional]
    extra = [k for k in got if k not in expected]
    if missing and len(missing) == len(expected):
        raise DataError(
            f"{path}: none of the {what} keys found (is this a file of another model? it holds {_few(list(got))})"
        )
    if missing:
        raise DataError(f"{path}: missing {len(missing)} {what} key(s): {_few(missing)}")
    if extra:
        raise DataError(f"{path}: {len(extra)} key(s) that the {what} does not have: {_few(extra)}")
    wrong = [
        f"{k} {list(got[k].shape)} (expected {list(expected[k])})"
        for k in expected
        if k in got and list(got[k].shape) != list(expected[k])
    ]
    if wrong:
        raise DataError(f"{path}: wrong shape: {_few(wrong)}")


def _few(items: Sequence[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" ... ({len(items) - n} more)" if len(items) > n else "")


def convert(model: str, files: Sequence[str | Path]) -> tuple[Imported, torch.nn.Module]:
    """Read the authors' files and load them into the released model (strict)."""
    from fusion.models import build_model

    if model not in IMPORTERS:
        raise ConfigError(f"MODEL: no importer for {model!r}; valid: {sorted(IMPORTERS)}")
    imp = IMPORTERS[model]
    paths = [Path(f) for f in files]
    if len(paths) != len(imp.files):
        raise ConfigError(f"FILE: {model} takes {len(imp.files)} file(s) ({' '.join(imp.files)}), got {len(paths)}")
    result = imp.read(paths)
    net = build_model(model, result.variant, **result.model_options)
    want = net.state_dict()
    missing = [k for k in want if k not in result.state_dict]
    extra = [k for k in result.state_dict if k not in want]
    wrong = [k for k in want if k in result.state_dict and result.state_dict[k].shape != want[k].shape]
    if missing or extra or wrong:  # an importer bug, not a user error: say exactly what
        raise AssertionError(f"{model} importer: missing {missing[:4]}, extra {extra[:4]}, wrong shape {wrong[:4]}")
    net.load_state_dict({k: v.to(want[k].dtype) for k, v in result.state_dict.items()})
    return result, net.eval()


def import_weights(
    model: str, files: Sequence[str | Path], out: str | Path, overwrite: bool = False
) -> tuple[Path, Imported]:
    """Write the fusionflow checkpoint of the authors' weights to `out` (atomic)."""
    from fusion.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from fusion.io import sha256_file
    from fusion.models import count_parameters

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: already exists; pass --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out}: is a folder, give a file name (e.g. {out / 'authors.pt'})")
    for f in files:
        if not Path(f).is_file() and _tf_prefix(Path(f)) is None:
            raise DataError(f"{f}: file not found")
    result, net = convert(model, files)
    sources = [{"file": Path(f).name, "sha256": _sha256_source(Path(f), sha256_file)} for f in files]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model,
        "variant": result.variant,
        "model_options": dict(result.model_options),
        "stage": result.stage,
        "task": result.task,
        "source": SOURCE_TAG,
        "source_files": sources,
        "ignored_source_tensors": list(result.ignored),
        "import_notes": list(result.notes),
        "num_parameters": count_parameters(net),
        "state_dict": net.state_dict(),
        "epoch": 0,
        "global_step": 0,
        "history": [],
    }
    save_checkpoint(out, payload)
    return out, result


def _tf_prefix(p: Path) -> Path | None:
    from fusion.weights.tf_checkpoint import resolve_prefix

    prefix = resolve_prefix(p)
    return prefix if prefix.with_name(prefix.name + ".index").is_file() else None


def _sha256_source(p: Path, sha256_file: Callable[[Path], str]) -> str | dict[str, str]:
    """A TF checkpoint (named by its prefix or any of its files) is several files: hash each."""
    prefix = _tf_prefix(p)
    if prefix is None:
        return sha256_file(p)
    parts = sorted(q for q in prefix.parent.iterdir() if q.name.startswith(prefix.name + ".") and q.is_file())
    return {q.name: sha256_file(q) for q in parts}
