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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from fusion.checkpoint import BEST, CHECKPOINT_FORMAT, LAST, load_checkpoint, resolve_checkpoint, save_checkpoint
from fusion.config import Config
from fusion.data.dataset import RandomCropPairs
from fusion.data.training import training_data
from fusion.device import amp_dtype, in_layout, memory_format, pick_device
from fusion.errors import ConfigError, DataError
from fusion.models import MODELS, build_model, count_parameters, network_options, resolve_stage
from fusion.train.data_parallel import (
    CommClock,
    any_worker,
    average_gradients,
    current_world,
    data_parallel_model,
    mean_over_workers,
    shard_indices,
)

log = logging.getLogger(__name__)

VAL_PAIRS = 4  # test pairs scored after each epoch; enough to rank checkpoints
VAL_SIDE = 256  # largest validation crop: CADNIF's non-local branch is quadratic in pixels


class Callback(Protocol):
    """Observers of training. A callback may also define `before_checkpoint(epoch, metrics)`,
    called before the epoch's checkpoint is written: a record made there survives a crash
    (the epoch is redone on resume), one made in on_epoch_end can be lost in between."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None: ...


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_val: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str | None = None  # why fit() ended before train.epochs: early_stopped | out_of_time


def epochs_without_improvement(history: list[dict[str, float]], min_delta: float = 0.0) -> int:
    """Epochs since val/loss last improved on its best by more than `min_delta`."""
    best, since = math.inf, 0
    for m in history:
        if m["val/loss"] < best - min_delta:
            best, since = m["val/loss"], 0
        else:
            since += 1
    return since


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Deterministic kernels: resumed and reproduced runs must match bit for bit on CPU. The
    # public torch.use_deterministic_algorithms imports Inductor (2-5 s in each training
    # process, each Ray worker's too) only to set Inductor's own flag; CompiledForward, the one
    # place that compiles, sets that flag from this one.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def model_options(cfg: Config) -> dict[str, Any]:
    """What the builder takes and the checkpoint records: released and the network switches
    (training options such as loss weights stay in the config)."""
    return {"released": cfg.train.released, **network_options(cfg.train.model, cfg.train.options)}


def adapt_channels(t: torch.Tensor, channels: int) -> torch.Tensor:
    """B x C x H x W in [0, 1] to the model's channel count: RGB -> Y of YCrCb, gray -> repeated."""
    if t.shape[1] == channels:
        return t
    if t.shape[1] == 3 and channels == 1:
        return (0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]).clamp_(0, 1)
    if t.shape[1] == 1 and channels == 3:
        return t.expand(-1, 3, -1, -1)
    raise DataError(f"cannot feed {t.shape[1]}-channel images to a {channels}-channel model")


