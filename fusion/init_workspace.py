"""`fusion init DIR`: a workspace of a team's own, for fusionflow installed with pip.

Writes the project's default params.yaml and its DVC pipeline (dvc.yaml), ignores the
pipeline outputs in git, and initialises git and DVC. Files already there are kept: an
identical one is left alone, a different one is refused unless --force (.gitignore only
ever gets the missing lines appended).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fusion.errors import FusionError
from fusion.git_info import git
from fusion.io import write_bytes_atomic
from fusion.workspace import PARAMS_FILE, PIPELINE_FILE

TEMPLATE_DIR = "workspace_template"  # package data: the checkout's own params.yaml and dvc.yaml
GITIGNORE = ".gitignore"
# the pipeline outputs, ignored as the checkout ignores them: DVC (data, prepared), MLflow's
# embedded store and the runs' local files are versioned elsewhere, never by git
IGNORED = ("/data/", "/prepared/", "/runs/", "/reports/", "/.dvc-remote/", "/mlflow/store/")


class InitError(FusionError):
    pass


@dataclass
class InitReport:
    root: Path
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def template(name: str) -> str:
    return (importlib.resources.files("fusion") / TEMPLATE_DIR / name).read_text(encoding="utf-8")


def pipeline_text() -> str:
    """The checkout's dvc.yaml without its deps on fusionflow's own source files: in a
    workspace of its own they are inside the installed package, not beside dvc.yaml."""
    text = template(PIPELINE_FILE)
    head = text.partition("\nstages:")[0]
    tree = yaml.safe_load(text)
    for stage in tree["stages"].values():
        body = stage.get("do", stage)  # foreach stages keep theirs under `do`
        deps = [d for d in body.get("deps", []) if not d.startswith("fusion/")]  # modules and packages
        if deps:
            body["deps"] = deps
        else:
            body.pop("deps", None)
    note = (
        f"#\n# Written by `fusion init` (fusionflow {_version()}): the stage commands run the installed\n"
        f"# fusionflow, so upgrading it does not rerun them by itself; `dvc repro --force` does.\n"
    )
    return f"{head}\n{note}{yaml.safe_dump(tree, sort_keys=False, width=120)}"


def _version() -> str:
    try:
        return importlib.metadata.version("fusionflow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def init_workspace(dest: Path, force: bool = False) -> InitReport:
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise InitError(f"{dest}: exists and is not a folder")
    files = {PARAMS_FILE: template(PARAMS_FILE), PIPELINE_FILE: pipeline_text()}
    odd = [dest / n for n in (*files, GITIGNORE) if (dest / n).exists() and not (dest / n).is_file()]
    if odd:
        raise InitError(f"{odd[0]}: exists and is not a file; move it away first")
    # every refusal before anything is written: a refused init leaves the folder as it was
    held = [n for n, text in files.items() if (dest / n).is_file() and (dest / n).read_bytes() != text.encode()]
    if held and not force:
        raise InitError(
            f"{', '.join(str(dest / n) for n in held)}: already there and different from the default; "
            f"kept (pass --force to replace {'them' if len(held) > 1 else 'it'} with the default)"
        )
    report = InitReport(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            if (dest / name).is_file() and name not in held:
                report.kept.append(name)
            else:
                write_bytes_atomic(dest / name, text.encode())
                report.written.append(name)
        _gitignore(dest, report)
    except OSError as exc:
        raise InitError(f"{exc.filename or dest}: cannot write ({exc.strerror})") from None
    in_git = _git(dest, report)
    _dvc(dest, in_git, report)
    return report


def _gitignore(dest: Path, report: InitReport) -> None:
    path = dest / GITIGNORE
    # surrogateescape: a team's .gitignore in another encoding is appended to, byte for byte
    old = path.read_bytes().decode("utf-8", "surrogateescape") if path.is_file() else ""
    have = {line.strip() for line in old.splitlines()}
    missing = [line for line in IGNORED if line not in have and line.rstrip("/") not in have]
    if not missing:
        report.kept.append(GITIGNORE)
        return
    sep = "" if not old or old.endswith("\n") else "\n"
    block = "# fusionflow pipeline outputs (versioned by DVC and MLflow, not git)\n" + "\n".join(missing) + "\n"
    write_bytes_atomic(path, (old + sep + ("\n" if old else "") + block).encode("utf-8", "surrogateescape"))
    report.written.append(GITIGNORE if not old else f"{GITIGNORE} (+{len(missing)} lines)")


def _git(dest: Path, report: InitReport) -> Path | None:
    """The git work tree `dest` is in (made here when there is none); None without git."""
    if shutil.which("git") is None:
        report.notes.append("git: not found on PATH, so not initialised; install git and run `git init` here")
        return None
    top = git(dest, "rev-parse", "--show-toplevel", check=False)
    if top.returncode == 0:
        root = Path(top.stdout.strip()).resolve()
        report.notes.append("git: already a repository" if root == dest else f"git: inside the repository {root}")
        return root
    proc = git(dest, "init", "-q", check=False)
    if proc.returncode != 0:
        raise InitError(f"{dest}: `git init` failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}")
    report.notes.append("git: initialised")
    return dest


def _dvc(dest: Path, git_root: Path | None, report: InitReport) -> None:
    from fusion import versioning

    if (dest / ".dvc").is_dir():
        report.notes.append("dvc: already initialised")
    elif importlib.util.find_spec("dvc") is None:
        report.notes.append(
            "dvc: not installed in this environment, so not initialised; `pip install dvc`, then `dvc init`"
        )
        return
    else:
        # a workspace below the top of a team's repository is a DVC subdir project (monorepo)
        flags = ["--no-scm"] if git_root is None else ([] if git_root == dest else ["--subdir"])
        versioning.dvc(dest, "init", "-q", *flags)
        versioning.dvc(dest, "config", "core.autostage", "false")  # as versioning.ensure_repo does
        report.notes.append("dvc: initialised" + (" (subdir of the git repository)" if "--subdir" in flags else ""))
    versioning.ensure_repo(dest)  # the default local remote, as the first `fusion data prepare` would add
