"""The DVC preparation stages: params.yaml sections -> builders (what `dvc.yaml` runs).

Each stage reads its parameters and the `sources` registry entries it names, writes one
folder under `prepared/` atomically with a manifest, and returns that manifest:

  synth_multifocus     prepared/multifocus_synthetic     embedded photographs or a DUTS source
  kaist_pairs@<name>   prepared/kaist_pairs/<name>       data.kaist_pairs.<name>
  patches@<name>       prepared/patches/<name>           data.patches.<name> (training split)
  test_sets@<name>     prepared/test_sets/<name>         data.test_sets.<name>

Output folders are fixed by the stage and name (dvc.yaml declares them as outs).
Sources are recorded by registry name, layout and path as written in params.yaml, so a
stage's output, and its DVC hash, do not depend on where the workspace lives.
"""

from __future__ import annotations

from pathlib import Path

from fusion.config import Config, registry_spec, source_spec
from fusion.data.parallel import Progress
from fusion.errors import ConfigError

STAGE_DIRS = {"kaist_pairs": "prepared/kaist_pairs", "patches": "prepared/patches", "test_sets": "prepared/test_sets"}


def output_dir(ws: Path, section: str, name: str) -> Path:
    return ws / STAGE_DIRS[section] / name


def _entry(cfg: Config, section: str, name: str):
    entries = getattr(cfg.data, section)
    if name not in entries:
        raise ConfigError(f"data.{section}.{name}: not defined in params.yaml; defined: {sorted(entries) or 'none'}")
    return entries[name]


def _source_record(cfg: Config, name: str) -> dict:
    """The source as written in params.yaml (a relative path stays relative)."""
    return registry_spec(name, cfg.sources[name])


def _load(cfg: Config, ws: Path, name: str, skip_bad: bool):
    from fusion.data.training import load_pairs

    spec = source_spec(cfg, name, ws)
    return load_pairs(spec, skip_bad), spec


def synth_multifocus(ws: Path, cfg: Config, workers: int = 0, progress: Progress | None = None) -> dict:
    from fusion.data.sources import checked
    from fusion.data.synth_multifocus import SynthInput, SynthParams, build_records

    p = cfg.data.synth_multifocus
    params = SynthParams(
        p.max_side,
        p.pairs_per_image,
        tuple((lo, hi) for lo, hi in p.blur_intervals),
        p.mask_threshold,
        p.test_images,
        cfg.seed,
        tuple(p.blur_weights) if p.blur_weights else None,
    )
    records, _ = _load(cfg, ws, p.source, p.skip_bad)
    records, report = checked(records, p.skip_bad, workers)
    inputs = [SynthInput(r.id, r.image, r.mask) for r in records]
    return build_records(
        inputs, ws / p.out, params, _source_record(cfg, p.source), skipped=report, workers=workers, progress=progress
    )


def kaist_pairs(ws: Path, cfg: Config, name: str, workers: int = 0, progress: Progress | None = None) -> dict:
    from fusion.data.kaist_pairs import KaistParams, build_kaist_pairs

    e = _entry(cfg, "kaist_pairs", name)
    frames, _ = _load(cfg, ws, e.source, e.skip_bad)
    params = KaistParams(e.pairs, e.frame_stride, e.size, cfg.seed)
    try:
        return build_kaist_pairs(
            frames,
            output_dir(ws, "kaist_pairs", name),
            params,
            source=_source_record(cfg, e.source),
            skip_bad=e.skip_bad,
            workers=workers,
            progress=progress,
        )
    except ConfigError as exc:
        raise ConfigError(f"data.kaist_pairs.{name}.{exc}") from None


def test_set(ws: Path, cfg: Config, name: str, workers: int = 0, progress: Progress | None = None) -> dict:
    from fusion.data.test_sets import TestSetParams, build_test_set

    e = _entry(cfg, "test_sets", name)
    pairs, spec = _load(cfg, ws, e.source, e.skip_bad)
    params = TestSetParams(e.split, spec.test_fraction, cfg.seed)
    return build_test_set(
        pairs,
        output_dir(ws, "test_sets", name),
        params,
        source=_source_record(cfg, e.source),
        skip_bad=e.skip_bad,
        workers=workers,
        progress=progress,
    )


def patches(ws: Path, cfg: Config, name: str, workers: int = 0, progress: Progress | None = None) -> dict:
    """Windows of the source's training split: the run that trains on them with
    train.source=<the same registry name> validates on the held-out rest."""
    from fusion.data.patches import PatchParams, build_patches
    from fusion.data.sources import Sources, checked, split_by_group
    from fusion.data.training import source_provenance

    e = _entry(cfg, "patches", name)
    pairs, spec = _load(cfg, ws, e.source, e.skip_bad)
    train, _ = split_by_group(pairs, spec.test_fraction, cfg.seed)
    train, report = checked(Sources(train, pairs.problems, pairs.root), True, workers) if e.skip_bad else (train, [])
    params = PatchParams(e.window, e.stride, e.gray, e.flips, e.rotations, e.shard_size, e.max_per_pair, cfg.seed)
    return build_patches(
        train,
        output_dir(ws, "patches", name),
        params,
        workers,
        source_provenance(spec, cfg.seed),
        progress,
        skipped=report,
        root=pairs.root,
    )
