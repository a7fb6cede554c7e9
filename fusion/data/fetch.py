"""Download public datasets that have stable URLs, verify their sha256, unpack atomically.

The catalogue (`catalogue.yaml` beside this module, or a file of the same shape given with
--catalogue, e.g. for a team mirror) maps a name to:

    url: https://...            # http(s) or file://
    sha256: <hex> | null        # null: pass --sha256, or --trust to pin what arrives
    archive: zip | tar | none   # tar covers .tar, .tar.gz, .tgz
    strip: 1                    # leading folders dropped from archive members (default 0)
    layout: tno                 # the `sources` layout of the unpacked folder
    subdir: ''                  # where in the unpacked folder the layout's root is
    description / license / cite: text shown to the user

A fetched file whose sha256 differs from the expected one is deleted and nothing is
unpacked. With --trust and no known checksum, the checksum of what arrived is pinned in
`<dest>/fetch.lock.json`, and later fetches to the same place must match it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from fusion.errors import ConfigError, DataError, output_error
from fusion.io import atomic_directory, write_json_atomic

CATALOGUE = Path(__file__).with_name("catalogue.yaml")
LOCK = "fetch.lock.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    url: str
    sha256: str | None
    archive: str = "zip"
    strip: int = 0
    layout: str | None = None
    subdir: str = ""
    description: str = ""
    license: str = ""
    cite: str = ""


def load_catalogue(path: Path | None = None) -> dict[str, Entry]:
    path = path or CATALOGUE
    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: catalogue not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    out = {}
    for name, spec in tree.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ConfigError(f"{path}: {name}.url missing")
        unknown = set(spec) - (set(Entry.__dataclass_fields__) - {"name"})
        if unknown:
            raise ConfigError(f"{path}: {name}.{sorted(unknown)[0]}: unknown key")
        entry = Entry(name=name, **spec)
        if entry.archive not in ("zip", "tar", "none"):
            raise ConfigError(f"{path}: {name}.archive: expected zip, tar or none, got {entry.archive!r}")
        if entry.sha256 is not None and (
            len(entry.sha256) != 64 or not all(c in "0123456789abcdef" for c in entry.sha256)
        ):
            raise ConfigError(f"{path}: {name}.sha256: expected 64 lowercase hex digits")
        out[name] = entry
    return out


def download(
    url: str,
    dest: Path,
    progress: Callable[[int, int | None], None] | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
) -> str:
    """Stream `url` to `dest` (a temporary name, renamed on success); returns its sha256.
    Transient network errors are retried with back-off; HTTP 4xx are not."""
    for attempt in range(1, attempts + 1):
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.download")
        try:
            digest = hashlib.sha256()
            try:
                fh = open(tmp, "wb")
            except OSError as exc:
                raise output_error(dest, exc) from exc
            with fh, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                done = 0
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    try:
                        fh.write(chunk)
                    except OSError as exc:  # our disk, not the network: retrying cannot help
                        raise output_error(dest, exc) from exc
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            if total is not None and done != total:
                raise urllib.error.URLError(f"connection closed after {done} of {total} bytes")
            tmp.replace(dest)
            return digest.hexdigest()
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts:
                raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                raise DataError(
                    f"{url}: download failed after {attempts} attempts ({getattr(exc, 'reason', exc)})"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        time.sleep(min(30.0, 2.0**attempt))
    raise AssertionError("unreachable")


def _member_path(name: str, strip: int, archive: Path) -> PurePosixPath | None:
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise DataError(f"{archive}: member {name!r} would be written outside the dataset folder; refusing to unpack")
    parts = parts[strip:]
    return PurePosixPath(*parts) if parts else None


def unpack(archive: Path, kind: str, strip: int, dest: Path) -> None:
    """Members of `archive` under `dest`, `strip` leading folders dropped; never outside it."""
    if kind == "none":
        shutil.copy2(archive, dest / archive.name)
        return
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = _member_path(info.filename, strip, archive)
                    if rel is None or info.is_dir():
                        continue
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    rel = _member_path(member.name, strip, archive)
                    if rel is None or not member.isfile():
                        continue  # links and devices are not dataset content
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    data = tf.extractfile(member)
                    if data is None:  # only links and devices have no data, and those were skipped
                        raise DataError(f"{archive}: {member.name} has no data to unpack")
                    with data as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive}: not a valid {kind} archive ({exc})") from None


def foreign_files(dest: Path) -> list[str]:
    """Files under `dest` that no earlier fetch wrote there (its lock lists what it unpacked)."""
    if not dest.exists():
        return []
    if not dest.is_dir():
        return [dest.name]
    lock_path = dest / LOCK
    known: set[str] = set()
    if lock_path.is_file():
        try:
            known = {LOCK, *json.loads(lock_path.read_text()).get("files", [])}
        except (ValueError, AttributeError):
            known = set()
    return sorted(
        str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir() and str(p.relative_to(dest)) not in known
    )


def fetch(
    entry: Entry,
    dest: Path,
    sha256: str | None = None,
    trust: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Download, verify and unpack `entry` into `dest` (created atomically; an existing
    folder is replaced only once the new one is complete). Returns the lock record.

    A `dest` holding files an earlier fetch did not unpack (a user's notes, another dataset)
    is refused unless `overwrite`: replacing the folder would delete them."""
    foreign = foreign_files(dest)
    if foreign and not overwrite:
        what = (
            "is a file"
            if not dest.is_dir()
            else f"holds {len(foreign)} file(s) fetch did not create ({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''})"
        )
        raise ConfigError(f"--dest {dest}: {what}; choose a new or empty folder, or pass --overwrite to replace it")
    lock_path = dest / LOCK
    pinned = json.loads(lock_path.read_text()).get("sha256") if lock_path.is_file() else None
    expected = sha256 or entry.sha256 or pinned
    if expected is None and not trust:
        raise ConfigError(
            f"{entry.name}: the catalogue has no sha256 for {entry.url}; pass --sha256 HEX "
            f"(from the publisher) or --trust to pin the checksum of what arrives"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.archive"
    try:
        got = download(entry.url, archive, progress)
        if expected is not None and got != expected:
            raise DataError(
                f"{entry.url}: sha256 {got} does not match the expected {expected}; "
                f"the download was deleted and nothing was unpacked"
            )
        record: dict[str, Any] = {
            "name": entry.name,
            "url": entry.url,
            "sha256": got,
            "layout": entry.layout,
            "subdir": entry.subdir,
            "verified": expected is not None,
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with atomic_directory(dest) as tmp:
            unpack(archive, entry.archive, entry.strip, tmp)
            record["files"] = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            write_json_atomic(tmp / LOCK, record)
    finally:
        archive.unlink(missing_ok=True)
    return record
