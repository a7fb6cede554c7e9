"""Data-parallel scaling, and what checkpoints on object storage cost against local ones.

Scaling: one model trained on 1 and on 2 Ray Train workers, same global batch. Both arms
train UFA-Fuse (smoke profile settings; tiny with --quick) on the embedded synthetic
multi-focus set through `fusion.train.distributed.train_with_ray`, one CPU per worker, so the
2-worker arm uses two cores where the 1-worker arm uses one: on a 2-core machine the ratio is
the best case of adding a second machine's worth of cores without the network. Measured:
training throughput (pairs per second of the epochs after the first, which holds start-up),
and the communication share of a 2-worker step (time in the gradient all-reduce, which on
gloo includes waiting for the slower worker).

Object storage (`storage.uri`, issue 20): an S3 server (moto's server mode) on loopback holds
a workspace's DVC remote and Ray Train's storage. The same small 1-worker run, a checkpoint
every epoch, is trained with checkpoints on local disk and with `storage.uri=s3://...` (data
from the DVC remote through the node cache, already pulled), interleaved local, S3, S3, local
so drift on a shared machine falls on both arms alike. Measured: wall time of each arm, their
ratio and the overhead per checkpoint; what a run on object storage pays once (the preflight:
a probe object and `dvc status --cloud`; on a node's first run, pulling the data version);
and persisting one checkpoint folder with `pyarrow.fs.copy_files` as Ray does, local vs S3.
Loopback has no network latency or bandwidth limit, so real S3 adds both to every transfer:
these rows are the floor of the overhead (request handling, Ray's bookkeeping), not its size.

    python -m benchmarks.run scaling [--quick]
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME = "scaling"
REPO = Path(__file__).resolve().parents[1]
BUCKET = "fusionflow-bench"
MB = 1024**2


def _row(measure: str, value: float, unit: str) -> dict:
    return {"benchmark": NAME, "measure": measure, "value": float(value), "unit": unit}


def run(quick: bool = False) -> list[dict]:
    import ray

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        # The S3 settings are in os.environ before Ray starts (its local workers inherit the
        # driver's environment) and leave only after it stops.
        with _s3_on_loopback(tmp) as endpoint:
            try:
                rows += _scaling(tmp, quick)
                rows += _object_storage(tmp, quick, endpoint)
            finally:
                ray.shutdown()
    return rows


def _scaling(tmp: Path, quick: bool) -> list[dict]:
    from fusion.checkpoint import LAST, load_checkpoint
    from fusion.config import load_config
    from fusion.data.embedded import export_embedded
    from fusion.data.synth_multifocus import SynthParams, build
    from fusion.train.distributed import train_with_ray

    rows: list[dict] = []
    raw = export_embedded(tmp / "raw" / "embedded")
    data = tmp / "mf"
    build(raw, data, SynthParams(max_side=64 if quick else 256, pairs_per_image=1, test_images=3))
    shutil.copy2(REPO / "params.yaml", tmp / "params.yaml")
    steps, epochs, batch, crop = (4, 3, 4, 32) if quick else (8, 4, 8, 128)
    settings = [
        f"train.epochs={epochs}",
        f"train.steps_per_epoch={steps}",
        f"train.batch_size={batch}",
        f"train.crop={crop}",
        "train.ray.cpus_per_worker=1",
    ]
    seconds: dict[int, float] = {}
    for workers in (1, 2):
        cfg = load_config(tmp, "tiny", [*settings, f"train.ray.num_workers={workers}"])
        out = train_with_ray(cfg, data, tmp / "ray", f"scaling-{workers}", tmp / f"out{workers}")
        history = load_checkpoint(out / LAST)["history"][1:]  # the first epoch holds start-up
        seconds[workers] = sum(h["train/epoch_seconds"] for h in history)
        pairs = len(history) * steps * batch
        rows.append(
            _row(
                f"{workers} worker(s): training throughput, batch {batch} at {crop}x{crop}",
                pairs / seconds[workers],
                "pairs/s",
            )
        )
        if workers > 1:
            comm = sum(h["train/epoch_comm_seconds"] for h in history)
            rows.append(
                _row(
                    f"{workers} workers: gradient all-reduce share of training time", 100 * comm / seconds[workers], "%"
                )
            )
    rows.append(_row("2 workers vs 1: throughput ratio", seconds[1] / seconds[2], "x"))
    return rows


def _object_storage(tmp: Path, quick: bool, endpoint: str) -> list[dict]:
    from fusion.checkpoint import LAST, load_checkpoint
    from fusion.config import load_config
    from fusion.data.node_cache import data_ref, materialise
    from fusion.train.distributed import preflight, train_with_ray

    ws = _workspace_on_bucket(tmp / "ws", endpoint, max_side=64 if quick else 96)
    from fusion.pipeline import prepare

    prepared = prepare(ws, load_config(ws), push=True)
    rows: list[dict] = []
    cache = tmp / "cache"

    # what a node's first run pays before its first step; the timed S3 arms find it pulled
    ref = data_ref(ws, {"the prepared data": prepared.root})
    start = time.perf_counter()
    pulled = materialise(ref, cache)
    pull_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in pulled.rglob("*") if f.is_file()) / MB
    rows.append(
        _row(f"S3: first run on a node: pulling the data version from the DVC remote ({size:.2f} MB)", pull_s, "s")
    )

    # Ray Train's start-up (~20 s here, varying by seconds on a shared machine) is in both
    # arms; enough checkpoints make their difference stand above its jitter
    epochs = 3 if quick else 24
    settings = [
        f"train.epochs={epochs}",
        "train.steps_per_epoch=1",
        "train.batch_size=2",
        "train.crop=32",
        "train.checkpoint_every=1",
        "train.ray.num_workers=1",
        "train.ray.cpus_per_worker=1",
        f"storage.cache={cache}",
    ]
    arms = {
        "local": load_config(ws, "tiny", settings),
        "s3": load_config(ws, "tiny", [*settings, f"storage.uri=s3://{BUCKET}/ray"]),
    }
    start = time.perf_counter()
    preflight(arms["s3"], prepared.root, ws, None)
    preflight_s = time.perf_counter() - start

    order = ["local", "s3"] if quick else ["local", "s3", "s3", "local"]
    seconds: dict[str, list[float]] = {"local": [], "s3": []}
    checkpoints: dict[str, int] = {}
    outs: dict[str, Path] = {}
    for i, arm in enumerate(order):
        out = tmp / f"storage-out-{arm}-{i}"
        start = time.perf_counter()
        train_with_ray(arms[arm], prepared.root, tmp / "ray-storage", f"storage-{arm}-{i}", out, workspace=ws)
        seconds[arm].append(time.perf_counter() - start)
        checkpoints[arm] = len(load_checkpoint(out / LAST)["history"])  # one reported per epoch (every=1)
        outs[arm] = out
    local, s3 = statistics.mean(seconds["local"]), statistics.mean(seconds["s3"])
    n = checkpoints["s3"]
    runs = f"mean of {len(seconds['s3'])}" if len(seconds["s3"]) > 1 else "one run"
    what = f"1-worker run, {n} epochs, a checkpoint each ({runs})"
    rows += [
        _row(f"checkpoints on local disk: {what}", local, "s"),
        _row(f"checkpoints on S3 (moto, loopback), data from the node cache: {what}", s3, "s"),
        _row("S3 vs local checkpoints: run wall time ratio", s3 / local, "x"),
        _row("S3 overhead per checkpoint ((S3 - local) / checkpoints)", 1000 * (s3 - local) / n, "ms"),
        _row("S3: preflight per run (probe object, dvc status --cloud), included above", preflight_s, "s"),
        # the preflight is paid once a run, so over few checkpoints it dominates the line above
        _row("S3 overhead per checkpoint, net of the preflight", 1000 * (s3 - local - preflight_s) / n, "ms"),
    ]
    rows += _persist_one(outs["local"], tmp / "persist")
    return rows


def _persist_one(folder: Path, local_root: Path, repeats: int = 5) -> list[dict]:
    """One checkpoint folder copied the way Ray persists a reported checkpoint."""
    import pyarrow.fs as pafs

    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / MB
    src = pafs.LocalFileSystem()
    targets = {
        "local": (pafs.LocalFileSystem(), str(local_root)),
        "s3": (pafs.FileSystem.from_uri(f"s3://{BUCKET}/persist")[0], f"{BUCKET}/persist"),
    }
    ms: dict[str, list[float]] = {"local": [], "s3": []}
    for i in range(repeats):
        for arm, (fs, root) in targets.items():
            dest = f"{root}/{i}"
            start = time.perf_counter()
            fs.create_dir(dest)
            # Ray's own settings (ray.train.v2 storage._pyarrow_fs_copy_files): one thread for
            # uploads to S3 (pyarrow's threaded upload is unsafe there), 64 MiB chunks
            threads = {"use_threads": False} if isinstance(fs, pafs.S3FileSystem) else {}
            pafs.copy_files(
                str(folder),
                dest,
                source_filesystem=src,
                destination_filesystem=fs,
                chunk_size=64 * MB,
                **threads,
            )
            ms[arm].append(1000 * (time.perf_counter() - start))
    local, s3 = statistics.median(ms["local"]), statistics.median(ms["s3"])
    what = f"persisting one checkpoint folder (last.pt + best.pt, {size:.2f} MB), median of {repeats}"
    return [
        _row(f"{what}: local disk", local, "ms"),
        _row(f"{what}: S3 (moto, loopback)", s3, "ms"),
        _row("persisting one checkpoint folder: S3 vs local ratio", s3 / local, "x"),
    ]


def _workspace_on_bucket(dest: Path, endpoint: str, max_side: int) -> Path:
    """A workspace whose DVC remote is the bucket, with a small synthetic set."""
    import yaml

    from fusion import versioning
    from fusion.pipeline import new_workspace

    ws = new_workspace(dest, REPO)
    for args in (
        ["init", "--no-scm", "-q"],
        ["remote", "add", "-d", "bucket", f"s3://{BUCKET}/dvc"],
        ["remote", "modify", "bucket", "endpointurl", endpoint],
    ):
        versioning.dvc(ws, *args)
    # `dvc repro` reads the workspace's params.yaml, not load_config's overrides
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["data"]["synth_multifocus"].update(max_side=max_side, pairs_per_image=1, test_images=3)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


@contextmanager
def _s3_on_loopback(tmp: Path) -> Iterator[str]:
    """moto's S3 server with one bucket, its AWS settings in os.environ; yields the endpoint."""
    from fusion.loopback import s3_server

    with s3_server(tmp, BUCKET) as aws:
        saved = {k: os.environ.get(k) for k in aws}
        os.environ.update(aws)
        try:
            yield aws["AWS_ENDPOINT_URL"]
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
