"""Training on a Ray cluster whose nodes share no disk: checkpoints and data on object storage.

Everything runs for real on loopback: an S3-compatible server (moto's server mode) holds the
DVC remote and Ray Train's storage; a real `mlflow server` proxies the artifacts; a two-node
Ray cluster with token authentication whose head has no CPUs, so training lands on the
worker node, and whose worker node runs as another Unix user (`nobody`) that cannot read
the head's workspace: a path into the workspace reaching a worker fails the run.

A 2-worker data-parallel `fusion train` has one of its worker processes killed after two
epochs' checkpoints reached the bucket; Ray restarts the worker group from the latest one it
registered, and the run ends with the weights of an uninterrupted run (the same configuration
trained by two local processes in a gloo group, `fusion reproduce`'s way), every metric logged
once. On the way it is also interrupted with Ctrl-C once the restarted workers finished an
epoch, and `fusion train --resume RUN_ID` takes it on from its checkpoints in the bucket.

A sweep on the same cluster keeps its trial folders in the bucket: its trial's process on
the worker node is killed after two epochs, Ray Tune starts the trial again, the new attempt
continues from the checkpoint in the bucket and ends with the weights of an uninterrupted
run, evaluated on the worker node's copy of the test data; nothing of it is in the workspace.
A data-parallel trial of that sweep (two Ray Train workers) trains from the data and the
checkpoints its workers pull from the bucket; one of its workers is killed after two epochs,
Ray Train restarts the group from the checkpoint, and the trial ends, in its first attempt,
evaluated, every step logged once, with the weights of two uninterrupted gloo processes.

Needs root (to start the worker node as another user in its own mount namespace); skipped
otherwise, with the reason.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, stop_ray_nodes, why_no_isolated_node

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FUSION, RAY, DVC = str(BIN / "fusion"), str(BIN / "ray"), [sys.executable, "-m", "dvc"]
BUCKET = "fusionflow-test"
# a few seconds an epoch on the worker node's two cores: long enough to be killed between checkpoints
SETTINGS = [
    "train.epochs=5",
    "train.steps_per_epoch=8",
    "train.batch_size=4",
    "train.crop=48",
    "train.ray.num_workers=2",
    "train.ray.cpus_per_worker=1",
    "train.ray.max_failures=2",
]
OTHER_USER = 65534  # nobody


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on loopback with one bucket; the AWS settings every process uses."""
    from fusion.loopback import s3_server

    with s3_server(tmp_path_factory.mktemp("moto"), BUCKET) as aws:
        yield aws


def _keys(aws: dict) -> dict:
    return {"aws_access_key_id": aws["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"]}