class Trainer:
    def __init__(self, cfg: Config, data_root: str | Path | None, callbacks: list[Callback] | None = None):
        self.cfg = cfg
        self.tcfg = cfg.train
        self.data_root = Path(data_root) if data_root is not None else None
        self.callbacks = list(callbacks or [])
        seed_everything(cfg.seed)
        self.device = pick_device(self.tcfg.device)
        self.spec = MODELS[self.tcfg.model]
        self.train_set, self.val_set, self.roles = training_data(cfg, self.data_root)
        if self.spec.supervised and self.roles.gt is None:
            raise ConfigError(
                f"train.source: {self.tcfg.model} is supervised and these source pairs have no ground "
                "truth; train it on the prepared synthetic multi-focus set (train.source: null)"
            )
        self.model = in_layout(build_model(self.tcfg.model, self.tcfg.variant, **model_options(cfg)), self.device)
        self.memory_format = memory_format(self.model)
        self.channels = getattr(self.model, "in_channels", 3)
        self.recipe = resolve_stage(self.spec, self.tcfg.variant, self.tcfg.stage, self.tcfg.init_from)
        self.stage = self.recipe.name
        self.init = self._start_from(self.tcfg.init_from) if self.recipe.starts_from else {}
        self.world = current_world()
        self.model = data_parallel_model(self.model, self.tcfg, self.world, self.device)
        params = self.spec.trainable(self.model, self.stage)
        opt_cls = torch.optim.AdamW if self.tcfg.optimizer == "adamw" else torch.optim.Adam
        # a model may own optimiser settings (a released model's Adam weight_decay): they win over train.*
        owned = dict(getattr(self.model, "optimizer_overrides", {}))
        if owned:
            log.info("%s sets the optimiser's %s over train.* (see its train.options)", self.tcfg.model, owned)
        self.optimizer = opt_cls(params, **{"lr": self.tcfg.lr, "weight_decay": self.tcfg.weight_decay, **owned})
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, self.tcfg.lr_step_epochs, gamma=0.1)
        self.loss_fn = self.spec.loss(self.stage, self.tcfg)
        self.amp_dtype = amp_dtype(self.tcfg, self.device)
        # Training steps go through the compiled graph; validation (eval mode, other sizes)
        # stays eager rather than compiling a second and third graph for a few pairs.
        self.compiled = None
        if self.tcfg.compile:
            from fusion.train.compiled import CompiledForward

            self.compiled = CompiledForward(self._step_fn(eager=True), "train.compile")
        # Loss scaling only for float16: bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()

    def _start_from(self, spec: str | None) -> dict[str, str]:
        """A stage that starts from another stage's checkpoint (CrossFuse's fusion stage from
        its stage-1 auto-encoders) loads what the model's recipe takes from it."""
        from fusion.io import sha256_file

        assert spec is not None and self.recipe.starts_from is not None and self.spec.start_from is not None
        path = resolve_checkpoint(spec)
        payload = load_checkpoint(path)
        wanted = self.recipe.starts_from
        if payload["model"] != self.tcfg.model or payload.get("stage") != wanted:
            prior = self.spec.stage(self.tcfg.variant, wanted)
            raise ConfigError(
                f"train.init_from={spec}: holds {payload['model']} stage {payload.get('stage', 'single')}, "
                f"not a {self.tcfg.model} {prior.label or prior.name} checkpoint"
            )
        self.spec.start_from(self.model, payload["state_dict"])
        log.info("%s stage starts from the %s checkpoint %s", self.stage, wanted, spec)
        return {"init_from": str(spec), "init_sha256": sha256_file(path), "init_variant": payload["variant"]}

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
            "stage": self.stage,
            "task": self.tcfg.task,
            **self.init,
            "num_parameters": count_parameters(self.model),
            "data_parallel_workers": self.world.size,
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
        held = (payload["model"], payload["variant"], payload.get("stage", "single"))
        if held != (self.tcfg.model, self.tcfg.variant, self.stage):
            raise ConfigError(
                f"{checkpoint}: holds {'/'.join(held)}, config asks for {self.tcfg.model}/{self.tcfg.variant}/{self.stage}"
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
        if self.amp_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        data: Dataset = RandomCropPairs(
            self.train_set,
            self.tcfg.crop,
            self.tcfg.hflip,
            self.cfg.seed,
            epoch,
            self.steps_per_epoch * self.tcfg.batch_size,
        )
        share = self.tcfg.batch_size
        if self.world.size > 1:  # this worker's share of every global batch
            data = Subset(data, shard_indices(self.steps_per_epoch, share, self.world))
            share //= self.world.size
        loader = DataLoader(data, batch_size=share, shuffle=False, num_workers=self.tcfg.num_workers)
        sums: dict[str, float] = {}
        start, comm_start = time.perf_counter(), CommClock.seconds
        for batch in loader:
            losses = self._backward(*self._inputs(batch))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.state.global_step += 1
            step_metrics = {f"train/{k}": float(v.detach()) for k, v in mean_over_workers(losses, self.world).items()}
            step_metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
            for key, value in step_metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            for cb in self.callbacks:
                cb.on_step(self.state.global_step, step_metrics)
        n = max(1, len(loader))
        out = {k.replace("train/", "train/epoch_"): v / n for k, v in sums.items() if k != "train/lr"}
        out["train/epoch_seconds"] = time.perf_counter() - start
        if self.world.size > 1:  # waiting for the other workers counts here too
            out["train/epoch_comm_seconds"] = CommClock.seconds - comm_start
        if self.compiled is not None:  # in the MLflow UI: did train.compile really compile (1) or fall back (0)
            out["train/compiled"] = float(self.compiled.failed is None)
        return out

    def _backward(self, sources: list[torch.Tensor], gt: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Forward, loss and backward of one step (gradients in place for the optimiser)."""
        # Under train.compile the first step builds the forward and the backward graphs. Should
        # either fail (a torch.compile bug on some graph), the step is redone eagerly.
        unproven = self.compiled is not None and not self.compiled.verified and self.compiled.failed is None
        # A failed attempt may have run the forward already: BatchNorm statistics go back too.
        buffers = {k: v.clone() for k, v in self.model.state_dict().items()} if unproven else None
        try:
            losses = self.losses(sources, gt)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(
                    f"loss became {losses['loss'].item()} at step {self.state.global_step} "
                    f"(train.lr={self.tcfg.lr} may be too high)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            average_gradients((p for g in self.optimizer.param_groups for p in g["params"]), self.world)
        except FloatingPointError:
            raise  # a diverging loss, not a compile failure
        except Exception as exc:
            if not unproven or self.compiled is None or buffers is None:
                raise
            self.compiled.disable(exc)
            self.model.load_state_dict(buffers)
            return self._backward(sources, gt)
        if unproven and self.compiled is not None:
            self.compiled.verified = True
        return losses

    def _inputs(self, batch: dict) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        def move(t: torch.Tensor) -> torch.Tensor:
            t = adapt_channels(t.to(self.device, non_blocking=True), self.channels)
            return t.contiguous(memory_format=self.memory_format)

        return [move(batch[r]) for r in self.roles.sources], (move(batch[self.roles.gt]) if self.roles.gt else None)

    def _step_fn(self, eager: bool = False) -> Callable[..., torch.Tensor]:
        """What a step calls (the model, or the part of it this stage trains); compiled under
        train.compile unless `eager`."""
        if self.compiled is not None and not eager:
            return self.compiled
        return self.recipe.forward(self.model)

    def losses(
        self, sources: list[torch.Tensor], gt: torch.Tensor | None, eager: bool = False
    ) -> dict[str, torch.Tensor]:
        return self.recipe.objective(
            self._step_fn(eager), sources, gt, self.loss_fn, self._autocast, self.spec.supervised
        )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        totals: dict[str, float] = {}
        n = min(VAL_PAIRS, len(self.val_set))
        for i in range(n):
            item = self.val_set[i]
            side = min(VAL_SIDE, max(self.tcfg.crop, 64))  # the scale the model trains at
            batch = {k: _centre_crop(v, side)[None] for k, v in item.items() if k != "id"}
            losses = self.losses(*self._inputs(batch), eager=True)
            for key, value in losses.items():
                totals[f"val/{key}"] = totals.get(f"val/{key}", 0.0) + float(value)
        return {k: v / n for k, v in totals.items()}

    def fit(
        self, checkpoint_dir: str | Path, resume_from: str | Path | None = None, deadline: float | None = None
    ) -> TrainState:
        """Train to train.epochs, or stop early: after train.early_stop_patience epochs without
        improvement, or when the next epoch would end after `deadline` (a time.time() value).
        A stopped run leaves last.pt, so it can be resumed."""
        checkpoint_dir = Path(checkpoint_dir)
        if resume_from is not None:
            self.resume(resume_from)
        history = self.state.history
        epoch_seconds = history[-1].get("epoch_seconds") if history else None
        for epoch in range(self.state.epoch, self.tcfg.epochs):
            if self._patience_exhausted():
                self.state.stopped = "early_stopped"
                break
            late = deadline is not None and time.time() + (epoch_seconds or 0.0) > deadline
            if any_worker(late, self.world):  # workers stop together, or the others wait forever
                log.info("stopping before epoch %d: it would end after the deadline", epoch + 1)
                self.state.stopped = "out_of_time"
                break
            start = time.perf_counter()
            metrics = {**self.train_epoch(epoch), **self.validate()}
            self.scheduler.step()
            self.state.epoch = epoch + 1
            metrics["epoch"] = float(self.state.epoch)
            improved = metrics["val/loss"] < self.state.best_val
            if improved:
                self.state.best_val = metrics["val/loss"]
            epoch_seconds = metrics["epoch_seconds"] = time.perf_counter() - start
            self.state.history.append(metrics)
            if self._patience_exhausted():
                self.state.stopped = "early_stopped"
            for cb in self.callbacks:
                if hasattr(cb, "before_checkpoint"):
                    cb.before_checkpoint(self.state.epoch, metrics)
            is_last = self.state.epoch == self.tcfg.epochs or self.state.stopped is not None
            due = improved or is_last or self.state.epoch % self.tcfg.checkpoint_every == 0
            if due and self.world.is_main:  # rank 0 writes the checkpoints
                payload = self.payload()
                if improved:
                    save_checkpoint(checkpoint_dir / BEST, payload)
                if is_last or self.state.epoch % self.tcfg.checkpoint_every == 0:
                    save_checkpoint(checkpoint_dir / LAST, payload)
            log.info(
                "epoch %d/%d %s",
                self.state.epoch,
                self.tcfg.epochs,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"),
            )
            for cb in self.callbacks:
                cb.on_epoch_end(self.state.epoch, metrics, checkpoint_dir)
            if self.state.stopped:
                log.info(
                    "early stop after epoch %d: no val/loss improvement in %d epochs",
                    self.state.epoch,
                    self.tcfg.early_stop_patience,
                )
                break
        return self.state

    def _patience_exhausted(self) -> bool:
        patience = self.tcfg.early_stop_patience
        return (
            bool(patience)
            and epochs_without_improvement(self.state.history, self.tcfg.early_stop_min_delta) >= patience
        )


def _centre_crop(t: torch.Tensor, side: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return t[..., y : y + side, x : x + side]
