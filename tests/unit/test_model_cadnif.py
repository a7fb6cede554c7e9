"""Model behaviour: CADNIF shapes, sizes, parameter counts, ablations, gradients and options."""

from __future__ import annotations

import pytest
import torch

from fusion.models import MODELS, build_model, count_parameters
from fusion.models.cadnif import CrossAttentionBlock, CrossNonLocal, DilatedResidualDenseBlock

VARIANTS = ["OD-Net", "CA-Net", "CA-DRDB-Net", "CA-DRDB-AU-Net", "CA-DRDB-AU-GRL-Net"]

# Hand counts (weights + biases, BN = 2 x channels):
SHALLOW_PAIR = 6 * 16 + 16 + 32                      # 1x1 6->16 + BN
SHALLOW_STREAMS = 2 * (3 * 16 + 16 + 32)             # 1x1 3->16 + BN, per stream
BLOCK = 2 * ((32 * 9 * 16 + 16) + (16 * 9 * 16 + 16)) + (48 * 9 * 16 + 16) + 32  # two gates + out conv + BN
CA_DENSE = sum(c * 9 * 16 + 16 for c in (32, 48, 64, 80))
OD_DENSE = sum(c * 9 * 16 + 16 for c in (16, 32, 48, 64, 80))
AUX = 2 * (4 * (16 * 16 + 16) + 32)                  # theta, phi, g, W (+BN on W), two blocks
DRDB = sum(c * 9 * 16 + 16 for c in (64, 80, 96)) + (112 * 64 + 64)
MERGE_OUT = 128 * 64 + 64


def merge_in(cin):
    return cin * 64 + 64


def tail(cin):
    return (cin * 9 * 64 + 64 + 128) + (64 * 9 + 1)


EXPECTED = {
    "OD-Net": SHALLOW_PAIR + OD_DENSE + merge_in(96) + tail(64),
    "CA-Net": SHALLOW_PAIR + SHALLOW_STREAMS + 5 * BLOCK + CA_DENSE + merge_in(96) + tail(64),
    "CA-DRDB-Net": SHALLOW_PAIR + SHALLOW_STREAMS + 5 * BLOCK + CA_DENSE + merge_in(96) + DRDB + MERGE_OUT + tail(64),
    "CA-DRDB-AU-Net": SHALLOW_PAIR + SHALLOW_STREAMS + 5 * BLOCK + CA_DENSE + AUX + merge_in(128) + DRDB + MERGE_OUT
    + tail(64),
    "CA-DRDB-AU-GRL-Net": SHALLOW_PAIR + SHALLOW_STREAMS + 5 * BLOCK + CA_DENSE + AUX + merge_in(128) + DRDB
    + MERGE_OUT + tail(80),
}


def _pair(size, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *size, generator=g), torch.rand(batch, 1, *size, generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(37, 53), (5, 3), (1, 1)])
def test_any_size_gives_same_size_output_in_unit_range(variant, size):
    model = build_model("cadnif", variant).eval()
    with torch.no_grad():
        out = model(*_pair(size, batch=2))
    assert out.shape == (2, 1, *size)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_hand_counts(variant):
    assert count_parameters(build_model("cadnif", variant)) == EXPECTED[variant]


def test_full_model_count_and_each_ablation_step_removes_its_part():
    n = {v: count_parameters(build_model("cadnif", v)) for v in VARIANTS}
    assert n["CA-DRDB-AU-GRL-Net"] == 244_337
    assert n["CA-DRDB-AU-GRL-Net"] - n["CA-DRDB-AU-Net"] == 16 * 9 * 64        # tail conv sees c0 (16 ch)
    assert n["CA-DRDB-AU-Net"] - n["CA-DRDB-Net"] == AUX + 32 * 64             # branch + its 32 merge inputs
    assert n["CA-DRDB-Net"] - n["CA-Net"] == DRDB + MERGE_OUT
    assert n["CA-Net"] - n["OD-Net"] == SHALLOW_STREAMS + 5 * BLOCK + CA_DENSE - OD_DENSE
    assert n["OD-Net"] < n["CA-Net"] < n["CA-DRDB-Net"] < n["CA-DRDB-AU-Net"] < n["CA-DRDB-AU-GRL-Net"]


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_ablations_contain_exactly_the_components_they_name():
    present = {
        v: (
            _count(build_model("cadnif", v), CrossAttentionBlock),
            _count(build_model("cadnif", v), DilatedResidualDenseBlock),
            _count(build_model("cadnif", v), CrossNonLocal),
            build_model("cadnif", v).global_residual,
        )
        for v in VARIANTS
    }
    assert present == {
        "OD-Net": (0, 0, 0, False),
        "CA-Net": (5, 0, 0, False),
        "CA-DRDB-Net": (5, 1, 0, False),
        "CA-DRDB-AU-Net": (5, 1, 2, False),
        "CA-DRDB-AU-GRL-Net": (5, 1, 2, True),
    }
    od = build_model("cadnif", "OD-Net")
    assert not hasattr(od, "shallow_a") and not hasattr(od, "blocks")


