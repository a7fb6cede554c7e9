"""A full or read-only output disk: one line naming the file, exit 2, and nothing half-written.

A full disk is the kernel's own answer to a write past RLIMIT_FSIZE (EFBIG, with SIGXFSZ
ignored), so every library writes as it would on a real full disk; a read-only folder is one
the command's user may not write (run as root, the test drops to `nobody`, or, where `nobody`
cannot reach the interpreter, mounts the folder read-only in a mount namespace of its own).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusion.checkpoint import CHECKPOINT_FORMAT
from fusion.models import build_model
from tests.unit.test_fetch import catalogue, served  # noqa: F401 (served is a fixture)

LYTRO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mf" / "Lytro20"


def _read_only(folder: Path, then: str) -> list[str]:
    """The shell command `then` in a private mount namespace where `folder` ($0 there) is
    mounted read-only over itself; arguments after this list are its "$@"."""
    return ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "$0" "$0" && {then}', str(folder)]


def _cli(
    *args,
    file_limit: int | None = None,
    user: int | None = None,
    cwd: Path | None = None,
    pythonpath: Path | None = None,
    read_only: Path | None = None,
):
    def limit():
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited across exec: writes fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
        if user is not None:
            os.setgid(user)
            os.setuid(user)

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "fusion", *map(str, args)]
    if read_only is not None:  # the folder mounted read-only, in a mount namespace of the command's own
        command = [*_read_only(read_only, 'exec "$@"'), *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
        env=env,
        cwd=cwd,
    )


def _one_line_error(proc, path: Path, why: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"{path}: cannot write" in lines[0] and why in lines[0], proc.stderr


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "ckpt" / "model.pt"
    path.parent.mkdir()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": "ufa",
            "variant": "UFA",
            "model_options": {},
            "state_dict": build_model("ufa", "UFA").state_dict(),
        },
        path,
    )
    return path


@pytest.fixture
def pair(tmp_path) -> list[Path]:
    import cv2

    if not LYTRO.is_dir():
        pytest.skip(f"shared data not found at {LYTRO}")
    out = []
    for side in "AB":
        img = cv2.imread(str(LYTRO / f"lytro-01-{side}.jpg"))[:256, :256]
        out.append(tmp_path / f"{side}.png")
        cv2.imwrite(str(out[-1]), img)
    return out


def test_fuse_on_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, checkpoint, pair):
    out = tmp_path / "out" / "fused.png"
    out.parent.mkdir()
    proc = _cli(
        "fuse", *pair, "--model", checkpoint, "--out", out, "--device", "cpu", file_limit=64
    )  # an untrained model's flat image is a small PNG
    _one_line_error(proc, out, "the disk (or your quota) is full")
    assert list(out.parent.iterdir()) == []


def test_evaluate_on_a_full_disk_writes_no_partial_reports(tmp_path, checkpoint, tiny_prepared):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    # the tables fit under the limit, the comparison figure does not: without staging they were left behind
    proc = _cli(
        "evaluate",
        "--model",
        checkpoint,
        "--prepared",
        tiny_prepared,
        "-b",
        "average",
        "-m",
        "EN",
        "--out",
        out,
        "--device",
        "cpu",
        file_limit=60_000,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot write" in proc.stderr and "is full" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's file kept, no reports
    assert _leftovers(tmp_path) == []


def test_train_on_a_full_disk_names_the_checkpoint(tmp_path):
    from tests.unit.test_core_without_stack import BLOCKER

    out = tmp_path / "run"
    # `train --out` prepares the workspace first; prepare it with room, then train with DVC
    # absent (the core install's path: the prepared data as it is), so that only the trainer
    # writes under the limit: DVC's own index would hit it first on a clean clone
    prepared = _cli("data", "prepare")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    site = tmp_path / "no-stack"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    proc = _cli(
        "train", "--out", out, "-p", "tiny", "--set", "train.device=cpu", file_limit=1_000_000, pythonpath=site
    )  # the tiny UFA-Fuse checkpoint: 1.38 MB of weights alone
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out}" in proc.stderr and "cannot write" in proc.stderr, proc.stderr
    assert _leftovers(tmp_path) == [] and not out.exists()  # the folder it made, empty, is gone too


def _nobody_can_run_python() -> bool:
    """Root can write anywhere, so the read-only case runs as `nobody`, who must reach the interpreter."""
    path = Path(os.path.realpath(sys.executable))
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o001)


def _can_mount_read_only(tmp: Path) -> bool:
    """Root whose interpreter `nobody` cannot reach: a read-only bind mount in a private mount
    namespace (`unshare -m`) refuses root's writes too, with EROFS."""
    probe = subprocess.run(
        _read_only(tmp, '! touch "$0/probe" 2>/dev/null'),
        capture_output=True,
    )
    return probe.returncode == 0 and not (tmp / "probe").exists()


def test_fuse_into_a_folder_it_may_not_write_names_the_file(tmp_path, checkpoint, pair):
    locked = tmp_path / "locked"
    locked.mkdir()
    user, read_only = None, None
    if os.geteuid() != 0:
        locked.chmod(0o555)
    elif _nobody_can_run_python():
        user = 65534
        for p in (tmp_path, checkpoint.parent, *pair, checkpoint):
            p.chmod(p.stat().st_mode | 0o005)
    elif _can_mount_read_only(locked):
        read_only = locked
    else:
        pytest.skip("running as root with an interpreter `nobody` cannot execute, and no mount namespace")
    out = locked / "fused.png"
    proc = _cli(
        "fuse",
        *pair,
        "--model",
        checkpoint,
        "--out",
        out,
        "--device",
        "cpu",
        user=user,
        cwd=tmp_path,
        read_only=read_only,
    )
    _one_line_error(proc, out, "read-only or not writable by you")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize(
    "code,hint",
    [
        (errno.EROFS, "read-only or not writable by you"),
        (errno.EACCES, "read-only or not writable by you"),
        (errno.ENOSPC, "the disk (or your quota) is full"),
        (errno.EIO, "is the disk full or read-only?"),
    ],
)
def test_write_errors_say_what_the_user_can_do(code, hint):
    from fusion.errors import output_error

    err = output_error("/x/out.png", OSError(code, os.strerror(code)))
    assert str(err).startswith(f"/x/out.png: cannot write ({os.strerror(code)}); ") and hint in str(err)


def test_fetch_onto_a_full_disk_is_one_line_and_leaves_no_partial_dataset(tmp_path, served):  # noqa: F811 - the fixture
    base, root = served
    cat = catalogue(tmp_path, base, root)
    dest = tmp_path / "dest"
    proc = _cli("data", "fetch", "--catalogue", cat, "tno", "--dest", dest, file_limit=20_000)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot write" in proc.stderr and "full" in proc.stderr, proc.stderr
    assert not any(p.suffix == ".png" for p in dest.rglob("*")) and _leftovers(tmp_path) == []


def test_patches_onto_a_full_disk_is_one_line_and_leaves_no_shards(tmp_path, shared_data):
    import shutil

    from tests.conftest import REPO

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = _cli(
        "data",
        "patches",
        "--workspace",
        tmp_path,
        "--out",
        "patches",
        "--window",
        "48",
        "--stride",
        "32",
        "--set",
        "train.source.layout=tno",
        "--set",
        f"train.source.path={shared_data / 'irvis/TNO42'}",
        "--set",
        "train.source.test_fraction=0.1",
        file_limit=200_000,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot write" in proc.stderr and "full" in proc.stderr, proc.stderr
    assert not (tmp_path / "patches").exists() and _leftovers(tmp_path) == []
