"""Where Ray Train persists a run's checkpoints: the workspace, or object storage (`storage.uri`).

Ray resolves the URI with pyarrow on every node from that node's own environment
(AWS_* variables, instance roles), so no credentials travel with the job. The driver checks
the bucket up front by writing and deleting a probe object: a wrong URI fails in a second,
naming it, instead of after the workers have started.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fusion.config import Config
from fusion.errors import ConfigError


def storage_path(cfg: Config, local: Path) -> str:
    """Ray's storage_path for a run: storage.uri when set, else `local` (the run folder)."""
    uri = cfg.storage.uri
    if uri is None:
        return str(Path(local).resolve())
    if uri.startswith("file://"):
        return str(Path(uri.removeprefix("file://")).resolve())
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def check_storage(uri: str) -> None:
    """Raise ConfigError naming storage.uri unless this machine can write and delete there."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
        probe = f"{root.rstrip('/')}/.fusionflow-probe-{uuid.uuid4().hex}"
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(root, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"probe")
        fs.delete_file(probe)
    except (OSError, ValueError, pa.ArrowException) as exc:  # what pyarrow raises for a bad URI or bucket
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"storage.uri={uri}: cannot write there ({first})") from None
