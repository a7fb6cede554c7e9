"""Training records that survive a tracking-server outage.

Training must not stop because MLflow is unreachable, and nothing it logs may be lost or
logged twice. Records for a run go through a `Spool`: each call is tried once, quickly (no
long HTTP retry loop holding up a training step); when the server cannot be reached, the
record is appended to `<run dir>/mlflow-spool.jsonl` instead, and every later call first
replays what is waiting, in order, at most every `retry_seconds`. When training ends with
records still waiting, `fusion sync` replays every run's spool once the server is back.

Only transport failures are spooled (connection refused, timeouts, 5xx): a record the
server rejects is a bug and raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from fusion.errors import DataError
from fusion.tracking.failures import unreachable
from fusion.tracking.store import TrackingTarget, client, metric_key

log = logging.getLogger(__name__)

SPOOL = "mlflow-spool.jsonl"
_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_FIELDS = {"metrics": ("metrics", "step", "ts"), "artifact": ("path", "artifact_path"), "tags": ("tags",)}


class SpoolError(DataError):
    """A spool file holds a line that is not a tracking record (edited, or cut by a crash)."""


def read_records(path: Path) -> list[dict]:
    """The records waiting in `path`, in order; a line that is not one raises SpoolError
    naming the file and line, and nothing is delivered (the order must be kept)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpoolError(
            f"{path}: unreadable tracking spool ({exc}); move it aside to train or sync without it "
            "(its records are then not delivered)"
        ) from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = _problem(record)
        except ValueError as exc:  # not JSON (a line cut by a crash mid-write, an edit)
            problem = str(exc)[:80]
        if problem:
            raise SpoolError(
                f"{path}: line {n} is not a tracking record ({problem}); repair or delete that line "
                "(its record is then lost) and run `fusion sync`"
            )
        records.append(record)
    return records


def _problem(record) -> str | None:
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if record.get("kind") not in _FIELDS:
        return f"unknown kind {record.get('kind')!r}"
    missing = [f for f in ("run_id", *_FIELDS[record["kind"]]) if f not in record]
    return f"no {', '.join(missing)}" if missing else None


@contextlib.contextmanager
def _fast_failure() -> Iterator[None]:
    """MLflow retries a failed request for minutes by default; a spooled call must not."""
    old = {k: os.environ.get(k) for k in _FAST}
    os.environ.update(_FAST)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Spool:
    def __init__(self, target: TrackingTarget, run_id: str, path: Path, retry_seconds: float = 5.0):
        self.target, self.run_id, self.path, self.retry_seconds = target, run_id, Path(path), retry_seconds
        self._last_failure = 0.0

    # -- the records ---------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)  # the time the value was measured, not delivered
        self._send({"kind": "metrics", "metrics": {k: float(v) for k, v in metrics.items()}, "step": step, "ts": now})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's content, under `artifact_path` (read when delivered: keep it)."""
        self._send({"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send({"kind": "tags", "tags": tags})

    @property
    def pending(self) -> int:
        return sum(1 for _ in self.path.open()) if self.path.is_file() else 0

    def flush(self, force: bool = False) -> bool:
        """Replay waiting records in order; True when none is left."""
        if not self.path.is_file():
            return True
        if not force and time.monotonic() - self._last_failure < self.retry_seconds:
            return False
        records = read_records(self.path)
        for i, record in enumerate(records):
            try:
                with _fast_failure():
                    _deliver(self.target, record.get("run_id", self.run_id), record)
            except Exception as exc:  # classified below
                if not unreachable(exc):
                    raise
                self._last_failure = time.monotonic()
                self._rewrite(records[i:])
                return False
        self.path.unlink(missing_ok=True)
        log.info("delivered %d spooled tracking record(s) for run %s", len(records), self.run_id)
        return True

    # -- internals -----------------------------------------------------------------------
    def _send(self, record: dict) -> None:
        record = {"run_id": self.run_id, **record}
        if self.flush():
            try:
                with _fast_failure():
                    _deliver(self.target, self.run_id, record)
                return
            except Exception as exc:  # classified below
                if not unreachable(exc):
                    raise
                self._last_failure = time.monotonic()
                log.warning(
                    "tracking server %s unreachable; spooling to %s (training goes on)", self.target.uri, self.path
                )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _rewrite(self, records: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(self.path)


def _deliver(target: TrackingTarget, run_id: str, record: dict) -> None:
    from mlflow.entities import Metric

    c = client(target)
    if record["kind"] == "metrics":
        c.log_batch(
            run_id,
            metrics=[Metric(metric_key(k), v, record["ts"], record["step"]) for k, v in record["metrics"].items()],
        )
    elif record["kind"] == "artifact" and Path(record["path"]).is_dir():  # a folder's content, under artifact_path
        c.log_artifacts(run_id, record["path"], record["artifact_path"])
    elif record["kind"] == "artifact":
        c.log_artifact(run_id, record["path"], record["artifact_path"])
    elif record["kind"] == "tags":
        for k, v in record["tags"].items():
            c.set_tag(run_id, k, v)
    else:
        raise ValueError(f"unknown spool record kind {record['kind']!r}")


def sync(workspace: Path, target: TrackingTarget) -> dict[str, int]:
    """Replay every run's spool under `workspace/runs/`; returns {spool file: records left}."""
    left = {}
    spools = {path: read_records(path) for path in sorted((workspace / "runs").glob(f"*/{SPOOL}"))}
    for path, records in spools.items():  # a corrupt one stops the sync before any is replayed
        spool = Spool(target, records[0]["run_id"] if records else "", path)
        spool.flush(force=True)
        left[str(path)] = spool.pending
    return left
