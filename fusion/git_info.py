"""The git state of the code that runs: what pins a run to its exact source."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from fusion.workspace import project_root


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check)


def git_state(repo: Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the code that runs (the package's checkout)."""
    repo = repo or project_root()
    try:
        commit = git(repo, "rev-parse", "HEAD").stdout.strip()
        dirty = bool(git(repo, "status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def git_diff_hash(repo: Path | None = None) -> str:
    """sha256 of the uncommitted changes to tracked files: pins a dirty tree's exact code."""
    proc = subprocess.run(
        ["git", "-C", str(repo or project_root()), "diff", "HEAD", "--binary"], capture_output=True, check=False
    )
    return hashlib.sha256(proc.stdout).hexdigest()
