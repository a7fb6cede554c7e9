"""The models: `fusion models` (the registry) and `fusion import-weights` (the authors' released weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fusion.cli.options import Workspace


def models() -> None:
    """List every registered model and its variants (paper names beside config identifiers), then each model's
    train.released and train.options."""

    from rich import box

    from fusion.models import MODELS, build_model, count_parameters

    # names are typed into configs and looked up in papers: never cut; the task list wraps instead
    table = Table(title="Registered models", box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    table.add_column("variant (config)", no_wrap=True)
    table.add_column("paper name", no_wrap=True)
    table.add_column("parameters", no_wrap=True, justify="right")
    for name, spec in sorted(MODELS.items()):
        for vid, paper_name in spec.variants.items():
            table.add_row(name, vid, paper_name, f"{count_parameters(build_model(name, vid)):,}")
    Console().print(table)
    out = Console(soft_wrap=True)
    for name, spec in sorted(MODELS.items()):
        out.print(f"[bold]{name}[/] tasks: {spec.task.replace(',', ', ')}")
        released = spec.notes.get("released", "the authors' released code")
        out.print(f"[bold]{name}[/] train.released: {escape(released)}")
        for opt, o in spec.options.items():
            default = "" if o.default is None or o.kind is bool else f" (default {o.default})"
            out.print(f"[bold]{name}[/] train.options.{opt}: {escape(o.help)}{default}")


def import_weights(
    model: Annotated[str, typer.Argument(help="ufa | crossfuse | cadnif")],
    files: Annotated[
        list[Path],
        typer.Argument(
            help="ufa: FILE (the authors' state dict); crossfuse: IR_AE VI_AE FUSION "
            "(their three .model files, in that order); cadnif: PREFIX "
            "(TensorFlow 1 checkpoint, e.g. model/IV/model/model-11)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (e.g. authors-cadnif-iv.pt)")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")] = False,
    register: Annotated[
        str | None,
        typer.Option(
            "--register", help="Also register it in the MLflow model registry under this name (tagged source=authors)"
        ),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Turn the authors' published weights into a fusionflow checkpoint of the released model.

    The checkpoint works with `fusion fuse --model`, `fusion evaluate --model` and as an MLflow model; it records the source files' sha256 and which source tensors the released forward pass does not use.

    Weights are read as data only (no pickled code runs); a missing, extra or mis-shaped tensor is refused with its name and nothing is written.
    """
    from fusion.weights import IMPORTERS
    from fusion.weights import import_weights as run_import

    if register is not None:  # fail on a bad workspace before converting anything
        from fusion.config import load_config, resolve_workspace

        ws = resolve_workspace(workspace)
        load_config(ws)
    path, result = run_import(model, files, out, overwrite=overwrite)
    console_out = Console(soft_wrap=True)
    spec = IMPORTERS[model]
    console_out.print(f"imported {spec.model} {result.variant} (released) from {' '.join(map(str, files))} -> {path}")
    for note in result.notes:
        console_out.print(f"  note: {note}")
    if result.ignored:
        console_out.print(
            f"  ignored {len(result.ignored)} source tensor(s) the released forward pass does not use: "
            f"{', '.join(result.ignored[:6])}{' ...' if len(result.ignored) > 6 else ''}"
        )
    if register is not None:
        from fusion.weights.register import register_authors

        run_id, version = register_authors(ws, path, register)
        console_out.print(
            f"registered {register} v{version} (source=authors), run {run_id}; fuse with --model runs:/{run_id}"
        )
