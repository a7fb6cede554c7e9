"""A run's training data on a node that shares no disk with the workspace.

With `storage.uri` on object storage, the driver names the DVC outputs training reads (their
workspace-relative paths and md5s: the run's data version) and the DVC remote holding them;
each worker node pulls that version once into a local cache folder keyed by it, and the
worker reads the copy. Workers of one node wait on a file lock, so a version is pulled once
per node however many workers start together; a pull that fails leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from fusion import versioning
from fusion.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# remote options that are secrets or paths on the driver: each node brings its own credentials
_PRIVATE = ("secret", "password", "token", "access_key", "credential", "keyfile", "sas", "passphrase")


@dataclass(frozen=True)
class DataRef:
    """JSON-able: travels to the Ray workers in the train loop's config."""

    workspace: str  # the driver's workspace: the prefix of the config's paths into it
    remote: dict[str, str]  # the DVC remote section: url and options (no credentials)
    outs: list[dict[str, str]]  # {"path": workspace-relative, "md5": ..., "hash": "md5"}

    @property
    def key(self) -> str:
        text = json.dumps(sorted((o["path"], o["md5"]) for o in self.outs))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tracked_outputs(workspace: Path) -> dict[str, dict[str, str]]:
    """Every DVC output of the workspace (dvc.lock stages, `.dvc` files): path -> its hash.

    `hash` is what a `.dvc` file pinning the output must say: "md5" for DVC 3 outputs; empty
    for one recorded by DVC 2, whose md5 (and so its place on the remote) is computed differently."""
    from dvc.repo import Repo

    ws = Path(workspace).resolve()
    found: dict[str, dict[str, str]] = {}
    with Repo(str(ws)) as repo:
        for out in repo.index.outs:
            if out.hash_info is None or not out.hash_info.value:
                continue  # declared but never built
            rel = str(Path(out.fs_path).resolve().relative_to(ws))
            found[rel] = {"md5": out.hash_info.value, "hash": "md5" if out.hash_name == "md5" else ""}
    return found


def data_ref(workspace: Path, reads: dict[str, Path]) -> DataRef:
    """The DVC outputs holding every path in `reads` (what names it -> path), checked present
    on the default remote. Refused with one line naming the path, the remote or the version."""
    ws = workspace.resolve()
    outputs = tracked_outputs(ws)
    wanted: dict[str, dict[str, str]] = {}
    for what, path in reads.items():
        rel = _relative(ws, path)
        if rel is None:
            log.warning("%s=%s is outside the workspace: every worker node must have it at that path", what, path)
            continue
        out = next((o for o in sorted(outputs, key=len, reverse=True) if rel == o or rel.startswith(o + "/")), None)
        if out is None:
            raise ConfigError(
                f"{what}={path}: not versioned by DVC, so workers on nodes without this disk cannot get it "
                "(storage.uri is object storage); make it a DVC stage's output or `dvc add` it"
            )
        wanted[out] = {"path": out, **outputs[out]}
    remote = default_remote(ws)
    check_pushed(ws, remote["url"], sorted(wanted))
    public = {k: v for k, v in remote.items() if not any(p in k for p in _PRIVATE)}
    return DataRef(str(ws), public, [wanted[k] for k in sorted(wanted)])


def _relative(ws: Path, path: Path) -> str | None:
    try:
        return str(Path(path).resolve().relative_to(ws))
    except ValueError:
        return None


def default_remote(ws: Path) -> dict[str, str]:
    """The workspace's default DVC remote (url + options), refused when it is a local folder."""
    found = versioning.default_remote(ws)
    if found is None:
        raise ConfigError(f"{ws}: no default DVC remote; add one the workers can reach (dvc remote add -d ...)")
    name, section = found
    if "://" not in section["url"]:
        raise ConfigError(
            f"DVC remote {name!r} is {section['url']}, a folder on this machine: with storage.uri on object "
            "storage the workers fetch data from the remote (dvc remote add -d team s3://bucket/dvc)"
        )
    return section


def check_pushed(ws: Path, url: str, outs: list[str]) -> None:
    """Every file of `outs` is on the default remote (`dvc status --cloud`)."""
    proc = versioning.dvc(ws, "status", "--cloud", "--json", check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DataError(f"DVC remote {url}: unreachable ({detail[0] if detail else 'no output'})")
    status = json.loads(proc.stdout or "{}")
    for out in outs:
        missing = sorted(
            p for p, state in status.items() if (p == out or p.startswith(out + "/")) and state != "deleted"
        )
        if missing:
            raise DataError(
                f"{out}: this data version is not on the DVC remote {url} ({len(missing)} entries missing, "
                f"e.g. {missing[0]}); push it with `fusion data prepare` (it pushes) or `dvc push`"
            )


def materialise(ref: DataRef, cache: str | Path) -> Path:
    """The data version `ref` in the node-local cache (pulled the first time): a folder laid out
    like the workspace, holding the outputs in ref.outs."""
    root = Path(cache).expanduser() / "data"
    final = root / ref.key
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{ref.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process dies
        if final.is_dir():  # another worker of this node pulled it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.key}-", dir=root))
        try:
            _pull(ref, tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("data version %s pulled from %s into %s", ref.key, ref.remote["url"], final)
    return final


def _pull(ref: DataRef, into: Path) -> None:
    """A throw-away DVC repository whose `.dvc` files pin ref.outs, pulled from the remote."""
    versioning.dvc(into, "init", "--no-scm", "-q")
    lines = ["[core]", "    no_scm = True", "    remote = origin", "    autostage = false", "['remote \"origin\"']"]
    lines += [f"    {k} = {v}" for k, v in ref.remote.items()]
    (into / ".dvc" / "config").write_text("\n".join(lines) + "\n")
    pins = []
    for out in ref.outs:
        target = into / out["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        pin = target.parent / f"{target.name}.dvc"
        entry = {"md5": out["md5"], **({"hash": out["hash"]} if out["hash"] else {}), "path": target.name}
        pin.write_text(yaml.safe_dump({"outs": [entry]}))
        pins.append(pin)
    try:
        versioning.dvc(into, "pull")
    except versioning.DvcError as exc:
        raise DataError(f"data version {ref.key} from the DVC remote {ref.remote['url']}: {exc}") from None
    shutil.rmtree(into / ".dvc")
    (into / ".dvcignore").unlink(missing_ok=True)
    for pin in pins:
        pin.unlink()


def localise(value: Any, ref: DataRef, root: Path) -> Any:
    """`value` (the run's config as JSON) with every path into the driver's workspace pointing
    into the node-local copy instead."""
    prefix = ref.workspace.rstrip("/")
    if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
        return str(root) + value[len(prefix) :]
    if isinstance(value, dict):
        return {k: localise(v, ref, root) for k, v in value.items()}
    if isinstance(value, list):
        return [localise(v, ref, root) for v in value]
    return value
