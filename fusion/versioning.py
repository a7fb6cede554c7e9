"""DVC adapter: track the raw data, reproduce the preparation stages, store snapshots.

Calls the `dvc` command line (its stable interface) with the current interpreter's
environment first on PATH, so stage commands run this installation of fusionflow.
The embedded default remote is a folder in the workspace (`.dvc-remote/`, git-ignored);
point `dvc remote add -d` at S3/GCS/SSH for a team.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from fusion.errors import DataError, FusionError

log = logging.getLogger(__name__)

RAW_DIR = "data"
DEFAULT_REMOTE = ("local", ".dvc-remote")


class DvcError(FusionError):
    pass


def dvc(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workspace, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        # The stage's own error (e.g. "data/embedded/images/x.png: cannot decode image") is in
        # the output; surface the last lines rather than DVC's generic wrapper.
        detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise DvcError(f"`dvc {' '.join(args)}` failed in {workspace}:\n{detail}")
    return proc


def ensure_repo(workspace: Path) -> None:
    """`dvc init` (without git when the workspace is not a git checkout) and a default remote."""
    if not (workspace / ".dvc").is_dir():
        has_git = (workspace / ".git").exists()
        dvc(workspace, "init", *([] if has_git else ["--no-scm"]))
        dvc(workspace, "config", "core.autostage", "false")
    remotes = dvc(workspace, "remote", "list").stdout.strip()
    if not remotes:
        name, path = DEFAULT_REMOTE
        dvc(workspace, "remote", "add", "-d", name, path)
    # Keep the embedded remote out of git and out of DVC's own scans.
    (workspace / DEFAULT_REMOTE[1]).mkdir(exist_ok=True)


def track_raw(workspace: Path) -> str:
    """`dvc add data` (a no-op when nothing changed); returns the raw data's md5."""
    if not (workspace / RAW_DIR).is_dir():
        raise DataError(f"{workspace / RAW_DIR}: raw data folder missing")
    dvc(workspace, "add", RAW_DIR)
    return raw_hash(workspace)


def raw_hash(workspace: Path) -> str:
    path = workspace / f"{RAW_DIR}.dvc"
    meta = yaml.safe_load(path.read_text())
    return meta["outs"][0]["md5"]


@dataclass(frozen=True)
class ReproResult:
    ran: list[str]
    skipped: list[str]


def repro(workspace: Path, *targets: str) -> ReproResult:
    proc = dvc(workspace, "repro", *targets)
    text = proc.stdout + proc.stderr
    ran, skipped = [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Running stage"):
            ran.append(line.split("'")[1])
        elif "didn't change, skipping" in line:
            skipped.append(line.split("'")[1])
    return ReproResult(ran, skipped)


def output_hashes(workspace: Path) -> dict[str, str]:
    """Every stage output's md5 from dvc.lock: the data version the run reads."""
    lock = workspace / "dvc.lock"
    if not lock.is_file():
        return {}
    tree = yaml.safe_load(lock.read_text()) or {}
    out = {}
    for stage in (tree.get("stages") or {}).values():
        for item in stage.get("outs", []):
            out[item["path"]] = item["md5"]
    return out


def default_remote(workspace: Path) -> tuple[str, dict[str, str]] | None:
    """The workspace's default DVC remote as written in .dvc/config and .dvc/config.local
    (the latter wins): its name and its section, url made absolute; None without one."""
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        levels = [repo.config.load_one(level) for level in ("repo", "local")]
    name = next((lv["core"]["remote"] for lv in reversed(levels) if lv["core"].get("remote")), None)
    section: dict[str, str] = {}
    for lv in levels:
        section |= {k: str(v) for k, v in (lv["remote"].get(name) or {}).items()} if name else {}
    return (name, section) if name and "url" in section else None


def push(workspace: Path) -> None:
    dvc(workspace, "push")


def materialize(workspace: Path, rev: str, path: str, dest: Path) -> Path:
    """Copy `path` (a DVC-tracked folder such as prepared/test_sets/tno) as it was at git
    revision `rev` into `dest`, from the DVC cache or remote; the checkout is untouched.

    Built under a temporary name and renamed, like every prepared folder: a failed fetch
    leaves nothing at `dest`.
    """
    from dvc.api import DVCFileSystem
    from dvc.scm import RevError

    from fusion.io import atomic_directory

    if dest.exists():
        raise DataError(f"{dest}: already exists; materialise into a new folder")
    try:
        fs = DVCFileSystem(str(workspace), rev=rev)
    except RevError as exc:
        raise DvcError(f"{workspace}: git revision {rev!r} not found ({exc})") from None
    if not fs.exists(path):
        raise DataError(f"{path}: not tracked by DVC at revision {rev} of {workspace}")
    try:
        with atomic_directory(dest) as tmp:
            fs.get(path, str(tmp), recursive=True)
            # fs.get of a folder into an existing folder nests it under its own name
            inner = tmp / Path(path).name
            if inner.is_dir() and not (tmp / "manifest.json").exists():
                for child in inner.iterdir():
                    child.rename(tmp / child.name)
                inner.rmdir()
    except (FileNotFoundError, OSError) as exc:
        raise DvcError(
            f"{path}@{rev}: its data is in neither the DVC cache nor the remote ({exc}); "
            f"`dvc push` it from the machine that built it"
        ) from None
    return dest
