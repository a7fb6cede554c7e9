"""torch.compile for training (train.compile) and for repeated inference, with a way out.

Compilation is worth it where one graph runs many times: a training run, or fusing many
images of one size in one process. It costs seconds up front (tracing plus C++ code
generation for CPUs; inductor caches the generated code on disk for later processes) and
gains where the model is not all convolution: on CPUs inductor fuses the activations,
attention products and concatenations around oneDNN's convolutions. Measured in
benchmarks/bench_models.py.

Where compilation cannot happen (inductor's CPU backend needs a C++ compiler; some
platforms have no inductor) the first call fails inside torch. `CompiledForward` then
warns once, naming the setting that asked for it, and runs eager: a training job should
not die for want of an optimisation, and the results are the same computation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


class CompiledForward:
    """Calls `fn` (a module or a bound method) through torch.compile; eager after a failure.

    inference=True adds inductor's weight freezing (constant-folds the weights and prepacks
    them for oneDNN); it applies under torch.no_grad / inference_mode only. Attributes
    other than the call (in_channels, prefers_channels_last, ...) read through to `fn`, so
    `fusion.inference.fuse` takes a CompiledForward of a model as it takes the model.

    The first call compiles; if it raises, the call is made again eagerly, and an error that
    eager raises too is the caller's own. A training step's backward graph is compiled at its
    first backward, outside this call: the trainer treats a failure there the same way
    (`verified` is set once a whole step has passed).
    """

    def __init__(self, fn: Callable[..., Any], key: str, inference: bool = False):
        self.fn = fn
        self.key = key
        if torch.are_deterministic_algorithms_enabled():  # seed_everything set only the kernels' flag
            torch.use_deterministic_algorithms(True, warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
        self.compiled = torch.compile(fn, options={"freezing": True} if inference else None)
        self.failed: str | None = None
        self.compile_seconds: float | None = None  # the first (compiling) call, for logs and benchmarks
        self.verified = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return self.fn(*args, **kwargs)
        if self.compile_seconds is not None:
            return self.compiled(*args, **kwargs)
        start = time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # any compile failure; eager re-raises real errors
            self.disable(exc)
            return self.fn(*args, **kwargs)
        self.compile_seconds = time.perf_counter() - start
        log.info("%s: compiled in %.1f s", self.key, self.compile_seconds)
        return out

    def disable(self, exc: BaseException) -> None:
        """Run eager from now on, and say why once."""
        lines = str(exc).strip().splitlines()
        first = lines[0] if lines else ""
        self.failed = f"{type(exc).__name__}: {first}" if type(exc).__name__ not in first else first
        log.warning(
            "%s: torch.compile failed (%s); running eager instead, which computes the same "
            "thing more slowly. Set %s=false to skip the attempt.",
            self.key,
            self.failed,
            self.key,
        )

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this object lacks: the model's own attributes.
        fn = self.__dict__.get("fn")  # absent while copy/pickle rebuild the object
        if fn is None:
            raise AttributeError(name)
        return getattr(fn, name)
