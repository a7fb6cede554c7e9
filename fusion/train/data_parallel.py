"""Data parallelism for the trainer: N processes train one model on shares of each batch.

Ray Train's torch integration starts the processes and their process group (gloo on CPU,
NCCL on GPU); the trainer finds it here. `train.batch_size` stays the global batch: each
epoch's seeded plan of crops is drawn whole on every worker, and worker r takes the r-th
share of every batch, so N workers see exactly the samples one worker would. After each
backward pass the gradients are averaged over the workers (one all-reduce of a flat
buffer), which is the gradient of the global batch's mean loss when the shares are equal:
an N-worker run follows the 1-worker run to float32 reduction noise.

The gradients are averaged by hand rather than by wrapping the model in DistributedDataParallel
because what a step calls is the model's recipe's choice (CrossFuse's stage 1 calls its
auto-encoders, not the model's forward), and DDP only synchronises its own forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from fusion.errors import ConfigError

log = logging.getLogger("fusion.train.loop")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    """This process's place in the process group Ray Train set up (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def shard_indices(steps: int, batch: int, world: World) -> list[int]:
    """The sample indices worker `world.rank` takes from an epoch of `steps` global batches of
    `batch` samples: its share of each batch, in order."""
    share = batch // world.size
    start = world.rank * share
    return [step * batch + start + j for step in range(steps) for j in range(share)]


class CommClock:
    """Seconds this process spent averaging gradients (logged per epoch as
    train/epoch_comm_seconds: the communication share of a data-parallel step)."""

    seconds = 0.0


def average_gradients(params: Iterable[torch.nn.Parameter], world: World) -> None:
    """Replace each gradient by its mean over the workers."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    start = time.perf_counter()
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    CommClock.seconds += time.perf_counter() - start
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def mean_over_workers(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """Each scalar's mean over the workers: the loss of the global batch, for the logs."""
    if world.size == 1 or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(stacked)
    stacked /= world.size
    return {k: stacked[i] for i, k in enumerate(keys)}


def any_worker(flag: bool, world: World) -> bool:
    """True on every worker when it is true on one (a stop must be taken together)."""
    if world.size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


_BATCHNORM = torch.nn.modules.batchnorm._BatchNorm
_PLAIN_BATCHNORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def data_parallel_model(model: torch.nn.Module, tcfg: Any, world: World, device: torch.device) -> torch.nn.Module:
    """`model`, ready to train as one of `world.size` workers (itself for one worker)."""
    if tcfg.ray.num_workers != world.size:
        raise ConfigError(
            f"train.ray.num_workers={tcfg.ray.num_workers} but this process trains with {world.size - 1} "
            "others: data-parallel training runs through Ray (`fusion train`, `fusion run`, `fusion sweep` "
            "without --no-ray)"
        )
    if world.size == 1:  # (a batch that does not split is refused by Config's validation)
        return model
    norms = [m for m in model.modules() if isinstance(m, _BATCHNORM)]
    if not norms:
        return model
    if tcfg.ray.sync_batchnorm and device.type == "cuda" and all(type(m) in _PLAIN_BATCHNORM for m in norms):
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # torch's SyncBatchNorm runs on GPUs only, and would replace a model's own BatchNorm kind
    log.warning(
        "%s has BatchNorm: with %d workers each normalises by its own share's statistics, so results differ "
        "from one worker's (SyncBatchNorm: plain BatchNorm on CUDA with train.ray.sync_batchnorm)",
        tcfg.model,
        world.size,
    )
    return model
