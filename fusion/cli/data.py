"""`fusion data ...`: prepare datasets (the DVC stages call these), list and fetch sources."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fusion.cli.options import Overrides, Profile, Workers, Workspace
from fusion.cli.output import console, progress_bar
from fusion.errors import FusionError

data_app = typer.Typer(help="Prepare datasets (the DVC stages call these).", no_args_is_help=True)


@data_app.command("embedded")
def data_embedded(workspace: Workspace = None) -> None:
    """Export the embedded photographs (shipped with scikit-image) to data/embedded."""
    from fusion.config import load_config, resolve_workspace
    from fusion.data.embedded import export_embedded

    ws = resolve_workspace(workspace)
    cfg = load_config(ws)
    out = export_embedded(ws / cfg.data.embedded.out)
    Console().print(f"wrote {out}")


def _stage(label: str, fn: Callable[..., dict[str, Any]], workspace: Path | None, *args: Any) -> dict[str, Any]:
    """Run one preparation stage with a progress bar; returns its manifest."""
    from fusion.config import load_config, resolve_workspace

    ws = resolve_workspace(workspace)
    bar, progress = progress_bar(label)
    with bar:
        return fn(ws, load_config(ws), *args, progress=progress)


@data_app.command("synth-multifocus")
def data_synth_multifocus(workspace: Workspace = None, workers: Workers = 0) -> None:
    """Build the SYNTHETIC multi-focus train/test pairs (UFA-Fuse Eq. 11) from data.synth_multifocus in params.yaml
    (the embedded photographs, or a DUTS source of the `sources` registry)."""
    from fusion.data import stages

    manifest = _stage("synthesising", stages.synth_multifocus, workspace, workers)
    Console().print(f"synthetic multi-focus pairs: {json.dumps(manifest['counts'])}")


@data_app.command("kaist-pairs")
def data_kaist_pairs(
    name: Annotated[str, typer.Argument(help="Entry of data.kaist_pairs in params.yaml")],
    workspace: Workspace = None,
    workers: Workers = 0,
) -> None:
    """Sample aligned lwir/visible KAIST pairs (seeded, every frame_stride-th frame), gray, resized -> prepared/kaist_pairs/NAME."""
    from fusion.data import stages

    manifest = _stage(f"KAIST pairs {name}", stages.kaist_pairs, workspace, name, workers)
    Console().print(
        f"{manifest['count']} KAIST pairs -> prepared/kaist_pairs/{name}"
        + (f" ({len(manifest['skipped'])} bad input(s) skipped, see bad_inputs.txt)" if manifest["skipped"] else "")
    )


@data_app.command("test-set")
def data_test_set(
    name: Annotated[str, typer.Argument(help="Entry of data.test_sets in params.yaml")],
    workspace: Workspace = None,
    workers: Workers = 0,
) -> None:
    """Copy a source's evaluation pairs (colour kept) into prepared/test_sets/NAME/<modality>/ with a manifest."""
    from fusion.data import stages

    manifest = _stage(f"test set {name}", stages.test_set, workspace, name, workers)
    mods = manifest["modalities"]
    Console().print(
        f"{manifest['count']} {manifest['task']} pairs -> prepared/test_sets/{name}/{{{','.join(mods)}}}; "
        f"score with: fusion evaluate --source-a prepared/test_sets/{name}/{mods[0]} "
        f"--source-b prepared/test_sets/{name}/{[m for m in mods if m != 'gt'][-1]} ..."
    )


