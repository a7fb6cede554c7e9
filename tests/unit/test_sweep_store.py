"""Trial folders on object storage (fusion/sweep/store.py), through pyarrow's local filesystem:
what a trial mirrors, what a restarted one pulls, what the driver reads."""

from __future__ import annotations

import json
import os

from fusion.sweep.store import Mirror, exists, pull, push, read_bytes
from fusion.sweep.trial import STATUS_FILE, WORKER_FILE, SweepContext


def _ctx(tmp_path, store: str | None) -> SweepContext:
    return SweepContext(
        "s", str(tmp_path / "ws/runs/sweeps/s-abc"), str(tmp_path / "ws"), "p", {}, {}, 1, None, False,
        store, str(tmp_path / "cache"),
    )  # fmt: skip


def test_push_then_pull_carries_the_named_files_and_skips_missing_ones(tmp_path):
    local, uri = tmp_path / "a", f"file://{tmp_path / 'bucket' / 't'}"
    (local / "checkpoints").mkdir(parents=True)
    (local / "checkpoints" / "last.pt").write_bytes(b"weights")
    (local / "status.json").write_text("{}")
    push(local, uri, ["checkpoints/last.pt", "checkpoints/best.pt", "status.json"])
    assert exists(uri, "checkpoints/last.pt") and not exists(uri, "checkpoints/best.pt")
    assert read_bytes(uri, "checkpoints/last.pt") == b"weights" and read_bytes(uri, "nope") is None
    pull(uri, tmp_path / "b", ["checkpoints/last.pt", "checkpoints/best.pt"])
    assert (tmp_path / "b" / "checkpoints" / "last.pt").read_bytes() == b"weights"
    assert not (tmp_path / "b" / "checkpoints" / "best.pt").exists()


def test_mirror_sends_a_checkpoint_only_when_the_epoch_rewrote_it(tmp_path):
    local, uri = tmp_path / "t", f"file://{tmp_path / 'bucket'}"
    (local / "checkpoints").mkdir(parents=True)
    last, best = local / "checkpoints" / "last.pt", local / "checkpoints" / "best.pt"
    last.write_bytes(b"e1")
    best.write_bytes(b"b1")
    mirror = Mirror(local, uri)
    mirror.on_epoch_end(1, {}, local / "checkpoints")
    assert read_bytes(uri, "checkpoints/last.pt") == b"e1" and read_bytes(uri, "checkpoints/best.pt") == b"b1"
    (tmp_path / "bucket" / "checkpoints" / "best.pt").write_bytes(b"changed in the bucket")
    last.write_bytes(b"e2")
    os.utime(last, ns=(last.stat().st_mtime_ns + 10**9,) * 2)  # a later write, whatever the clock's resolution
    mirror.on_epoch_end(2, {}, local / "checkpoints")
    assert read_bytes(uri, "checkpoints/last.pt") == b"e2"
    assert read_bytes(uri, "checkpoints/best.pt") == b"changed in the bucket"  # best.pt not rewritten: not sent


def test_a_context_on_object_storage_keeps_records_in_the_store_and_works_in_the_node_cache(tmp_path):
    ctx = _ctx(tmp_path, f"file://{tmp_path / 'bucket' / 'sweeps' / 's-abc'}")
    assert ctx.trial_dir("t1") == tmp_path / "cache" / "sweeps" / "s-abc" / "t1"
    assert ctx.status("t1") is None and not ctx.has("t1", WORKER_FILE)
    ctx.record("t1", {"status": "completed", "run_id": "r"})
    assert json.loads((tmp_path / "bucket/sweeps/s-abc/t1" / STATUS_FILE).read_text())["status"] == "completed"
    assert ctx.status("t1") == {"status": "completed", "run_id": "r"}
    # another node: an empty cache, the same store
    other = _ctx(tmp_path / "node2", ctx.store)
    other.load("t1")
    assert json.loads((other.trial_dir("t1") / STATUS_FILE).read_text())["run_id"] == "r"
    assert not (tmp_path / "ws").exists()  # nothing written into the workspace


def test_a_context_on_a_shared_disk_keeps_trial_folders_in_the_sweep_folder(tmp_path):
    ctx = _ctx(tmp_path, None)
    assert ctx.trial_dir("t1") == tmp_path / "ws/runs/sweeps/s-abc/t1"
    ctx.record("t1", {"status": "failed"})
    ctx.load("t1")  # nothing to pull
    assert ctx.status("t1") == {"status": "failed"} and ctx.has("t1", STATUS_FILE)
    assert not (tmp_path / "cache").exists()
