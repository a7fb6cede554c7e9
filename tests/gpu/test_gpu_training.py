"""Training on CUDA: every model and variant in each precision, checkpoints across devices,
resuming, torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

from fusion.checkpoint import BEST, LAST, load_checkpoint, model_from_checkpoint, save_checkpoint
from fusion.models import MODELS
from fusion.train.loop import Trainer
from tests.gpu.conftest import precision_overrides, precisions

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

VARIANTS = [(m, v) for m, spec in sorted(MODELS.items()) for v in spec.variants]
STEPS = 3


def _three_steps(trainer: Trainer, precision: str) -> dict[str, float]:
    """One epoch of STEPS optimiser steps through the trainer's own step (autocast, GradScaler)."""
    trainable = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    metrics = trainer.train_epoch(0)
    assert trainer.state.global_step == STEPS
    losses = {k: v for k, v in metrics.items() if k.startswith("train/epoch_") and k != "train/epoch_seconds"}
    assert losses and all(math.isfinite(v) for v in losses.values()), (precision, losses)
    after = dict(trainer.model.named_parameters())
    assert all(
        p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in after.values()
    )  # float32 master weights
    if precision == "float16":
        # GradScaler: enabled, and any step it skipped (inf gradients at the initial scale) lowered the scale
        assert trainer.scaler.is_enabled() and math.isfinite(trainer.scaler.get_scale())
    else:
        assert any(not torch.equal(trainable[k], after[k].detach()) for k in trainable), f"{precision}: nothing learned"
    return losses


@pytest.mark.parametrize(("model", "variant"), VARIANTS, ids=[f"{m}-{v}" for m, v in VARIANTS])
def test_every_model_and_variant_trains_three_steps_in_each_precision(
    gpu, cfg, tiny_prepared, tmp_path, model, variant
):
    common = {
        "train.model": model,
        "train.variant": variant,
        "train.device": gpu.type,
        "train.epochs": 1,
        "train.steps_per_epoch": STEPS,
        "train.batch_size": 2,
        "train.crop": 32,
    }
    for precision in precisions(gpu):
        over = {**common, **precision_overrides(precision)}
        first = Trainer(cfg(**over), tiny_prepared)
        assert first.device.type == gpu.type
        assert first.amp_dtype == (None if precision == "float32" else getattr(torch, precision))
        assert first.scaler.is_enabled() == (precision == "float16")
        _three_steps(first, precision)
        if first.stage == "autoencoder":  # CrossFuse: the fusion stage, from these stage-1 encoders
            s1 = tmp_path / f"{precision}-stage1.pt"
            save_checkpoint(s1, first.payload())
            second = Trainer(cfg(**over, **{"train.init_from": str(s1)}), tiny_prepared)
            assert second.stage == "fusion"
            _three_steps(second, precision)


def test_a_gpu_checkpoint_loads_on_the_cpu_and_a_cpu_checkpoint_on_the_gpu(gpu, cfg, tiny_prepared, tmp_path):
    on_gpu = Trainer(cfg(**{"train.device": gpu.type, "train.epochs": 1}), tiny_prepared)
    on_gpu.fit(tmp_path / "gpu")
    model, payload = model_from_checkpoint(tmp_path / "gpu" / LAST, "cpu")
    assert next(model.parameters()).device.type == "cpu"
    trained = {k: v.detach().cpu() for k, v in on_gpu.model.state_dict().items()}
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())

    on_cpu = Trainer(cfg(**{"train.device": "cpu", "train.epochs": 1}), tiny_prepared)
    on_cpu.fit(tmp_path / "cpu")
    model, _ = model_from_checkpoint(tmp_path / "cpu" / LAST, gpu)
    assert next(model.parameters()).device.type == gpu.type
    assert all(torch.equal(v.cpu(), on_cpu.model.state_dict()[k]) for k, v in model.state_dict().items())
    # ... and training continues on the GPU from the CPU's optimiser state
    state = Trainer(cfg(**{"train.device": gpu.type, "train.epochs": 2}), tiny_prepared).fit(
        tmp_path / "cpu", resume_from=tmp_path / "cpu" / LAST
    )
    assert state.epoch == 2 and math.isfinite(state.history[-1]["train/epoch_loss"])


def test_a_resumed_gpu_run_continues_within_the_documented_tolerance(gpu, cfg, tiny_prepared, tmp_path):
    """`fusion reproduce`'s GPU tolerance (1e-3 relative, README): weights of both checkpoints
    and every epoch's metrics of an interrupted-and-resumed run against an uninterrupted one."""
    from fusion.reproduce import Comparison, compare

    over = {"train.device": gpu.type, "train.amp": gpu.type == "cuda"}
    Trainer(cfg(**over, **{"train.epochs": 3}), tiny_prepared).fit(tmp_path / "full")
    Trainer(cfg(**over, **{"train.epochs": 1}), tiny_prepared).fit(tmp_path / "part")
    Trainer(cfg(**over, **{"train.epochs": 3}), tiny_prepared).fit(
        tmp_path / "part", resume_from=tmp_path / "part" / LAST
    )
    cmp = compare(tmp_path / "full", tmp_path / "part", Comparison("resumed", "", "", gpu.type, 1e-3))
    assert cmp.checkpoints == {"last.pt": True, "best.pt": True}, cmp.max_weight_diff
    assert cmp.metrics_equal, [m for m in cmp.metrics if not m["equal"]]


def test_torch_compile_trains_and_fuses_on_the_gpu(gpu, cfg, tiny_prepared, tmp_path):
    import numpy as np

    from fusion.inference import fuse
    from fusion.train.compiled import CompiledForward

    trainer = Trainer(
        cfg(
            **{
                "train.device": gpu.type,
                "train.epochs": 1,
                "train.compile": True,
                "train.amp": gpu.type == "cuda",
                "train.amp_dtype": "bfloat16",
            }
        ),
        tiny_prepared,
    )
    state = trainer.fit(tmp_path)
    assert trainer.compiled.failed is None and trainer.compiled.verified, trainer.compiled.failed
    assert state.history[-1]["train/compiled"] == 1.0 and math.isfinite(state.history[-1]["train/epoch_loss"])

    model, _ = model_from_checkpoint(tmp_path / BEST, gpu)
    compiled = CompiledForward(model, "test", inference=True)
    rng = np.random.default_rng(0)
    pair = [rng.integers(0, 256, (72, 88, 3), dtype=np.uint8) for _ in range(2)]
    eager, fused = fuse(model, pair, gpu), fuse(compiled, pair, gpu)
    assert compiled.failed is None, compiled.failed
    assert np.abs(eager.astype(int) - fused).max() <= 1
    assert load_checkpoint(tmp_path / LAST)["global_step"] == state.global_step
