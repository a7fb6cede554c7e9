"""The data of a run on a core install, where DVC is not installed (an offline GPU machine).

`pipeline.prepare` versions and rebuilds the prepared data with DVC. Without DVC nothing can
be versioned, so `fusion train --out` trains on what is already there and says so:

  train.source set      the trainer reads that source directly; nothing is prepared
  train.source null     the prepared synthetic set (data.synth_multifocus.out) as it is on disk,
                        built earlier by DVC, by `fusion data synth-multifocus` (no DVC needed)
                        or copied from another machine
  neither               refused with the commands that build it; nothing is written

The data version recorded is the prepared manifest's sha256 as always; the DVC hashes read
"unversioned" unless a dvc.lock from an earlier DVC run names the folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from fusion.config import Config
from fusion.errors import DataError

log = logging.getLogger(__name__)

UNVERSIONED = "unversioned"


def dvc_installed() -> bool:
    try:
        return importlib.util.find_spec("dvc") is not None
    except (ImportError, ValueError):  # a half-installed or deliberately blocked package is as good as absent
        return False


def prepare_without_dvc(workspace: Path, cfg: Config):
    from fusion.data.manifest import MANIFEST, data_version
    from fusion.data.prepared import Prepared
    from fusion.versioning import RAW_DIR, output_hashes

    out = cfg.data.synth_multifocus.out
    root = workspace / out
    if cfg.train.source is not None:
        log.warning(
            "DVC is not installed: training on train.source=%s as it is; no data is prepared or versioned",
            cfg.train.source.name or cfg.train.source.path,
        )
        return Prepared(root, UNVERSIONED, UNVERSIONED, [], [], {}, UNVERSIONED)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise DataError(
            f"{root}: no prepared data, and DVC is not installed to build it; build it here with "
            f"`fusion data embedded` then `fusion data synth-multifocus` (no DVC needed), copy {out} from "
            f"another machine, or train on a source (--set train.source=NAME)"
        )
    log.warning("DVC is not installed: training on %s as it is on disk (not rebuilt or versioned)", root)
    raw = workspace / f"{RAW_DIR}.dvc"
    raw_hash = UNVERSIONED
    if raw.is_file():
        from fusion.versioning import raw_hash as read_raw_hash

        raw_hash = read_raw_hash(workspace)
    counts = json.loads(manifest.read_text()).get("counts", {})
    return Prepared(root, raw_hash, output_hashes(workspace).get(out, UNVERSIONED), [], [], counts, data_version(root))