@data_app.command("sources")
def data_sources(
    workspace: Workspace = None,
    check: Annotated[bool, typer.Option("--check", help="Decode every image and report every bad file")] = False,
) -> None:
    """List the `sources` registry of params.yaml: layout, path, pairs found (and, with --check, bad files)."""
    from fusion.config import load_config, resolve_workspace
    from fusion.data.source_status import source_statuses

    ws = resolve_workspace(workspace)
    cfg = load_config(ws)
    table = Table(title=f"sources registry ({ws / 'params.yaml'})")
    for col in ("name", "layout", "path", "records", "status"):
        table.add_column(col, overflow="fold")
    statuses = source_statuses(cfg, ws, check)
    for s in statuses:
        status = "failed (below)" if s.problem is not None else "ok (all decoded)" if check else "ok"
        table.add_row(s.name, s.layout, s.path, "-" if s.records is None else str(s.records), status)
    Console().print(table if cfg.sources else "no sources registered: add them under `sources:` in params.yaml")
    failures = [s for s in statuses if s.problem is not None]
    # Below the table, never in a cell: a cell wraps or cuts file names at the terminal's width.
    for s in failures:
        console.print(f"[bold red]error:[/] sources.{s.name}: {escape(s.problem or '')}", highlight=False, crop=False)
    if failures:
        raise typer.Exit(2)


@data_app.command("patches")
def data_patches(
    name: Annotated[
        str | None,
        typer.Argument(help="Entry of data.patches in params.yaml (the DVC stage); or omit it and give --out"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Patch folder to write (shards + manifest.json), relative to the workspace, e.g. prepared/patches/tno",
        ),
    ] = None,
    window: Annotated[int, typer.Option("--window", help="Window side (CADNIF's released code: 132)")] = 132,
    stride: Annotated[int, typer.Option("--stride", help="Window stride (released code: 14)")] = 14,
    flips: Annotated[bool, typer.Option("--flips/--no-flips", help="Add a horizontal flip of every window")] = False,
    rotations: Annotated[
        bool, typer.Option("--rotations/--no-rotations", help="Add 90/180/270 degree rotations")
    ] = False,
    gray: Annotated[
        bool, typer.Option("--gray/--colour", help="Y of YCrCb (the unsupervised models) or RGB planes")
    ] = True,
    max_per_pair: Annotated[
        int, typer.Option("--max-per-pair", help="Seeded sample of at most this many windows per pair (0 = all)")
    ] = 0,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Windows per shard file")] = 4096,
    workers: Annotated[int, typer.Option("--workers", help="Processes (0 = every core)")] = 0,
    profile: Profile = "default",
    overrides: Overrides = None,
    workspace: Workspace = None,
) -> None:
    """Cut aligned training windows from train.source's training split into shards (patch augmentation).

    The same windows (and flips/rotations) are cut from every source of a pair. Train on them with --set train.patches=OUT beside the same train.source: the run refuses patches cut from another source or split.

    With NAME, the DVC stage: data.patches.NAME of params.yaml -> prepared/patches/NAME (train with train.source=<its source> and train.patches=prepared/patches/NAME).
    """
    from fusion.config import load_config, resolve_workspace
    from fusion.data.patches import PatchParams, build_patches
    from fusion.data.training import load_source_split, source_provenance

    if name is not None:
        from fusion.data import stages

        if out is not None:
            raise FusionError("give NAME (a data.patches stage) or --out, not both")
        manifest = _stage(f"patches {name}", stages.patches, workspace, name, workers)
        Console().print(f"{manifest['count']} windows in {len(manifest['shards'])} shard(s) -> prepared/patches/{name}")
        return
    if out is None:
        raise FusionError("give NAME (a data.patches stage of params.yaml) or --out DIR")
    ws = resolve_workspace(workspace)
    cfg = load_config(ws, profile, overrides)
    spec = cfg.train.source
    if spec is None:
        raise FusionError("set the source to cut from: --set train.source.layout=tno --set train.source.path=DIR")
    train, _ = load_source_split(spec, cfg.seed)
    out = out if out.is_absolute() else ws / out  # where train.patches=OUT will look
    params = PatchParams(window, stride, gray, flips, rotations, shard_size, max_per_pair, cfg.seed)
    bar, progress = progress_bar(f"cutting {len(train)} pairs")
    with bar:
        manifest = build_patches(train, out, params, workers, source_provenance(spec, cfg.seed), progress)
    Console().print(
        f"{manifest['count']} windows of {window}x{window} from {len(train)} training pairs "
        f"in {len(manifest['shards'])} shard(s) -> {out}"
    )


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str | None, typer.Argument(help="Dataset name from the catalogue (omit to list them)")] = None,
    dest: Annotated[
        Path | None, typer.Option("--dest", help="Folder to create (replaced only once the new copy is complete)")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Expected sha256 of the download, where the catalogue has none")
    ] = None,
    trust: Annotated[
        bool, typer.Option("--trust", help="No checksum known: pin the sha256 of what arrives in DEST/fetch.lock.json")
    ] = False,
    catalogue: Annotated[
        Path | None, typer.Option("--catalogue", help="Catalogue YAML (e.g. a team mirror) instead of the built-in one")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --dest even if it holds files fetch did not create")
    ] = False,
) -> None:
    """Download a public dataset, verify its sha256, unpack it atomically, and print its `sources:` entry.

    A --dest that holds other files (not from an earlier fetch of it) is refused unless --overwrite."""
    from fusion.data.fetch import fetch, load_catalogue

    entries = load_catalogue(catalogue)
    if name is None:
        table = Table(title="fetchable datasets")
        for col in ("name", "layout", "sha256 known", "description"):
            table.add_column(col)
        for e in entries.values():
            table.add_row(e.name, e.layout or "-", "yes" if e.sha256 else "no (--sha256/--trust)", e.description)
        Console().print(table)
        return
    if name not in entries:
        raise FusionError(f"{name}: not in the catalogue; available: {', '.join(sorted(entries))}")
    if dest is None:
        raise FusionError("--dest DIR: where to unpack the dataset (outside the repository; it is read in place)")
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(f"fetching {name}", total=None)
        record = fetch(
            entries[name],
            dest.resolve(),
            sha256,
            trust,
            lambda done, total: bar.update(task, completed=done, total=total),
            overwrite=overwrite,
        )
    root = dest.resolve() / record["subdir"] if record["subdir"] else dest.resolve()
    Console().print(
        f"{name}: sha256 {record['sha256']} ({'verified' if record['verified'] else 'pinned, not verified'}) -> {dest}"
    )
    if record["layout"]:
        Console().print(
            f"register it in params.yaml:\n  sources:\n    {name.replace('-', '_')}: {{layout: {record['layout']}, path: {root}}}"
        )


