"""The trainer: plain PyTorch, checkpoint every N epochs, resume exactly.

No Ray, MLflow or Prefect here. Adapters observe training through `Callback`s and decide
where checkpoints go. On CPU a resumed run produces bit-identical weights to an
uninterrupted one: data order and augmentation are pure functions of (seed, epoch), and
the torch RNG state travels in the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from fusion.config import Config
from fusion.data.dataset import PairedFolder, RandomCropPairs
from fusion.errors import ConfigError, DataError
from fusion.losses import build_loss
from fusion.models import build_model, count_parameters

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fusionflow-checkpoint/1"
LAST, BEST = "last.pt", "best.pt"
VAL_PAIRS = 4  # full-size test pairs scored after each epoch; enough to rank checkpoints


class Callback(Protocol):
    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None: ...


@dataclass
class TrainState:
    epoch: int = 0                 # epochs completed
    global_step: int = 0
    best_val: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Deterministic kernels: resumed and reproduced runs must match bit for bit on CPU.
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_options(cfg: Config) -> dict[str, Any]:
    return {"released": cfg.train.released}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Checkpoints are data, never code: weights_only=True refuses pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a loadable fusionflow checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a fusionflow checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    return payload


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    payload = load_checkpoint(path, map_location=device)
    model = build_model(payload["model"], payload["variant"], **payload["model_options"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


class Trainer:
    def __init__(self, cfg: Config, data_root: str | Path, callbacks: list[Callback] | None = None):
        self.cfg = cfg
        self.tcfg = cfg.train
        self.data_root = Path(data_root)
        self.callbacks = list(callbacks or [])
        seed_everything(cfg.seed)
        self.device = pick_device(self.tcfg.device)
        self.train_set = PairedFolder(self.data_root, "train")
        self.val_set = PairedFolder(self.data_root, "test")
        self.model = build_model(self.tcfg.model, self.tcfg.variant, **model_options(cfg)).to(self.device)
        opt_cls = torch.optim.AdamW if self.tcfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=self.tcfg.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, self.tcfg.lr_step_epochs, gamma=0.1)
        self.loss_fn = build_loss(self.tcfg.model, self.tcfg)
        self.use_amp = self.tcfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.state = TrainState()

    @property
    def steps_per_epoch(self) -> int:
        if self.tcfg.steps_per_epoch:
            return self.tcfg.steps_per_epoch
        return max(1, math.ceil(len(self.train_set) / self.tcfg.batch_size))

    # -- checkpoints ------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.tcfg.model,
            "variant": self.tcfg.variant,
            "model_options": model_options(self.cfg),
            "num_parameters": count_parameters(self.model),
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "best_val": self.state.best_val,
            "history": self.state.history,
            "torch_rng": torch.get_rng_state(),
            "config": self.cfg.model_dump(mode="json"),
        }

    def resume(self, checkpoint: str | Path) -> None:
        payload = load_checkpoint(checkpoint, map_location=self.device)
        if (payload["model"], payload["variant"]) != (self.tcfg.model, self.tcfg.variant):
            raise ConfigError(
                f"{checkpoint}: holds {payload['model']}/{payload['variant']}, "
                f"config asks for {self.tcfg.model}/{self.tcfg.variant}"
            )
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(payload["epoch"], payload["global_step"], payload["best_val"], list(payload["history"]))
        torch.set_rng_state(payload["torch_rng"].cpu())
        log.info("resumed from %s at epoch %d (step %d)", checkpoint, self.state.epoch, self.state.global_step)

    # -- training ---------------------------------------------------------------------------
    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        data = RandomCropPairs(self.train_set, self.tcfg.crop, self.tcfg.hflip, self.cfg.seed, epoch,
                               self.steps_per_epoch * self.tcfg.batch_size)
        loader = DataLoader(data, batch_size=self.tcfg.batch_size, shuffle=False, num_workers=self.tcfg.num_workers)
        sums: dict[str, float] = {}
        start = time.perf_counter()
        for batch in loader:
            near, far, gt = (batch[k].to(self.device, non_blocking=True) for k in ("near", "far", "gt"))
            with self._autocast():
                pred = self.model(near, far)
                losses = self.loss_fn(pred.float(), gt)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(
                    f"loss became {losses['loss'].item()} at step {self.state.global_step} "
                    f"(train.lr={self.tcfg.lr} may be too high)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.state.global_step += 1
            step_metrics = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
            step_metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
            for key, value in step_metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            for cb in self.callbacks:
                cb.on_step(self.state.global_step, step_metrics)
        n = max(1, len(loader))
        out = {k.replace("train/", "train/epoch_"): v / n for k, v in sums.items() if k != "train/lr"}
        out["train/epoch_seconds"] = time.perf_counter() - start
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        totals: dict[str, float] = {}
        n = min(VAL_PAIRS, len(self.val_set))
        for i in range(n):
            item = self.val_set[i]
            near, far, gt = (item[k][None].to(self.device) for k in ("near", "far", "gt"))
            losses = self.loss_fn(self.model(near, far).float(), gt)
            for key, value in losses.items():
                totals[f"val/{key}"] = totals.get(f"val/{key}", 0.0) + float(value)
        return {k: v / n for k, v in totals.items()}

    def fit(self, checkpoint_dir: str | Path, resume_from: str | Path | None = None) -> TrainState:
        checkpoint_dir = Path(checkpoint_dir)
        if resume_from is not None:
            self.resume(resume_from)
        for epoch in range(self.state.epoch, self.tcfg.epochs):
            metrics = {**self.train_epoch(epoch), **self.validate()}
            self.scheduler.step()
            self.state.epoch = epoch + 1
            metrics["epoch"] = float(self.state.epoch)
            improved = metrics["val/loss"] < self.state.best_val
            if improved:
                self.state.best_val = metrics["val/loss"]
            self.state.history.append(metrics)
            is_last = self.state.epoch == self.tcfg.epochs
            if improved or is_last or self.state.epoch % self.tcfg.checkpoint_every == 0:
                payload = self.payload()
                if improved:
                    save_checkpoint(checkpoint_dir / BEST, payload)
                if is_last or self.state.epoch % self.tcfg.checkpoint_every == 0:
                    save_checkpoint(checkpoint_dir / LAST, payload)
            log.info("epoch %d/%d %s", self.state.epoch, self.tcfg.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))
            for cb in self.callbacks:
                cb.on_epoch_end(self.state.epoch, metrics, checkpoint_dir)
        return self.state
