"""A tracking-server outage during training: a real `mlflow server` is stopped after the first
epoch and started again (same store, same port) later; training never stops, and every
step and epoch is in MLflow exactly once afterwards. Records still waiting when training
ends are delivered by `fusion sync`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_http

pytestmark = pytest.mark.integration


class Server:
    """`mlflow server` on 127.0.0.1:port with a SQLite store, stoppable and restartable."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/health", proc=self.proc)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


class Outage:
    """Trainer callback: the server goes down after epoch `down` and comes back after `up`."""

    def __init__(self, server: Server, down: int, up: int | None, spool: Path):
        self.server, self.down, self.up, self.spool = server, down, up, spool
        self.waiting = 0  # records spooled while the server was down

    def on_step(self, step, metrics):
        pass

    def on_epoch_end(self, epoch, metrics, checkpoint_dir):
        if epoch == self.down:
            self.server.stop()
        if epoch == self.up:
            self.waiting = len(self.spool.read_text().splitlines()) if self.spool.is_file() else 0
            self.server.start()


def _train(tmp_path, server, tiny_prepared, down, up, epochs=4):
    from fusion import tracking
    from fusion.config import load_config
    from fusion.train.loop import Trainer
    from mlflow import MlflowClient
    from tests.conftest import REPO

    cfg = load_config(REPO, "tiny", [f"train.epochs={epochs}", "train.steps_per_epoch=3"])
    target = tracking.TrackingTarget(server.url, "outage", None)
    run_id = tracking.start_run(target, "outage", cfg, {})
    spool = tmp_path / "run" / "mlflow-spool.jsonl"
    # the outage callback runs first, so the epoch that takes the server down logs into the outage
    outage = Outage(server, down, up, spool)
    Trainer(cfg, tiny_prepared, [outage, tracking.MlflowCallback(target, run_id, spool)]).fit(tmp_path / "ckpt")
    return MlflowClient(tracking_uri=server.url), run_id, spool, epochs * 3, outage


def test_training_goes_on_through_an_outage_and_every_record_arrives_once(tmp_path, tiny_prepared):
    server = Server(tmp_path)
    server.start()
    try:
        client, run_id, spool, steps, outage = _train(tmp_path, server, tiny_prepared, down=1, up=3)
        assert (tmp_path / "ckpt" / "last.pt").is_file()  # training finished
        assert outage.waiting >= 4  # epoch 1's end, epoch 2's steps and end waited in the spool
        # epoch 4's records came after the server was back: they flushed everything waiting first
        losses = client.get_metric_history(run_id, "train/loss")
        assert sorted(m.step for m in losses) == list(range(1, steps + 1))
        assert sorted(m.step for m in client.get_metric_history(run_id, "val/loss")) == [1, 2, 3, 4]
        assert not spool.exists()
    finally:
        server.stop()


def test_records_left_waiting_are_delivered_by_fusion_sync(tmp_path, tiny_prepared):
    server = Server(tmp_path)
    server.start()
    try:
        client, run_id, spool, steps, _ = _train(tmp_path, server, tiny_prepared, down=2, up=None, epochs=3)
        assert spool.is_file() and len(spool.read_text().splitlines()) >= 4  # epoch 2's end and epoch 3
        server.start()
        ws = tmp_path / "ws"
        (ws / "runs").mkdir(parents=True)
        (tmp_path / "run").rename(ws / "runs" / "outage")
        from tests.conftest import REPO

        (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
        import os

        env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
        done = subprocess.run(
            [sys.executable, "-m", "fusion", "sync", "--workspace", str(ws)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "delivered" in done.stdout and not (ws / "runs" / "outage" / "mlflow-spool.jsonl").exists()
        assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == list(range(1, steps + 1))
        assert sorted(m.step for m in client.get_metric_history(run_id, "val/loss")) == [1, 2, 3]
    finally:
        server.stop()