@data_app.command("materialize")
def data_materialize(
    path: Annotated[
        str, typer.Argument(help="A DVC-tracked folder, e.g. prepared/test_sets/tno or prepared/multifocus_synthetic")
    ],
    rev: Annotated[str, typer.Option("--rev", help="Git revision (commit, tag, branch) whose data version to fetch")],
    out: Annotated[Path, typer.Option("--out", help="New folder to write it to (never the checkout itself)")],
    workspace: Workspace = None,
) -> None:
    """Materialise a past version of prepared data from its git revision (DVC cache or remote), beside the checkout."""
    from fusion import versioning
    from fusion.config import resolve_workspace
    from fusion.data.manifest import data_version

    ws = resolve_workspace(workspace)
    dest = versioning.materialize(ws, rev, path, out.resolve())
    version = data_version(dest) if (dest / "manifest.json").is_file() else "no manifest"
    Console().print(f"{path}@{rev} -> {dest} (data version {version})")


@data_app.command("prepare")
def data_prepare(
    workspace: Workspace = None,
    no_push: Annotated[bool, typer.Option("--no-push", help="Do not push the snapshot to the DVC remote")] = False,
) -> None:
    """Track the raw data with DVC, reproduce the preparation stages and push the snapshot."""
    from fusion import pipeline
    from fusion.config import load_config, resolve_workspace

    ws = resolve_workspace(workspace)
    prepared = pipeline.prepare(ws, load_config(ws), push=not no_push)
    Console().print(
        f"{prepared.root} md5 {prepared.data_hash} (raw md5 {prepared.raw_hash}); "
        f"stages run: {prepared.stages_ran or 'none'}; counts {prepared.counts}"
    )
