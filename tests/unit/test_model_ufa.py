"""Model behaviour: UFA-Fuse shapes, sizes, gradients, variants and the released graph."""

from __future__ import annotations

import pytest
import torch

from fusion.errors import ConfigError
from fusion.models import MODELS, build_model, count_parameters
from fusion.models.ufa import UnityFusionAttention


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (1, 1), (64, 17)])
def test_any_input_size_gives_same_size_output_in_unit_range(size):
    model = build_model("ufa", "UFA").eval()
    a, b = torch.rand(2, 3, *size), torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(a, b)
    assert out.shape == (2, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_released_rgb_graph_has_455111_parameters():
    assert count_parameters(build_model("ufa", "UFA", released=True)) == 455_111


def test_paper_table_ii_parameter_count():
    # 7 FEBs (1792 + 6 x 36928), one 7x7 2->1 conv (99), FFB 1x1 128->64 (8256),
    # ICB1-3 64->64 (3 x 36928), ICB4 64->3 (1731)
    assert count_parameters(build_model("ufa", "UFA")) == 1792 + 6 * 36928 + 99 + 8256 + 3 * 36928 + 1731


@pytest.mark.parametrize("variant", ["UFA", "NO-UFA", "NO-SA", "NO-CA"])
def test_gradient_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = build_model("ufa", variant)
    a, b = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    model(a, b).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # the shared spatial-attention conv adds its bias to every input's map and the softmax
    # across inputs cancels it: its gradient is 0 in exact arithmetic (rounding may leave ~1e-9)
    cancelled = {"ufa.spatial_convs.0.bias"}
    grads = dict(model.named_parameters())
    assert [n for n, p in grads.items() if n not in cancelled and not p.grad.abs().sum() > 0] == []
    assert all(float(grads[n].grad.abs().max()) < 1e-6 for n in cancelled & set(grads))


def test_ablations_remove_the_attention_they_name():
    assert len(build_model("ufa", "NO-UFA").ufa.spatial_convs) == 0
    assert len(build_model("ufa", "NO-SA").ufa.spatial_convs) == 0
    assert len(build_model("ufa", "NO-CA").ufa.spatial_convs) == 1
    assert not build_model("ufa", "NO-CA").ufa.channel
    assert build_model("ufa", "NO-SA").ufa.channel


def test_attention_weights_are_a_softmax_across_inputs():
    ufa = UnityFusionAttention(num_inputs=2, channel=True, spatial=False)
    f = torch.ones(1, 4, 5, 5)
    out = ufa([f, f])
    # equal inputs -> equal weights of 1/2 each
    torch.testing.assert_close(out[0], f * 0.5)
    torch.testing.assert_close(out[0] + out[1], f)


def test_inputs_are_interchangeable_in_the_paper_model():
    """Shared backbone and shared attention (the paper's model): swapping the inputs swaps
    the attended features; only the FFB's concatenation order tells them apart."""
    torch.manual_seed(0)
    model = build_model("ufa", "UFA").eval()
    a, b = torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        fa, fb = model.features(a), model.features(b)
        ab, ba = model.ufa([fa, fb]), model.ufa([fb, fa])
        same = model(a, a)
    torch.testing.assert_close(ab[0], ba[1])
    torch.testing.assert_close(ab[1], ba[0])
    assert same.shape == a.shape and torch.isfinite(same).all()  # identical inputs are a valid pair


def test_wrong_number_of_inputs_and_unknown_variant_are_clear_errors():
    model = build_model("ufa", "UFA")
    with pytest.raises(ValueError, match="built for 2 inputs, got 3"):
        model(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="unknown variant 'NO-XX'.*NO-UFA"):
        build_model("ufa", "NO-XX")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_model("nope", "UFA")


def test_registry_lists_paper_variant_names():
    assert list(MODELS["ufa"].variants.values()) == ["UFA", "NO-UFA", "NO-SA", "NO-CA"]