def _objects(aws: dict, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], **_keys(aws))
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _as_other_user(temp: Path) -> list[str]:
    """The command prefix that runs a process as `nobody`, in a mount namespace where the
    interpreter, the virtual environment and the checkout are made reachable (any of them may
    live under a folder nobody cannot enter, such as root's home); nothing else is."""
    script = temp / "as-other-user.sh"
    needed = sorted({Path(p).resolve() for p in (sys.base_prefix, sys.prefix, REPO)})
    lines = ["#!/bin/sh", "set -e"]
    blocked: dict[Path, Path] = {}  # needed path -> its outermost ancestor nobody cannot enter
    for path in needed:
        closed = [p for p in reversed(path.parents) if p != Path("/") and not (p.stat().st_mode & 0o001)]
        if closed:
            blocked[path] = closed[0]
    for i, path in enumerate(blocked):  # staged first: the tmpfs below hides them
        lines += [f'mkdir -p "{temp}/stage{i}"', f'mount --bind "{path}" "{temp}/stage{i}"']
    for top in sorted(set(blocked.values())):
        lines.append(f'mount -t tmpfs -o mode=755 tmpfs "{top}"')
    for i, path in enumerate(blocked):
        lines += [f'mkdir -p "{path}"', f'mount --move "{temp}/stage{i}" "{path}"']
    lines.append(f'exec setpriv --reuid={OTHER_USER} --regid={OTHER_USER} --clear-groups "$@"')
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return ["unshare", "--mount", "--propagation", "private", str(script)]


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """`ray start --head --num-cpus=0` as this user, and a worker node with two CPUs as `nobody`."""
    reason = why_no_isolated_node()
    if reason:
        pytest.skip(reason)
    import ray

    ray.shutdown()
    temp = Path(tempfile.mkdtemp(prefix="ray-os-", dir="/tmp"))  # Ray's socket paths stay under 107 bytes
    temp.chmod(0o755)
    worker_temp, home, tmp = temp / "w", temp / "home", temp / "tmp"
    for d in (worker_temp, home, tmp):
        d.mkdir()
        os.chown(d, OTHER_USER, OTHER_USER)
    home.chmod(0o700)
    as_other = _as_other_user(temp)
    probe = subprocess.run([*as_other, sys.executable, "-c", "import ray, fusion"], capture_output=True, text=True)
    if probe.returncode != 0:
        shutil.rmtree(temp, ignore_errors=True)
        pytest.skip(f"the worker node's user cannot run this installation: {probe.stderr.strip()[-300:]}")
    port = free_port()
    env = {
        # not this session's PREFECT_HOME either: the worker node's user cannot read it
        **{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PREFECT_HOME")},
        **s3,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    common = ["--node-ip-address=127.0.0.1", "--object-store-memory=150000000"]
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *common]
            + [f"--temp-dir={temp / 'h'}"],
            check=True,
            env=env,
            capture_output=True,
            timeout=180,
        )
        subprocess.run(
            [*as_other, RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", *common]
            + [f"--temp-dir={worker_temp}"],
            check=True,
            # a node of its own has its own /tmp: Ray's lock files there are this node's alone
            env={**env, "HOME": str(home), "TMPDIR": str(tmp), "RAY_TMPDIR": str(tmp)},
            capture_output=True,
            timeout=180,
        )
        yield {"address": f"127.0.0.1:{port}", "env": env, "home": home, "as_other": as_other}
    finally:
        stop_ray_nodes(temp)  # both nodes' temp dirs are under it
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def workspace_on_s3(s3, tmp_path_factory) -> Path:
    """A workspace whose DVC remote is the bucket (endpoint in the remote's config, as for MinIO)."""
    from fusion.pipeline import new_workspace

    ws = new_workspace(tmp_path_factory.mktemp("object-store") / "ws", REPO)
    env = {**os.environ, **s3}
    for args in (
        ["init", "--no-scm", "-q"],
        ["remote", "add", "-d", "bucket", f"s3://{BUCKET}/dvc"],
        ["remote", "modify", "bucket", "endpointurl", s3["AWS_ENDPOINT_URL"]],
    ):
        subprocess.run([*DVC, *args], cwd=ws, env=env, check=True, capture_output=True)
    return ws


def _worker_pids() -> list[int]:
    import psutil

    return [
        p.pid
        for p in psutil.process_iter(["uids", "cmdline"])
        if p.info["uids"]
        and p.info["uids"].real == OTHER_USER
        and "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
    ]


def _env(cluster, mlflow: str) -> dict:
    return {**cluster["env"], "RAY_ADDRESS": cluster["address"], "MLFLOW_TRACKING_URI": mlflow}


def _train(ws: Path, cluster, mlflow: str, log: Path, prefix: str, kill_after_checkpoints: int | None = None):
    settings = [*SETTINGS, f"storage.uri=s3://{BUCKET}/{prefix}"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [FUSION, "train", "-w", str(ws), "--profile", "tiny", *[a for s in settings for a in ("--set", s)]],
            env=_env(cluster, mlflow),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        killed = None
        try:
            if kill_after_checkpoints is None:
                assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
                return None
            killed = _kill_a_worker_after(cluster, prefix, kill_after_checkpoints, proc, log)
            # then Ctrl-C once the restarted workers finished an epoch: `--resume` must take the
            # run on from the bucket
            _wait_for(lambda: re.search(r"resumed from .*epoch [2-4]/5", log.read_text(), re.S), proc, log)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=180) == 130, log.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    return killed


def _wait_for(condition, proc, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"training ended too early:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise TimeoutError(log.read_text()[-3000:])


def _kill_a_worker_after(cluster, prefix: str, checkpoints: int, proc, log: Path) -> int:
    deadline = time.monotonic() + 600
    aws = {k: v for k, v in cluster["env"].items() if k.startswith("AWS_")}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before a worker could be killed:\n{log.read_text()[-3000:]}"
        done = {k.split("/")[2] for k in _objects(aws, prefix + "/") if "/checkpoint_" in k and k.endswith("last.pt")}
        pids = _worker_pids()
        if len(done) >= checkpoints and len(pids) == 2:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint {checkpoints} in the bucket:\n{log.read_text()[-3000:]}")


# slow (6 min on an AVX2 2-core machine): the sweep test below kills a trial on the same cluster
# and continues it from the bucket, with a data-parallel trial beside it
@pytest.mark.slow
def test_killed_worker_on_a_cluster_without_shared_disk_resumes_from_object_storage(
    workspace_on_s3, cluster, mlflow_server, tmp_path
):
    from fusion.checkpoint import load_checkpoint
    from mlflow import MlflowClient

    ws = workspace_on_s3
    # the premise: the worker node's user cannot read the workspace
    denied = subprocess.run([*cluster["as_other"], "ls", str(ws)], capture_output=True)
    assert denied.returncode != 0 and b"Permission denied" in denied.stderr

    killed = _train(ws, cluster, mlflow_server, tmp_path / "killed.log", "killed", kill_after_checkpoints=2)
    assert killed is not None
    log = (tmp_path / "killed.log").read_text()
    # the restarted workers continued from a checkpoint in the bucket, not from epoch 0 (the
    # latest one Ray had registered: the one uploaded just before the kill may not be yet)
    assert re.search(r"resumed from \S+ at epoch [1-4] ", log)

    client = MlflowClient(mlflow_server)
    run_id = re.findall(r"fusion train --resume ([0-9a-f]{32})", " ".join(log.split()))[-1]
    assert client.get_run(run_id).info.status == "KILLED"
    # Ctrl-C, then --resume: the workers find the run's checkpoints in the bucket by its name
    resumed = subprocess.run(
        [FUSION, "train", "--resume", run_id, "-w", str(ws)],
        env=_env(cluster, mlflow_server),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # from a checkpoint in the bucket (a fresh start says nothing): the latest Ray had registered
    # when Ctrl-C came, which may be the one before the last epoch's
    assert re.search(r"resumed from \S+ at epoch [1-4] ", resumed.stdout + resumed.stderr)
    assert client.get_run(run_id).info.status == "FINISHED"
    got = load_checkpoint(Path(client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path / "got"))))
    # every metric once, the restarted epoch's steps included
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == list(range(1, 5 * 8 + 1))
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/loss")) == [1, 2, 3, 4, 5]

    # the uninterrupted run: the same configuration trained here by two processes in a gloo
    # group, which is the arithmetic of two Ray Train workers to the bit (test_ray_data_parallel.py)
    from fusion.reproduce import retrain

    config = Path(client.download_artifacts(run_id, "config/resolved.json", str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    data = ws / "prepared" / "multifocus_synthetic"
    assert retrain(config, data, tmp_path / "reference", "1", 2, REPO, env) is None
    want = load_checkpoint(tmp_path / "reference" / "last.pt")
    assert got["data_parallel_workers"] == want["data_parallel_workers"] == 2 and got["epoch"] == want["epoch"] == 5
    import torch

    for key, value in want["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key
    assert [h["val/loss"] for h in want["history"]] == [h["val/loss"] for h in got["history"]]

    # Ray kept the checkpoints in the bucket, not in the workspace; the worker node pulled the
    # data version once into its own cache
    assert any(k.endswith("last.pt") for k in _objects(cluster["env"], "killed/"))
    assert not list((ws / "runs").glob("*/ray"))
    versions = subprocess.run(
        [*cluster["as_other"], "ls", str(cluster["home"] / ".cache/fusionflow/data")], capture_output=True, text=True
    )
    assert len([v for v in versions.stdout.split() if not v.endswith(".lock")]) == 1, versions


SWEEP_TRIAL = "ufa-UFA-multi-focus-s0"


def _read(aws: dict, key: str) -> bytes | None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], **_keys(aws))
    try:
        return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def _trial_key(aws: dict, name: str, trial: str = SWEEP_TRIAL) -> str | None:
    found = [k for k in _objects(aws, "sweep/sweeps/") if k.endswith(f"/{trial}/{name}")]
    return found[0] if found else None


def test_a_sweep_on_a_cluster_without_shared_disk_continues_a_killed_trial_from_object_storage(
    workspace_on_s3, cluster, mlflow_server, tmp_path
):
    import io
    import json

    import torch
    import yaml

    from fusion.checkpoint import load_checkpoint
    from fusion.reproduce import retrain
    from mlflow import MlflowClient

    ws, aws = workspace_on_s3, {k: v for k, v in cluster["env"].items() if k.startswith("AWS_")}
    saved = (ws / "params.yaml").read_text()
    params = yaml.safe_load(saved)
    params["storage"]["uri"] = f"s3://{BUCKET}/sweep"  # the sweep's own settings come from params.yaml
    params["sweeps"] = {
        "nodisk": {
            "profile": "tiny",
            "overrides": [s for s in SETTINGS if not s.startswith("train.ray.")],
            "matrix": [
                {"model": "ufa", "variants": ["UFA"]},
                # two Ray Train workers of half a CPU beside the trial's own: each pulls the trial's
                # data and checkpoints from the bucket to its node, rank 0 pushes them back
                {
                    "model": "ufa",
                    "variants": ["UFA"],
                    "grid": {"train.ray.num_workers": [2], "train.ray.cpus_per_worker": [0.5]},
                },
            ],
            "resources": {"cpus": 1},
            "max_failures": 2,
        }
    }
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = tmp_path / "sweep.log"
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [FUSION, "sweep", "nodisk", "-w", str(ws)], env=_env(cluster, mlflow_server), stdout=out, stderr=out
            )
            try:

                def two_epochs() -> bool:
                    key = _trial_key(aws, "checkpoints/last.pt")
                    data = _read(aws, key) if key else None
                    return data is not None and torch.load(io.BytesIO(data), weights_only=True)["epoch"] >= 2

                _wait_for(two_epochs, proc, log)
                worker = json.loads(_read(aws, _trial_key(aws, "worker.json") or "") or b"{}")
                assert worker["attempt"] == 1
                os.kill(worker["pid"], signal.SIGKILL)  # the trial's process on the worker node

                def parallel_two_epochs() -> bool:
                    keys = [k for k in _objects(aws, "sweep/sweeps/") if "num_workers=2" in k]
                    last = [k for k in keys if k.endswith("/checkpoints/last.pt")]
                    data = _read(aws, last[0]) if last else None
                    done = data is not None and torch.load(io.BytesIO(data), weights_only=True)["epoch"] >= 2
                    return done and len(_worker_pids()) == 2

                # then one of the data-parallel trial's two Ray Train workers, once its rank 0 pushed
                # two epochs: Ray Train restarts the group from the checkpoint it registered
                _wait_for(parallel_two_epochs, proc, log)
                os.kill(_worker_pids()[0], signal.SIGKILL)
                assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        (ws / "params.yaml").write_text(saved)

    record = json.loads(_read(aws, _trial_key(aws, "status.json") or "") or b"{}")
    assert record["status"] == "completed" and record["attempts"] == 2, record
    # the second attempt continued from the checkpoint in the bucket (epoch 2 or later), not from the start
    worker = json.loads(_read(aws, _trial_key(aws, "worker.json") or "") or b"{}")
    assert worker["attempt"] == 2 and worker["starts_at_epoch"] >= 2, worker
    # nothing of the trial in the workspace: its folder lives in the bucket (and the node's cache)
    assert not list((ws / "runs").glob(f"sweeps/nodisk-*/{SWEEP_TRIAL}*"))

    client = MlflowClient(mlflow_server)
    (dp,) = {part for k in _objects(aws, "sweep/sweeps/") for part in k.split("/") if "num_workers=2" in part}
    parallel = json.loads(_read(aws, _trial_key(aws, "status.json", dp) or "") or b"{}")
    # its killed worker was restarted by Ray Train inside the trial: still the trial's first attempt
    assert parallel["status"] == "completed" and parallel["epochs"] == 5 and parallel["attempts"] == 1, parallel
    # the restarted group's workers took the run on from its checkpoint, not from the start
    resumed = re.findall(
        r"RayTrainWorker pid=\d+\) resumed from \S*num_workers=2\S*/last\.pt at epoch ([2-4])", log.read_text()
    )
    assert len(resumed) == 2, log.read_text()[-4000:]
    pushed = torch.load(
        io.BytesIO(_read(aws, _trial_key(aws, "checkpoints/last.pt", dp) or "") or b""), weights_only=True
    )
    assert pushed["epoch"] == 5 and [h["epoch"] for h in pushed["history"]] == [1, 2, 3, 4, 5]
    assert pushed["data_parallel_workers"] == 2
    dp_run = client.get_run(parallel["run_id"])
    assert dp_run.info.status == "FINISHED" and dp_run.data.params["train.ray.num_workers"] == "2"
    assert dp_run.data.tags["train.executor"] == "ray-tune" and "test/SSIM_gt" in dp_run.data.metrics
    assert sorted(m.step for m in client.get_metric_history(dp_run.info.run_id, "train/loss")) == list(range(1, 41))
    assert sorted(m.step for m in client.get_metric_history(dp_run.info.run_id, "val/loss")) == [1, 2, 3, 4, 5]
    # the data-parallel trial trained after the other: beside it, its workers would not have fit
    single = [m.timestamp for m in client.get_metric_history(record["run_id"], "train/loss")]
    assert max(single) <= min(m.timestamp for m in client.get_metric_history(dp_run.info.run_id, "train/loss"))
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["sweep.attempts"] == "2"
    assert "test/SSIM_gt" in run.data.metrics  # evaluated on the worker node, on its copy of the test data
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(range(1, 41))
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/loss")) == [1, 2, 3, 4, 5]

    # the same configuration trained here without interruption, on one thread as the trial was
    config = Path(client.download_artifacts(run.info.run_id, "config/resolved.json", str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert retrain(config, ws / "prepared" / "multifocus_synthetic", tmp_path / "ref", "1", 1, REPO, env) is None
    want = load_checkpoint(tmp_path / "ref" / "last.pt")
    got = torch.load(io.BytesIO(_read(aws, _trial_key(aws, "checkpoints/last.pt") or "") or b""), weights_only=True)
    assert got["epoch"] == want["epoch"] == 5
    for key, value in want["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key
    assert [h["val/loss"] for h in want["history"]] == [h["val/loss"] for h in got["history"]]

    # the data-parallel trial, killed worker and all, ends where two gloo processes end uninterrupted
    config = Path(client.download_artifacts(dp_run.info.run_id, "config/resolved.json", str(tmp_path / "dp")))
    assert retrain(config, ws / "prepared" / "multifocus_synthetic", tmp_path / "dp-ref", "1", 2, REPO, env) is None
    want = load_checkpoint(tmp_path / "dp-ref" / "last.pt")
    assert want["epoch"] == pushed["epoch"] and want["data_parallel_workers"] == 2
    for key, value in want["state_dict"].items():
        assert torch.equal(value, pushed["state_dict"][key]), key
    for name in ("val/loss", "train/epoch_loss"):
        assert [h[name] for h in want["history"]] == [h[name] for h in pushed["history"]], name


def test_an_unwritable_bucket_or_a_local_tracking_store_is_refused_before_a_run_starts(
    workspace_on_s3, s3, mlflow_server
):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")} | s3
    base = [FUSION, "train", "-w", str(workspace_on_s3), "--profile", "tiny"]
    bucket = subprocess.run(
        [*base, "--set", "storage.uri=s3://no-such-bucket-here/ray"],
        env={**env, "MLFLOW_TRACKING_URI": mlflow_server},
        capture_output=True,
        text=True,
    )
    assert bucket.returncode == 2, bucket.stdout + bucket.stderr
    assert "storage.uri=s3://no-such-bucket-here/ray: cannot write there" in bucket.stderr
    # workers on other nodes cannot write the workspace's SQLite store
    local = subprocess.run([*base, "--set", f"storage.uri=s3://{BUCKET}/ray"], env=env, capture_output=True, text=True)
    assert local.returncode == 2, local.stdout + local.stderr
    assert "workers on other nodes log through a tracking server, but the tracking URI is sqlite" in local.stderr
    for proc in (bucket, local):  # one error line (the log lines before it are the data preparation's)
        assert "Traceback" not in proc.stderr
        assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
            proc.stderr.strip().splitlines()[-1]
        ]
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # no run was started


def test_data_not_on_the_remote_an_unreachable_remote_and_a_local_one_are_named(s3, tmp_path, monkeypatch):
    from fusion.config import load_config
    from fusion.data.node_cache import data_ref
    from fusion.errors import ConfigError, DataError
    from fusion.pipeline import new_workspace, prepare

    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    ws = new_workspace(tmp_path / "ws", REPO)
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=ws, check=True)
    subprocess.run([*DVC, "remote", "add", "-d", "team", f"s3://{BUCKET}/never-pushed"], cwd=ws, check=True)
    prepared = prepare(ws, load_config(ws), push=False)
    reads = {"the prepared data": prepared.root}
    with pytest.raises(
        DataError,
        match=r"prepared/multifocus_synthetic: this data version is not on the DVC remote "
        rf"s3://{BUCKET}/never-pushed .*push it with `fusion data prepare`",
    ):
        data_ref(ws, reads)
    subprocess.run([*DVC, "remote", "modify", "team", "url", "s3://no-such-bucket-here/dvc"], cwd=ws, check=True)
    with pytest.raises(DataError, match=r"DVC remote s3://no-such-bucket-here/dvc: unreachable"):
        data_ref(ws, reads)
    subprocess.run([*DVC, "remote", "add", "-f", "-d", "mine", str(tmp_path / "remote")], cwd=ws, check=True)
    with pytest.raises(ConfigError, match=r"DVC remote 'mine' is .*, a folder on this machine"):
        data_ref(ws, reads)
    with pytest.raises(ConfigError, match=r"train.source.path=.*: not versioned by DVC"):
        data_ref(ws, {"train.source.path": ws / "fusion"})
