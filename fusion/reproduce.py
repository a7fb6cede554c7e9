"""`fusion reproduce RUN_ID`: train a past run again from its recorded code and data, and compare.

The run's tags pin what it was made of: `git.commit` (+ `git.dirty`), the prepared data's
DVC md5 (`data.dvc_md5`, with the run's `dvc.lock` as an artifact), the manifest version
(`data.version`), the resolved configuration (`config/resolved.json`) and the CPU thread
count (`train.threads`). Reproduction:

1. refuses what cannot be reproduced, saying why: a dirty tree at the time, an unknown or
   missing commit, a data version in neither the DVC cache nor the remote;
2. checks the commit out into a temporary `git worktree` (the user's checkout is never
   touched) and materialises the exact data there from the run's `dvc.lock`, through the
   workspace's DVC cache and remote;
3. trains with that commit's code (a subprocess with the worktree first on PYTHONPATH), the
   same configuration, seed and thread count;
4. compares the weights of every checkpoint and the per-epoch metrics with the run's own,
   exactly on CPU, within `tolerance` (relative) on GPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fusion import pipeline, tracking, versioning
from fusion.config import load_config, project_root
from fusion.errors import ReproducibilityError
from fusion.git_info import git

# Runs inside the worktree's code: only the Trainer API every fusionflow revision has. A
# data-parallel run is trained again by as many processes in a gloo group set up the way Ray
# Train sets up its workers' (torch's env:// variables), so the all-reduces add the same
# numbers in the same order.
_RETRAIN = """
import json, os, sys, torch
torch.set_num_threads(int(sys.argv[4]))
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    import torch.distributed
    torch.distributed.init_process_group("gloo")
from fusion.config import Config
from fusion.train.loop import Trainer
cfg = Config.model_validate(json.loads(open(sys.argv[1]).read()))
Trainer(cfg, sys.argv[2]).fit(sys.argv[3])
"""
CHECKPOINTS = ("last.pt", "best.pt")
WALL_CLOCK = ("train/epoch_seconds", "epoch_seconds", "train/epoch_comm_seconds")


@dataclass
class Comparison:
    run_id: str
    commit: str
    data_md5: str
    device: str
    tolerance: float
    checkpoints: dict[str, bool] = field(default_factory=dict)  # file -> weights identical
    max_weight_diff: dict[str, float] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)  # per epoch: name, original, reproduced
    metrics_equal: bool = True

    @property
    def identical(self) -> bool:
        return bool(self.checkpoints) and all(self.checkpoints.values()) and self.metrics_equal


def _refuse(run_id: str, why: str) -> ReproducibilityError:
    return ReproducibilityError(f"run {run_id} cannot be reproduced: {why}")


def check_reproducible(tags: dict[str, str], run_id: str, repo: Path) -> str:
    """The run's commit, or the reason it cannot be reproduced."""
    commit = tags.get("git.commit", "unknown")
    if commit == "unknown":
        raise _refuse(run_id, "it records no git commit (its code was not in a git checkout)")
    if tags.get("git.dirty") != "false":
        raise _refuse(
            run_id,
            f"it was trained from a checkout with uncommitted changes on top of {commit[:12]} "
            f"(git.dirty={tags.get('git.dirty')}); that code was never recorded",
        )
    if git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        raise _refuse(run_id, f"its code revision {commit} is not in {repo} (git fetch it from the team's remote)")
    if "data.dvc_md5" not in tags or tags["data.dvc_md5"] == "unknown":
        raise _refuse(run_id, "it records no DVC data version (data.dvc_md5)")
    if tags.get("data.synthetic") == "false":
        raise _refuse(
            run_id,
            f"it trained on {tags.get('data.source')}, read in place outside DVC; only runs on "
            f"DVC-prepared data can be materialised exactly",
        )
    return commit


def materialize_data(ws: Path, worktree: Path, lock_text: str, out: str, expected_md5: str, run_id: str) -> Path:
    """The run's prepared data in `worktree/out`, from the workspace's DVC cache or remote."""
    (worktree / "dvc.lock").write_text(lock_text)
    versioning.dvc(worktree, "cache", "dir", "--local", str((ws / ".dvc" / "cache").resolve()))
    remote = versioning.default_remote(ws)
    url = remote[1]["url"] if remote else None
    if remote:  # with its options (an S3-compatible store's endpointurl, ...), not only the url
        versioning.dvc(worktree, "remote", "add", "--local", "-f", "-d", "origin", remote[1]["url"])
        for key, value in remote[1].items():
            if key != "url":
                versioning.dvc(worktree, "remote", "modify", "--local", "origin", key, value)
    if versioning.output_hashes(worktree).get(out) != expected_md5:
        raise _refuse(run_id, f"its logged dvc.lock does not name {out} with md5 {expected_md5}")
    if versioning.dvc(worktree, "checkout", out, check=False).returncode != 0:
        pulled = versioning.dvc(worktree, "pull", out, check=False)
        if pulled.returncode != 0:
            detail = (pulled.stderr or pulled.stdout).strip().splitlines()[-1:] or [""]
            raise _refuse(
                run_id,
                f"its data version {out} md5 {expected_md5} is in neither the DVC cache of {ws} "
                f"nor the remote {url} ({detail[0]})",
            )
    return worktree / out


