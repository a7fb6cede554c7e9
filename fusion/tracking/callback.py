"""The trainer callback that logs a training run's metrics into MLflow."""

from __future__ import annotations

from pathlib import Path

from fusion.tracking.failures import unreachable
from fusion.tracking.spool import Spool
from fusion.tracking.store import TrackingTarget, client


class MlflowCallback:
    """Trainer callback: per-step and per-epoch metrics into one run.

    Records go through a spool (fusion/tracking/spool.py): if the tracking server is
    unreachable, training goes on and the records are delivered, in order, once it is back
    (or by `fusion sync`). After a Ray restart the trainer replays from its last checkpoint;
    steps already in the run are skipped so the metric history has no duplicates.
    """

    def __init__(self, t: TrackingTarget, run_id: str, spool_path: Path, every: int = 1):
        self.t, self.run_id, self.every = t, run_id, every
        self.spool = Spool(t, run_id, spool_path)
        try:
            history = client(t).get_metric_history(run_id, "train/loss")
            epochs = client(t).get_metric_history(run_id, "val/loss")
        except Exception as exc:  # an outage at start must not stop training either
            if not unreachable(exc):
                raise
            history, epochs = [], []
        self.logged_upto = max((m.step for m in history), default=0)
        self.epochs_upto = max((m.step for m in epochs), default=0)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step > self.logged_upto and step % self.every == 0:
            self.spool.log_metrics(metrics, step)

    def before_checkpoint(self, epoch: int, metrics: dict[str, float]) -> None:
        # before the checkpoint: a crash in between redoes the epoch, whose record is then
        # skipped above; logged after it, the record would be lost with the process
        if epoch > self.epochs_upto:
            self.spool.log_metrics(metrics, epoch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        pass
