"""Every model trains through the one trainer: CADNIF and CrossFuse (both stages) on real pairs."""

from __future__ import annotations

import pytest
import torch

from fusion.checkpoint import LAST, load_checkpoint
from fusion.errors import ConfigError
from fusion.train.loop import Trainer, _centre_crop, adapt_channels


@pytest.fixture
def tno(shared_data):
    return {"layout": "tno", "path": str(shared_data / "irvis/TNO42"), "test_fraction": 0.1}


def _held_out_loss(trainer):
    """Loss on fixed held-out crops in training mode: BatchNorm then uses the batch's own
    statistics, which a few steps of training have not yet settled into the running ones."""
    items = [trainer.val_set[i] for i in range(min(2, len(trainer.val_set)))]
    side = trainer.tcfg.crop
    batch = {k: torch.stack([_centre_crop(it[k], side) for it in items]) for k in items[0] if k != "id"}
    trainer.model.train()
    with torch.no_grad():
        return float(trainer.losses(*trainer._inputs(batch))["loss"])


def _fit_lowers_validation_loss(trainer, out):
    before = _held_out_loss(trainer)
    state = trainer.fit(out)
    after = _held_out_loss(trainer)
    assert after < before, f"held-out loss {before:.5g} -> {after:.5g}"
    return state


def test_cadnif_learns_ir_vis_fusion_on_real_tno_pairs(cfg, tno, tmp_path):
    c = cfg(
        **{
            "train.model": "cadnif",
            "train.variant": "CA-DRDB-AU-GRL-Net",
            "train.task": "ir-vis",
            "train.source": tno,
            "train.epochs": 2,
            "train.steps_per_epoch": 3,
            "train.crop": 32,
            "train.batch_size": 2,
            "train.lr": 2e-3,
        }
    )
    trainer = Trainer(c, None)
    assert trainer.channels == 1 and trainer.stage == "single" and trainer.roles.gt is None
    # split by pair (each TNO pair is its own scene): nothing is both trained and validated on
    assert not set(trainer.train_set.ids) & set(trainer.val_set.ids)
    _fit_lowers_validation_loss(trainer, tmp_path / "ck")
    payload = load_checkpoint(tmp_path / "ck" / LAST)
    assert payload["task"] == "ir-vis" and payload["stage"] == "single"


def test_cadnif_on_the_synthetic_multifocus_set_uses_the_luminance(cfg, tiny_prepared, tmp_path):
    c = cfg(**{"train.model": "cadnif", "train.variant": "OD-Net", "train.epochs": 2, "train.lr": 2e-3})
    trainer = Trainer(c, tiny_prepared)
    assert trainer.roles.sources == ("near", "far") and trainer.channels == 1
    _fit_lowers_validation_loss(trainer, tmp_path / "ck")


