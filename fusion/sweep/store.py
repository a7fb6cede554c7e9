"""Trial folders on object storage, for sweeps on a cluster whose nodes share no disk.

With `storage.uri` on object storage, a trial works in a node-local copy of its folder
(storage.cache/sweeps/<sweep>/<trial>) and mirrors to <storage.uri>/sweeps/<sweep>/<trial>/
the files that say where it stands: its status record, its attempt record and its two
checkpoints (after every epoch that wrote one). A trial restarted on another node, or by
the next run of the same sweep, pulls them first and continues from last.pt; the driver
reads the status records from there. Files go through pyarrow's filesystems (what Ray
itself uses), each node with its own credentials.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fusion.io import write_bytes_atomic

CHECKPOINT_FILES = ("checkpoints/last.pt", "checkpoints/best.pt")


def local_dir(cache: str, sweep: str, trial_id: str) -> Path:
    """This node's copy of a trial folder: `cache` (storage.cache) is expanded on the node that
    works in it, so a process on another node finds its own copy from the same arguments."""
    return Path(cache).expanduser() / "sweeps" / sweep / trial_id


def _fs(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def exists(uri: str, name: str) -> bool:
    from pyarrow import fs

    filesystem, base = _fs(uri)
    return filesystem.get_file_info(f"{base}/{name}").type == fs.FileType.File


def read_bytes(uri: str, name: str) -> bytes | None:
    if not exists(uri, name):
        return None
    filesystem, base = _fs(uri)
    with filesystem.open_input_stream(f"{base}/{name}") as stream:
        return stream.read()


def push(local: Path, uri: str, names: Iterable[str]) -> None:
    """Upload the files of `names` that exist under `local` (one PUT each: a reader sees the
    old object or the new one, never half of one)."""
    filesystem, base = _fs(uri)
    for name in names:
        source = local / name
        if source.is_file():
            if filesystem.type_name == "local":
                filesystem.create_dir(str(Path(f"{base}/{name}").parent), recursive=True)
            with filesystem.open_output_stream(f"{base}/{name}") as out:
                out.write(source.read_bytes())


def pull(uri: str, local: Path, names: Iterable[str]) -> None:
    """Download the files of `names` that exist at `uri`, each written atomically."""
    for name in names:
        data = read_bytes(uri, name)
        if data is not None:
            write_bytes_atomic(local / name, data)


class Mirror:
    """Trainer callback: the checkpoints this epoch wrote, to the trial's folder on object storage."""

    def __init__(self, local: Path, uri: str):
        self.local, self.uri = local, uri
        self.sent: dict[str, int] = {}

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        changed = []
        for name in CHECKPOINT_FILES:
            path = self.local / name
            if path.is_file() and self.sent.get(name) != path.stat().st_mtime_ns:
                changed.append(name)
                self.sent[name] = path.stat().st_mtime_ns
        push(self.local, self.uri, changed)
