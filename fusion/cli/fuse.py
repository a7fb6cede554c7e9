"""`fusion fuse`: fuse image files with a trained model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def fuse(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Two or more source images of the same size (IR + visible, near + far focus, exposures, MRI + CT/PET/SPECT)"
        ),
    ],
    model: Annotated[
        str,
        typer.Option("--model", help="Checkpoint file, run folder, or MLflow URI (runs:/RUN_ID, models:/NAME@ALIAS)"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fused image (PNG)")],
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="float32; bfloat16 (CPUs with AVX512-BF16/AMX, GPUs) or float16 (GPUs) run the model under autocast: faster, outputs within a few gray levels",
        ),
    ] = "float32",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out if it exists (never one of the source images)")
    ] = False,
    tile: Annotated[
        str,
        typer.Option(
            "--tile",
            metavar="auto|none|N",
            help="auto: whole image if it fits in --max-memory, else overlapping tiles (same result within a gray level); none: whole image; N: tiles of N px",
        ),
    ] = "auto",
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory",
            metavar="SIZE",
            help="Memory budget, e.g. 4GB (default: 3/4 of the free RAM); what cannot fit is refused before fusing",
        ),
    ] = None,
) -> None:
    """Fuse two or more images with a trained model and write the result.

    Any size; gray or colour (gray models fuse Y of YCrCb and restore the chroma of the colour sources). More images than the model takes are fused pairwise, left to right. Checkpoints are loaded as data only (weights_only), never as code.
    """
    from fusion.fuse_files import fuse_files

    done = fuse_files(images, model, out, device, precision, overwrite, tile, max_memory, progress=sys.stderr.isatty())
    Console().print(
        f"{done.label} fused {len(images)} images on {done.device} ({precision}) in {done.seconds:.2f} s -> {out}"
    )