def test_cadnif_resumes_bit_for_bit(cfg, tiny_prepared, tmp_path):
    c = lambda e: cfg(**{"train.model": "cadnif", "train.variant": "CA-DRDB-Net", "train.epochs": e})  # noqa: E731
    Trainer(c(2), tiny_prepared).fit(tmp_path / "full")
    Trainer(c(1), tiny_prepared).fit(tmp_path / "part")
    Trainer(c(2), tiny_prepared).fit(tmp_path / "part", resume_from=tmp_path / "part" / LAST)
    a, b = (
        load_checkpoint(tmp_path / "full" / LAST)["state_dict"],
        load_checkpoint(tmp_path / "part" / LAST)["state_dict"],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_crossfuse_two_stages_the_second_starting_from_the_first(cfg, tno, tmp_path):
    common = {
        "train.model": "crossfuse",
        "train.task": "ir-vis",
        "train.source": tno,
        "train.crop": 32,
        "train.batch_size": 2,
        "train.steps_per_epoch": 3,
        "train.epochs": 1,
    }
    stage1 = Trainer(cfg(**common, **{"train.variant": "full", "train.lr": 1e-4}), None)
    assert stage1.stage == "autoencoder"
    assert {id(p) for g in stage1.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in stage1.model.encoders.parameters()
    }
    _fit_lowers_validation_loss(stage1, tmp_path / "s1")
    s1 = load_checkpoint(tmp_path / "s1" / LAST)
    assert s1["stage"] == "autoencoder"

    # any two-stage variant reuses the same stage-1 checkpoint
    stage2 = Trainer(
        cfg(**common, **{"train.variant": "no-shift", "train.init_from": str(tmp_path / "s1"), "train.lr": 1e-3}), None
    )
    assert stage2.stage == "fusion" and stage2.init["init_variant"] == "full"
    enc = {k: v.clone() for k, v in stage2.model.state_dict().items() if k.startswith("encoders.")}
    assert all(torch.equal(enc[k], s1["state_dict"][k]) for k in enc)
    _fit_lowers_validation_loss(stage2, tmp_path / "s2")
    s2 = load_checkpoint(tmp_path / "s2" / LAST)
    assert s2["stage"] == "fusion" and s2["init_from"] == str(tmp_path / "s1") and len(s2["init_sha256"]) == 64
    assert all(torch.equal(s2["state_dict"][k], enc[k]) for k in enc), "frozen encoders changed in stage 2"


@pytest.mark.parametrize(
    ("model", "variant", "stage"),
    [
        ("cadnif", "CA-DRDB-AU-GRL-Net", "single"),
        ("crossfuse", "full", "autoencoder"),
        # CrossFuse's attention in bfloat16: 30 s where the CPU has bfloat16 instructions, 5 min where
        # it is emulated (AVX2); every variant trains in bfloat16 in the GPU tests (tests/gpu)
        pytest.param("crossfuse", "s3-c3", "fusion", marks=pytest.mark.slow),
        pytest.param("crossfuse", "one-stage", "joint", marks=pytest.mark.slow),
    ],
)
def test_every_model_trains_under_cpu_bfloat16_autocast(cfg, tno, tmp_path, model, variant, stage):
    """train.amp on CPU (bfloat16) runs every architecture: attention, dense blocks and the
    auxiliary branch included; finite losses, float32 weights, gradients reach the trained
    parameters. (UFA-Fuse: tests/unit/test_trainer.py.)"""
    over = {
        "train.model": model,
        "train.variant": variant,
        "train.task": "ir-vis",
        "train.source": tno,
        "train.crop": 32,
        "train.batch_size": 2,
        "train.steps_per_epoch": 2,
        "train.epochs": 1,
        "train.amp": True,
    }
    if stage == "fusion":
        Trainer(cfg(**{**over, "train.amp": False}), None).fit(tmp_path / "s1")
        over["train.init_from"] = str(tmp_path / "s1" / LAST)
    trainer = Trainer(cfg(**over), None)
    assert trainer.stage == stage and trainer.amp_dtype == torch.bfloat16
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    state = trainer.fit(tmp_path / "ck")
    assert all(torch.isfinite(torch.tensor(h["train/epoch_loss"])) for h in state.history)
    after = load_checkpoint(tmp_path / "ck" / LAST)["state_dict"]
    assert all(v.dtype == before[k].dtype for k, v in after.items())
    assert any(not torch.equal(before[k], after[k]) for k in after if after[k].is_floating_point())


def test_training_configuration_errors_are_named(cfg, tno, tiny_prepared, tmp_path):
    with pytest.raises(ConfigError, match="train.stage=fusion needs train.init_from"):
        Trainer(
            cfg(**{"train.model": "crossfuse", "train.variant": "full", "train.stage": "fusion", "train.source": tno}),
            None,
        )
    with pytest.raises(ConfigError, match="apply to two-stage models"):
        Trainer(cfg(**{"train.init_from": "x.pt"}), tiny_prepared)
    with pytest.raises(ConfigError, match="supervised.*no ground truth"):
        Trainer(cfg(**{"train.source": tno}), None)
    Trainer(cfg(), tiny_prepared).fit(tmp_path / "ufa")
    with pytest.raises(ConfigError, match="holds ufa stage single, not a crossfuse stage-1"):
        Trainer(
            cfg(
                **{
                    "train.model": "crossfuse",
                    "train.variant": "full",
                    "train.init_from": str(tmp_path / "ufa" / LAST),
                    "train.source": tno,
                }
            ),
            None,
        )
    with pytest.raises(ConfigError, match="train.task"):
        cfg(**{"train.task": "infrared"})


def test_channel_adaptation():
    rgb = torch.rand(2, 3, 5, 7)
    y = adapt_channels(rgb, 1)
    assert y.shape == (2, 1, 5, 7)
    assert torch.allclose(y[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert adapt_channels(y, 3).shape == (2, 3, 5, 7)