@pytest.mark.parametrize("variant,tail_in", [("CA-DRDB-AU-Net", 64), ("CA-DRDB-AU-GRL-Net", 80)])
def test_global_residual_concatenates_the_shallow_pair_features(variant, tail_in):
    model = build_model("cadnif", variant).eval()
    seen = {}
    model.tail.register_forward_hook(lambda m, inp, out: seen.update(c=inp[0].shape[1]))
    with torch.no_grad():
        model(*_pair((12, 12)))
    assert seen["c"] == tail_in


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = build_model("cadnif", variant).train()
    model(*_pair((12, 14), batch=2)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def _shallow_input(model, a, b):
    seen = {}
    h = model.shallow_pair.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].clone()))
    with torch.no_grad():
        model.eval()(a, b)
    h.remove()
    return seen["x"]


def test_inputs_are_mapped_to_minus_one_one_and_stacked_per_paper_or_release():
    a, b = torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6)
    paper = _shallow_input(build_model("cadnif", "CA-DRDB-AU-GRL-Net"), a, b)
    released = _shallow_input(build_model("cadnif", "CA-DRDB-AU-GRL-Net", released=True), a, b)
    # channels: stream a (3) then stream b (3); a -> -1, b -> +1
    assert paper[0, :, 0, 0].tolist() == [-1, -1, -1, 1, 1, 1]            # three planes of the same source
    assert released[0, :, 0, 0].tolist() == [-1, -1, 1, 1, 1, -1]         # [ir, ir, vi], [vi, vi, ir]


def test_released_option_keeps_the_graph_size_and_uses_leaky_relu_in_the_drdb():
    paper = build_model("cadnif", "CA-DRDB-AU-GRL-Net")
    released = build_model("cadnif", "CA-DRDB-AU-GRL-Net", released=True)
    assert count_parameters(released) == count_parameters(paper)
    assert isinstance(paper.drdb.convs[0][1], torch.nn.ReLU)
    assert isinstance(released.drdb.convs[0][1], torch.nn.LeakyReLU)
    assert released.drdb.convs[0][1].negative_slope == 0.2


def test_more_than_two_inputs_are_fused_pairwise_left_to_right():
    torch.manual_seed(0)
    model = build_model("cadnif", "CA-DRDB-AU-GRL-Net").eval()
    a, b = _pair((10, 9))
    c = torch.rand(1, 1, 10, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(a, b, c), model(model(a, b), c))
        torch.testing.assert_close(model([a, b]), model(a, b))


def test_attention_gates_are_maps_in_unit_range_per_stream():
    block = CrossAttentionBlock(16)
    x_a, x_b, c = (torch.randn(2, 16, 7, 5) for _ in range(3))
    g_a, g_b = block.gates(x_a, x_b, c)
    assert g_a.shape == g_b.shape == (2, 16, 7, 5)
    assert g_a.min() >= 0 and g_a.max() <= 1
    assert not torch.allclose(g_a, g_b)  # one gate per stream


def test_cross_non_local_is_softmax_attention_from_one_stream_to_the_other():
    torch.manual_seed(0)
    nl = CrossNonLocal(4).eval()
    q, kv = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 3, 5)
    theta = nl.theta(q).flatten(2)[0].T          # HW x C
    phi = nl.phi(kv).flatten(2)[0]               # C x HW
    g = nl.g(kv).flatten(2)[0].T                 # HW x C
    y = (torch.softmax(theta @ phi, dim=-1) @ g).T.reshape(1, 4, 3, 5)
    torch.testing.assert_close(nl(q, kv), q + nl.w(y), rtol=1e-4, atol=1e-5)


def test_cross_non_local_runs_on_the_flash_attention_kernel():
    """Restricted to SDPA's flash kernel (which never holds HW x HW), forward and backward
    still run: the inputs qualify for it, so SDPA does not fall back to its math path,
    which materialises the 17424 x 17424 matrix of a 132x132 window and is ~7x slower
    (python -m benchmarks.run models)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    nl = CrossNonLocal(16)
    q, kv = torch.randn(2, 16, 12, 10), torch.randn(2, 16, 12, 10, requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = nl(q, kv)
        out.square().mean().backward()
    with sdpa_kernel([SDPBackend.MATH]):
        torch.testing.assert_close(nl(q, kv), out, rtol=1e-4, atol=1e-5)
    assert kv.grad is not None and torch.isfinite(kv.grad).all()


def test_errors_and_registry():
    model = build_model("cadnif", "CA-DRDB-AU-GRL-Net")
    with pytest.raises(ValueError, match="at least 2 inputs"):
        model(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="gray"):
        model(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    spec = MODELS["cadnif"]
    assert list(spec.variants) == VARIANTS
    assert "ir-vis" in spec.task and "medical" in spec.task
