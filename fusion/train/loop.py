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
import re
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from fusion.config import Config
from fusion.data.dataset import RandomCropPairs
from fusion.data.training import training_data
from fusion.errors import ConfigError, DataError, output_error
from fusion.losses import build_loss
from fusion.models import MODELS, build_model, count_parameters

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fusionflow-checkpoint/1"
LAST, BEST = "last.pt", "best.pt"
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
    epoch: int = 0                 # epochs completed
    global_step: int = 0
    best_val: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str | None = None     # why fit() ended before train.epochs: early_stopped | out_of_time


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
    # Deterministic kernels: resumed and reproduced runs must match bit for bit on CPU.
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pick_device(name: str) -> torch.device:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise ConfigError(f"device {name!r}: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) for oneDNN to use."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch API: absent = assume yes
    return any(getattr(torch.cpu, name, lambda: True)() for name in probes)


PRECISIONS = ("float32", "bfloat16", "float16")


def autocast_dtype(precision: str, device: torch.device, key: str = "precision") -> torch.dtype | None:
    """The autocast dtype of a precision name on `device` (None: plain float32); `key` names
    the setting in messages (a config key, or a CLI option such as --precision). Shared by
    train.amp and `fusion fuse --precision`."""
    setting = f"{key}{' ' if key.startswith('--') else '='}"
    if precision not in PRECISIONS:
        raise ConfigError(f"{setting}{precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "float16" and device.type == "cpu":
        raise ConfigError(f"{setting}float16 on CPU: CPUs have no fast float16 convolutions; use bfloat16")
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_bfloat16():
        log.warning("%sbfloat16: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 "
                    "autocast is emulated and slower than float32", setting)
    return None if precision == "float32" else getattr(torch, precision)


def amp_dtype(tcfg, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of train.amp on `device`, or None for float32 training.

    auto: float16 (with loss scaling) on CUDA, bfloat16 on CPU, where oneDNN runs the
    convolutions in bfloat16 on CPUs that have it (AVX512-BF16 or AMX): ~2x faster
    UFA-Fuse steps on the development machine (benchmarks/bench_models.py).
    """
    if not tcfg.amp:
        return None
    name = tcfg.amp_dtype if tcfg.amp_dtype != "auto" else ("bfloat16" if device.type == "cpu" else "float16")
    return autocast_dtype(name, device, "train.amp_dtype")


def model_options(cfg: Config) -> dict[str, Any]:
    return {"released": cfg.train.released, **cfg.train.options}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(path, exc) from exc
    except RuntimeError as exc:  # torch.save's zip writer reports a failed write as RuntimeError
        if "writ" not in str(exc) and "inline_container" not in str(exc):
            raise
        raise output_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
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
    try:
        model = build_model(payload["model"], payload["variant"], **payload["model_options"])
    except ConfigError as exc:  # the tags name no model we have: say so about the file, not about train.*
        raise DataError(f"{path}: its tags (model {payload['model']!r}, variant {payload['variant']!r}) name no "
                        f"registered network ({exc})") from exc
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # same names, other shapes (strict=False still refuses those)
        first = str(exc).strip().splitlines()[-1].strip()
        raise DataError(f"{path}: its weights do not fit {payload['model']} {payload['variant']} ({first}): a "
                        "checkpoint of another variant or options under a wrong tag") from exc
    if result.missing_keys or result.unexpected_keys:
        # strict loading would raise a RuntimeError listing hundreds of keys; one line names the cause
        raise DataError(f"{path}: its weights are not those of {payload['model']} {payload['variant']} "
                        f"({len(result.missing_keys)} missing, e.g. {result.missing_keys[:2]}; "
                        f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:2]}): a checkpoint "
                        "of another model or variant under a wrong tag")
    # the layout it trained in: channels-last and NCHW kernels round differently
    return model.to(device, memory_format=memory_format(model)).eval(), payload


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """Pure conv stacks run faster channels-last (oneDNN skips a reorder per layer)."""
    return torch.channels_last if getattr(model, "prefers_channels_last", False) else torch.contiguous_format


def adapt_channels(t: torch.Tensor, channels: int) -> torch.Tensor:
    """B x C x H x W in [0, 1] to the model's channel count: RGB -> Y of YCrCb, gray -> repeated."""
    if t.shape[1] == channels:
        return t
    if t.shape[1] == 3 and channels == 1:
        return (0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]).clamp_(0, 1)
    if t.shape[1] == 1 and channels == 3:
        return t.expand(-1, 3, -1, -1)
    raise DataError(f"cannot feed {t.shape[1]}-channel images to a {channels}-channel model")


def resolve_stage(model: torch.nn.Module, tcfg) -> str:
    """Which part of the model this run trains: "single" for one-stage models, else a
    CrossFuse stage (autoencoder, fusion, joint)."""
    stages = getattr(model, "stages", None)
    if stages is None:
        if tcfg.stage != "auto" or tcfg.init_from:
            raise ConfigError(f"train.stage / train.init_from apply to two-stage models (crossfuse), not {tcfg.model}")
        return "single"
    stage = tcfg.stage
    if stage == "auto":
        stage = stages[0] if len(stages) == 1 else ("fusion" if tcfg.init_from else "autoencoder")
    if stage not in stages:
        raise ConfigError(f"train.stage={stage}: {tcfg.model} {tcfg.variant} trains {list(stages)}")
    if stage == "fusion" and not tcfg.init_from:
        raise ConfigError("train.stage=fusion needs train.init_from: the stage-1 checkpoint "
                          "(a .pt file, a run folder or runs:/RUN_ID)")
    if stage != "fusion" and tcfg.init_from:
        raise ConfigError(f"train.init_from is only read by the fusion stage, not {stage}")
    return stage


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
            raise ConfigError(f"train.source: {self.tcfg.model} is supervised and these source pairs have no ground "
                              "truth; train it on the prepared synthetic multi-focus set (train.source: null)")
        self.model = build_model(self.tcfg.model, self.tcfg.variant, **model_options(cfg)).to(self.device)
        self.memory_format = memory_format(self.model)
        self.model = self.model.to(memory_format=self.memory_format)
        self.channels = getattr(self.model, "in_channels", 3)
        self.stage = resolve_stage(self.model, self.tcfg)
        self.init = self._init_encoders(self.tcfg.init_from) if self.stage == "fusion" else {}
        params = self.model.parameters_for(self.stage) if self.stage != "single" else self.model.parameters()
        opt_cls = torch.optim.AdamW if self.tcfg.optimizer == "adamw" else torch.optim.Adam
        # a model may own optimiser settings (a released model's Adam weight_decay): they win over train.*
        owned = dict(getattr(self.model, "optimizer_overrides", {}))
        if owned:
            log.info("%s sets the optimiser's %s over train.* (see its train.options)", self.tcfg.model, owned)
        self.optimizer = opt_cls(params, **{"lr": self.tcfg.lr, "weight_decay": self.tcfg.weight_decay, **owned})
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, self.tcfg.lr_step_epochs, gamma=0.1)
        self.loss_fn = build_loss("crossfuse_ae" if self.stage == "autoencoder" else self.tcfg.model, self.tcfg)
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

    def _init_encoders(self, spec: str) -> dict[str, str]:
        """Stage 2 starts from the stage-1 auto-encoders of `spec`, then freezes them."""
        from fusion.inference import resolve_checkpoint
        from fusion.io import sha256_file

        path = resolve_checkpoint(spec)
        payload = load_checkpoint(path)
        if payload["model"] != self.tcfg.model or payload.get("stage") != "autoencoder":
            raise ConfigError(f"train.init_from={spec}: holds {payload['model']} stage {payload.get('stage', 'single')}, "
                              f"not a {self.tcfg.model} stage-1 (autoencoder) checkpoint")
        prefix = "encoders."
        encoders = {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
        self.model.encoders.load_state_dict(encoders)
        self.model.freeze_encoders()
        log.info("fusion stage starts from the stage-1 encoders of %s", spec)
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
        data = RandomCropPairs(self.train_set, self.tcfg.crop, self.tcfg.hflip, self.cfg.seed, epoch,
                               self.steps_per_epoch * self.tcfg.batch_size)
        loader = DataLoader(data, batch_size=self.tcfg.batch_size, shuffle=False, num_workers=self.tcfg.num_workers)
        sums: dict[str, float] = {}
        start = time.perf_counter()
        for batch in loader:
            losses = self._backward(*self._inputs(batch))
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
        except FloatingPointError:
            raise  # a diverging loss, not a compile failure
        except Exception as exc:
            if not unproven:
                raise
            self.compiled.disable(exc)
            self.model.load_state_dict(buffers)
            return self._backward(sources, gt)
        if unproven:
            self.compiled.verified = True
        return losses

    def _inputs(self, batch: dict) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        def move(t: torch.Tensor) -> torch.Tensor:
            t = adapt_channels(t.to(self.device, non_blocking=True), self.channels)
            return t.contiguous(memory_format=self.memory_format)

        return [move(batch[r]) for r in self.roles.sources], (move(batch[self.roles.gt]) if self.roles.gt else None)

    def _step_fn(self, eager: bool = False) -> Callable[..., torch.Tensor]:
        """What a step calls: the model, or CrossFuse stage 1's auto-encoders; compiled under
        train.compile unless `eager`."""
        if self.compiled is not None and not eager:
            return self.compiled
        return self.model.autoencode if self.stage == "autoencoder" else self.model

    def losses(self, sources: list[torch.Tensor], gt: torch.Tensor | None, eager: bool = False) -> dict[str, torch.Tensor]:
        step_fn = self._step_fn(eager)
        if self.stage == "autoencoder":  # CrossFuse stage 1: each modality reconstructs itself
            from fusion.models.crossfuse import MODALITIES

            with self._autocast():
                outs = [step_fn(x, m) for x, m in zip(sources, MODALITIES)]
            # Losses in float32: the model runs in reduced precision under train.amp, not its loss.
            parts = [self.loss_fn(out.float(), x) for out, x in zip(outs, sources)]
            return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
        with self._autocast():
            pred = step_fn(*sources)
        pred = pred.float()
        return self.loss_fn(pred, gt) if self.spec.supervised else self.loss_fn(pred, *sources)

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

    def fit(self, checkpoint_dir: str | Path, resume_from: str | Path | None = None,
            deadline: float | None = None) -> TrainState:
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
            if deadline is not None and time.time() + (epoch_seconds or 0.0) > deadline:
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
            if self.state.stopped:
                log.info("early stop after epoch %d: no val/loss improvement in %d epochs",
                         self.state.epoch, self.tcfg.early_stop_patience)
                break
        return self.state

    def _patience_exhausted(self) -> bool:
        patience = self.tcfg.early_stop_patience
        return bool(patience) and epochs_without_improvement(self.state.history, self.tcfg.early_stop_min_delta) >= patience


def _centre_crop(t: torch.Tensor, side: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return t[..., y:y + side, x:x + side]