def compare(original: Path, reproduced: Path, cmp: Comparison) -> Comparison:
    """Weights of each checkpoint and the per-epoch metrics (wall-clock times aside)."""
    from fusion.checkpoint import load_checkpoint

    for name in CHECKPOINTS:
        a_path, b_path = original / name, reproduced / name
        if not a_path.is_file():
            continue
        if not b_path.is_file():
            cmp.checkpoints[name] = False
            continue
        a, b = load_checkpoint(a_path), load_checkpoint(b_path)
        wa, wb = a["state_dict"], b["state_dict"]
        same_keys = wa.keys() == wb.keys()
        diffs = [
            float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].numel() else 0.0
            for k in wa
            if same_keys and wa[k].shape == wb[k].shape
        ]
        worst = max(diffs, default=math.inf if not same_keys else 0.0)
        scale = max((float(v.double().abs().max()) for v in wa.values() if v.numel()), default=1.0) or 1.0
        cmp.max_weight_diff[name] = worst
        cmp.checkpoints[name] = same_keys and len(diffs) == len(wa) and worst <= cmp.tolerance * scale
        if name == "last.pt":
            for epoch, (ha, hb) in enumerate(zip(a.get("history", []), b.get("history", [])), 1):
                for key in sorted((set(ha) | set(hb)) - set(WALL_CLOCK)):
                    va, vb = ha.get(key), hb.get(key)
                    equal = (
                        va is not None
                        and vb is not None
                        and (va == vb or abs(va - vb) <= cmp.tolerance * max(abs(va), 1e-12))
                    )
                    cmp.metrics.append(
                        {"epoch": epoch, "metric": key, "original": va, "reproduced": vb, "equal": equal}
                    )
                    cmp.metrics_equal &= equal
            cmp.metrics_equal &= len(a.get("history", [])) == len(b.get("history", []))
    return cmp


def retrain(config: Path, data: Path, out: Path, threads: str, workers: int, cwd: Path, env: dict) -> str | None:
    """Train `config` into `out` with the code on env's PYTHONPATH, as `workers` data-parallel
    processes (rank 0 writes `out`); returns the failing process's log, or None. When one
    process fails the others are stopped: they would wait for it in the next all-reduce."""
    import time

    from fusion.loopback import free_port

    port = free_port()
    procs, logs = [], []
    for rank in range(workers):
        group = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(workers)}
        group |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        where = out if rank == 0 else out.parent / f"{out.name}-rank{rank}"
        logs.append(out.parent / f"retrain-rank{rank}.log")
        with open(logs[-1], "w") as log:  # a file, not a pipe: a long run's log would fill a pipe and block
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _RETRAIN, str(config), str(data), str(where), threads],
                    cwd=cwd,
                    env={**env, **(group if workers > 1 else {})},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    ended = [(p.returncode, log) for p, log in zip(procs, logs) if p.returncode != 0]
    # the process that failed first, not one this function stopped
    failed = next((log for code, log in ended if code != -9), ended[0][1] if ended else None)
    return failed.read_text() if failed else None


def reproduce(ws: Path, run_id: str, tolerance: float | None = None, keep: Path | None = None) -> Comparison:
    """Train run `run_id` again from its commit and data version and compare (see module doc)."""
    target = tracking.target(load_config(ws), ws)
    try:
        run = tracking.get_run(target, run_id)
    except tracking.RunNotFound as exc:
        raise ReproducibilityError(str(exc)) from None
    tags = run.data.tags
    repo = project_root()
    commit = check_reproducible(tags, run_id, repo)
    cfg = pipeline.run_config(target, run_id)
    device = tags.get("env.device", "cpu")
    tol = tolerance if tolerance is not None else (0.0 if device == "cpu" else 1e-3)
    threads = tags.get("train.threads") or str(max(1, int(cfg.train.ray.cpus_per_worker)))
    out = tags.get("data.path", cfg.data.synth_multifocus.out)

    tmp = Path(tempfile.mkdtemp(prefix=f"fusionflow-reproduce-{run_id[:8]}-"))
    worktree = tmp / "code"
    try:
        git(repo, "worktree", "add", "--detach", str(worktree), commit)
        fetched = tmp / "original"
        for what in ("data/dvc.lock", "checkpoints"):
            try:
                tracking.download(target.uri, f"runs:/{run_id}/{what}", fetched / Path(what).parent)
            except Exception as exc:  # MLflow raises several kinds for a missing artifact
                raise _refuse(run_id, f"its {what} artifact cannot be read ({str(exc).splitlines()[0]})") from None
        lock = fetched / "data" / "dvc.lock"
        data_root = materialize_data(ws, worktree, lock.read_text(), out, tags["data.dvc_md5"], run_id)
        if "data.version" in tags:
            from fusion.data.manifest import data_version

            if data_version(data_root) != tags["data.version"]:
                raise _refuse(
                    run_id, f"the materialised {out} has another manifest than data.version {tags['data.version']}"
                )
        config_file = tmp / "resolved.json"
        # as the run recorded it: the commit's own code reads its own schema's keys
        config_file.write_text(pipeline.run_config_text(target, run_id))
        ckpt = tmp / "reproduced"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(worktree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
        failed = retrain(config_file, data_root, ckpt, threads, cfg.train.ray.num_workers, worktree, env)
        if failed:
            raise ReproducibilityError(
                f"run {run_id}: training with the code of {commit[:12]} failed:\n"
                + "\n".join(failed.strip().splitlines()[-15:])
            )
        result = compare(fetched / "checkpoints", ckpt, Comparison(run_id, commit, tags["data.dvc_md5"], device, tol))
        if keep is not None:
            shutil.copytree(ckpt, keep, dirs_exist_ok=True)
            (keep / "comparison.json").write_text(
                json.dumps({**result.__dict__, "identical": result.identical}, indent=2)
            )
        return result
    finally:
        git(repo, "worktree", "remove", "--force", str(worktree), check=False)
        git(repo, "worktree", "prune", check=False)
        shutil.rmtree(tmp, ignore_errors=True)
