"""A new model is one module and one registry entry: this file is that module.

BlendNet below is defined, given a recipe and registered here, and nothing else in the
package is edited: the config accepts it, the trainer trains it, its checkpoint reloads,
inference fuses with it and names it, and a second stage that starts from the first works
through the same recipe fields CrossFuse uses.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion.checkpoint import LAST, load_checkpoint, model_from_checkpoint
from fusion.config import load_config
from fusion.errors import ConfigError
from fusion.inference import fuse, load_model, model_label
from fusion.models import MODELS, ModelSpec, Stage, register
from fusion.train.loop import Trainer
from tests.conftest import REPO


class BlendNet(nn.Module):
    """A learned blend of two RGB sources: the smallest network that trains and fuses."""

    in_channels = 3

    def __init__(self, variant: str = "base", released: bool = False, **options):
        super().__init__()
        self.feature = nn.Conv2d(3, 4, 3, padding=1)  # "stage 1": shared features
        self.mix = nn.Conv2d(8, 3, 3, padding=1)  # "stage 2": the blend

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mix(torch.cat([self.feature(a), self.feature(b)], 1)))

    def features(self, a: torch.Tensor) -> torch.Tensor:
        return self.feature(a)


class L1ToTarget(nn.Module):
    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.l1_loss(pred, gt)
        return {"loss": loss, "l1": loss.detach()}


def _feature_objective(step, sources, gt, loss_fn, autocast, supervised):
    with autocast():
        out = step(sources[0])
    return {"loss": out.float().pow(2).mean()}  # any objective of the model's own choosing


def _stages(variant: str) -> tuple[Stage, ...]:
    if variant == "base":
        return (Stage("single"),)
    return (
        Stage("features", fuses=False, label="feature", forward=lambda m: m.features, objective=_feature_objective),
        Stage("blend", starts_from="features"),
    )


def _start_from(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.feature.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("feature.")})
    model.feature.requires_grad_(False)


def _trainable(model: nn.Module, stage: str):
    return model.feature.parameters() if stage == "features" else (p for p in model.parameters() if p.requires_grad)


SPEC = ModelSpec(
    name="blend",
    display_name="BlendNet",
    builder=BlendNet,
    variants={"base": "Blend", "staged": "Blend, two stages"},
    task="multi-focus",
    paper="a test model",
    loss=lambda stage, cfg: L1ToTarget(),
    supervised=True,
    stages=_stages,
    trainable=_trainable,
    start_from=_start_from,
)


@pytest.fixture
def blend(tmp_path):
    register(SPEC)
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    yield lambda **o: load_config(tmp_path, "tiny", [f"{k}={v}" for k, v in {"train.model": "blend", **o}.items()])
    del MODELS["blend"]


def test_a_registered_model_trains_reloads_and_fuses_with_no_other_change(blend, tiny_prepared, tmp_path):
    state = Trainer(blend(**{"train.variant": "base"}), tiny_prepared).fit(tmp_path / "run")
    assert state.epoch == 2 and np.isfinite(state.history[-1]["train/epoch_loss"])
    model, payload = model_from_checkpoint(tmp_path / "run" / LAST)
    assert isinstance(model, BlendNet) and payload["model"] == "blend" and payload["stage"] == "single"
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2))  # colour sources
    fused = fuse(model, [a, b])
    assert fused.shape == (24, 24, 3) and fused.dtype == np.uint8
    assert model_label(payload) == "BlendNet (Blend)"


def test_a_new_models_second_stage_starts_from_its_first_through_the_recipe(blend, tiny_prepared, tmp_path):
    Trainer(blend(**{"train.variant": "staged"}), tiny_prepared).fit(tmp_path / "s1")
    first = load_checkpoint(tmp_path / "s1" / LAST)
    assert first["stage"] == "features"
    with pytest.raises(Exception, match="feature checkpoint does not fuse"):
        load_model(tmp_path / "s1" / LAST)
    with pytest.raises(ConfigError, match="train.stage=blend needs train.init_from"):
        Trainer(blend(**{"train.variant": "staged", "train.stage": "blend"}), tiny_prepared)

    trainer = Trainer(
        blend(**{"train.variant": "staged", "train.init_from": str(tmp_path / "s1" / LAST)}), tiny_prepared
    )
    assert trainer.stage == "blend"
    trainer.fit(tmp_path / "s2")
    second = load_checkpoint(tmp_path / "s2" / LAST)
    # the first stage's features came in and stayed frozen; the blend trained
    assert torch.equal(second["state_dict"]["feature.weight"], first["state_dict"]["feature.weight"])
    assert not torch.equal(second["state_dict"]["mix.weight"], first["state_dict"]["mix.weight"])
    model, _ = load_model(tmp_path / "s2" / LAST)
    rng = np.random.default_rng(1)
    assert fuse(model, [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]).shape == (16, 16, 3)
