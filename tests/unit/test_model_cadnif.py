"""Model behaviour: CADNIF shapes, sizes, parameter counts, ablations, gradients and options."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from fusion.errors import ConfigError
from fusion.models import MODELS, build_model, count_parameters
from fusion.models.cadnif import CrossAttentionBlock, CrossNonLocal, DilatedResidualDenseBlock, Norm

VARIANTS = ["OD-Net", "CA-Net", "CA-DRDB-Net", "CA-DRDB-AU-Net", "CA-DRDB-AU-GRL-Net"]

# Hand counts (weights + biases, BN = 2 x channels):
SHALLOW_PAIR = 6 * 16 + 16 + 32  # 1x1 6->16 + BN
SHALLOW_STREAMS = 2 * (3 * 16 + 16 + 32)  # 1x1 3->16 + BN, per stream
BLOCK = 2 * ((32 * 9 * 16 + 16) + (16 * 9 * 16 + 16)) + (48 * 9 * 16 + 16) + 32  # two gates + out conv + BN
CA_DENSE = sum(c * 9 * 16 + 16 for c in (32, 48, 64, 80))
OD_DENSE = sum(c * 9 * 16 + 16 for c in (16, 32, 48, 64, 80))
AUX = 2 * (4 * (16 * 16 + 16) + 32)  # theta, phi, g, W (+BN on W), two blocks
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
    "CA-DRDB-AU-Net": SHALLOW_PAIR
    + SHALLOW_STREAMS
    + 5 * BLOCK
    + CA_DENSE
    + AUX
    + merge_in(128)
    + DRDB
    + MERGE_OUT
    + tail(64),
    "CA-DRDB-AU-GRL-Net": SHALLOW_PAIR
    + SHALLOW_STREAMS
    + 5 * BLOCK
    + CA_DENSE
    + AUX
    + merge_in(128)
    + DRDB
    + MERGE_OUT
    + tail(80),
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
    assert n["CA-DRDB-AU-GRL-Net"] - n["CA-DRDB-AU-Net"] == 16 * 9 * 64  # tail conv sees c0 (16 ch)
    assert n["CA-DRDB-AU-Net"] - n["CA-DRDB-Net"] == AUX + 32 * 64  # branch + its 32 merge inputs
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
    assert paper[0, :, 0, 0].tolist() == [-1, -1, -1, 1, 1, 1]  # three planes of the same source
    assert released[0, :, 0, 0].tolist() == [-1, -1, 1, 1, 1, -1]  # [ir, ir, vi], [vi, vi, ir]


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
    theta = nl.theta(q).flatten(2)[0].T  # HW x C
    phi = nl.phi(kv).flatten(2)[0]  # C x HW
    g = nl.g(kv).flatten(2)[0].T  # HW x C
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


# ---------------------------------------------------------------- released = the authors' trained graph

TF_EPS, TF_AUX_EPS = 1.001e-5, 1e-3


def _released(**options):
    return build_model("cadnif", "CA-DRDB-AU-GRL-Net", released=True, **options)


def _describe(model):
    """Every leaf layer in registration order: kind, shape, activation parameters."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            out.append((name, "conv", m.in_channels, m.out_channels, m.kernel_size[0], m.dilation[0], m.padding[0]))
        elif isinstance(m, Norm):
            out.append((name, "bn", m.num_features, m.eps, m.batch_stats))
        elif isinstance(m, torch.nn.LeakyReLU):
            out.append((name, "lrelu", m.negative_slope))
        elif isinstance(m, (torch.nn.ReLU, torch.nn.Sigmoid, torch.nn.Tanh)):
            out.append((name, type(m).__name__.lower()))
    return out


def _trained_graph_layers():
    """The layers of model-11.meta, as docs/models.md states them."""
    conv = lambda n, i, o, k, d=1: (n, "conv", i, o, k, d, d * (k // 2))  # noqa: E731
    bn = lambda n, c, eps=TF_EPS: (n, "bn", c, eps, True)  # noqa: E731
    lr = lambda n: (n, "lrelu", 0.2)  # noqa: E731
    layers = []
    for s, cin in (("shallow_pair", 6), ("shallow_a", 3), ("shallow_b", 3)):
        layers += [conv(f"{s}.0", cin, 16, 1), bn(f"{s}.1", 16), lr(f"{s}.2")]
    for k in range(5):
        for g in (f"blocks.{k}.gate_a", f"blocks.{k}.gate_b"):
            layers += [
                conv(f"{g}.0", 32, 16, 3),
                lr(f"{g}.1"),
                conv(f"{g}.2", 16, 16, 3),
                lr(f"{g}.3"),
                (f"{g}.4", "sigmoid"),
            ]
        layers += [conv(f"blocks.{k}.out.0", 48, 16, 3), bn(f"blocks.{k}.out.1", 16)]
    for k, cin in enumerate((32, 48, 64, 80)):
        layers += [conv(f"dense_convs.{k}.0", cin, 16, 3), lr(f"dense_convs.{k}.1")]
    for k in range(2):
        layers += [conv(f"aux.{k}.{n}", 16, 16, 1) for n in ("theta", "phi", "g")]
        layers += [conv(f"aux.{k}.w.0", 16, 16, 1), bn(f"aux.{k}.w.1", 16, TF_AUX_EPS)]
    layers += [conv("merge_in.0", 128, 64, 1), lr("merge_in.1")]
    for i, cin in enumerate((64, 80, 96)):
        layers += [conv(f"drdb.convs.{i}.0", cin, 16, 3, 2), lr(f"drdb.convs.{i}.1")]
    layers += [conv("drdb.fuse.0", 112, 64, 1), lr("drdb.fuse.1"), conv("merge_out.0", 128, 64, 1), lr("merge_out.1")]
    layers += [
        conv("tail.0.0", 80, 64, 3),
        bn("tail.0.1", 64),
        lr("tail.0.2"),
        conv("tail.1", 64, 1, 3),
        ("tail.2", "tanh"),
    ]
    return layers


def test_released_model_has_exactly_the_trained_graphs_layers():
    assert _describe(_released()) == _trained_graph_layers()


def _record(model, *inputs):
    """Conv call order and every module's input / output, one forward pass in eval."""
    calls, seen, hooks = [], {}, []

    def hook(mod, inp, out, name):
        seen[name] = (inp, out)
        calls.extend([name] if isinstance(mod, torch.nn.Conv2d) else [])

    for name, m in model.named_modules():
        hooks.append(m.register_forward_hook(partial(hook, name=name)))
    with torch.no_grad():
        model.eval()(*inputs)
    for h in hooks:
        h.remove()
    return calls, seen


def test_released_forward_runs_the_layers_in_the_graphs_order_and_never_the_attention():
    calls, _ = _record(_released(), *_pair((12, 10)))
    expected = ["shallow_pair.0", "shallow_a.0", "shallow_b.0"]
    for k in range(5):
        expected += [
            f"blocks.{k}.gate_a.0",
            f"blocks.{k}.gate_a.2",
            f"blocks.{k}.gate_b.0",
            f"blocks.{k}.gate_b.2",
            f"blocks.{k}.out.0",
        ] + ([f"dense_convs.{k}.0"] if k < 4 else [])
    expected += [
        "aux.0.w.0",
        "aux.1.w.0",
        "merge_in.0",
        "drdb.convs.0.0",
        "drdb.convs.1.0",
        "drdb.convs.2.0",
        "drdb.fuse.0",
        "merge_out.0",
        "tail.0.0",
        "tail.1",
    ]
    assert calls == expected  # theta / phi / g never run


def test_released_dense_concatenations_follow_the_graphs_channel_order():
    torch.manual_seed(0)
    _, seen = _record(_released(), *_pair((9, 11)))
    out = lambda n: seen[n][1]  # noqa: E731
    c0, att = out("shallow_pair"), [out(f"blocks.{k}") for k in range(5)]
    a = [out(f"dense_convs.{k}") for k in range(4)]
    order = {0: [att[0], c0], 1: [att[1], a[0], c0], 2: [a[1], att[2], a[0], c0], 3: [a[2], a[1], att[3], a[0], c0]}
    for k, parts in order.items():
        torch.testing.assert_close(seen[f"dense_convs.{k}"][0][0], torch.cat(parts, 1), rtol=0, atol=0)
    merge = [a[3], a[2], a[1], att[4], a[0], c0, out("aux.0"), out("aux.1")]
    torch.testing.assert_close(seen["merge_in"][0][0], torch.cat(merge, 1), rtol=0, atol=0)
    # each block's gates see [own stream, previous dense output]; the stream convs are ir then vi
    x_ir, x_vi = out("shallow_a"), out("shallow_b")
    torch.testing.assert_close(seen["blocks.2.gate_a"][0][0], torch.cat([x_ir, a[1]], 1), rtol=0, atol=0)
    torch.testing.assert_close(seen["blocks.2.gate_b"][0][0], torch.cat([x_vi, a[1]], 1), rtol=0, atol=0)
    torch.testing.assert_close(seen["tail"][0][0], torch.cat([out("merge_out"), c0], 1), rtol=0, atol=0)


def test_released_gate_is_sigmoid_of_leaky_relu_after_both_convs():
    paper, released = CrossAttentionBlock(16), CrossAttentionBlock(16, released=True)
    for block in (paper, released):
        with torch.no_grad():
            block.gate_a[0].weight.zero_()
            block.gate_a[0].bias.fill_(-1.0)  # first conv: -1 everywhere
            block.gate_a[2].weight.zero_()
            block.gate_a[2].bias.zero_()
            for c in range(16):
                block.gate_a[2].weight[c, c, 1, 1] = 1.0  # second conv: identity
    x = torch.randn(1, 16, 5, 6)
    g_paper, _ = paper.gates(x, x, x)
    g_rel, _ = released.gates(x, x, x)
    torch.testing.assert_close(g_paper, torch.full_like(x, 0.5))  # sigmoid(ReLU(-1) = 0)
    torch.testing.assert_close(g_rel, torch.full_like(x, torch.sigmoid(torch.tensor(-0.04)).item()))  # LReLU twice
    torch.manual_seed(1)
    block = CrossAttentionBlock(16, released=True)
    xb, c = torch.randn(2, 16, 7, 5), torch.randn(2, 16, 7, 5)
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    conv = lambda m, t: F.conv2d(t, m.weight, m.bias, padding=1)  # noqa: E731
    want = torch.sigmoid(lrelu(conv(block.gate_b[2], lrelu(conv(block.gate_b[0], torch.cat([xb, c], 1))))))
    torch.testing.assert_close(block.gates(xb, xb, c)[1], want)


def test_released_aux_branch_is_x_plus_bn_of_w_x_other_and_ignores_theta_phi_g():
    torch.manual_seed(0)
    nl = _released().aux[0].eval()
    x, other = torch.randn(1, 16, 6, 7), torch.randn(1, 16, 6, 7)
    wx = F.conv2d(other, nl.w[0].weight, nl.w[0].bias)
    mean, var = wx.mean((0, 2, 3), keepdim=True), wx.var((0, 2, 3), unbiased=False, keepdim=True)
    bn = (wx - mean) / torch.sqrt(var + TF_AUX_EPS) * nl.w[1].weight.view(1, -1, 1, 1) + nl.w[1].bias.view(1, -1, 1, 1)
    with torch.no_grad():
        got = nl(x, other)
        torch.testing.assert_close(got, x + bn)
        for conv in (nl.theta, nl.phi, nl.g):
            conv.weight.normal_()
            conv.bias.normal_()
        assert torch.equal(nl(x, other), got)


def test_released_bn_uses_each_images_own_statistics_in_eval_with_tf_epsilons():
    model = _released().eval()
    eps = {round(m.eps, 8) for m in model.modules() if isinstance(m, Norm)}
    assert eps == {TF_EPS, TF_AUX_EPS}
    bn = model.shallow_pair[1]
    # variance far below eps (as in model-11's shallow layers): eps sets the scale, 1.001e-5 vs 1e-5 shows
    x = (torch.randn(2, 16, 5, 5) * 1e-4 + torch.arange(2.0).view(2, 1, 1, 1)).double()
    bn = bn.double()
    with torch.no_grad():
        bn.running_mean.fill_(7.0)  # running statistics play no part
        bn.running_var.fill_(3.0)
        got = bn(x)
    mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    rel = lambda eps: ((got - (x - mean) / torch.sqrt(var + eps)).abs().max() / got.abs().max()).item()  # noqa: E731
    assert rel(TF_EPS) < 1e-9 and rel(1e-5) > 3e-5
    with torch.no_grad():  # per image: batching does not change a result
        torch.testing.assert_close(bn(x[1:]), got[1:])


def _changed(a, b):
    return sorted({x[0] for x in set(_describe(a)) ^ set(_describe(b))})


def test_each_fix_option_changes_exactly_what_it_names():
    base = _released()
    fixed_bn = _released(bn_running_stats=True)
    assert _changed(base, fixed_bn) == sorted(n for n, m in base.named_modules() if isinstance(m, Norm))
    assert all(not m.batch_stats for m in fixed_bn.modules() if isinstance(m, Norm))
    fixed_aux = _released(aux_attention=True)
    assert _changed(base, fixed_aux) == [] and [nl.attend for nl in fixed_aux.aux] == [True, True]
    assert [nl.attend for nl in base.aux] == [False, False]
    same = _released(stacking="same")
    assert _changed(base, same) == [] and (base.stacking, same.stacking) == ("cross", "same")
    a, b = _pair((8, 8))
    outs = {}
    for name, model in (("base", base), ("bn", fixed_bn), ("aux", fixed_aux), ("same", same)):
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            outs[name] = model.eval()(a, b)
    assert all(not torch.allclose(outs["base"], outs[k]) for k in ("bn", "aux", "same"))
    # the fixes are the paper's defaults
    paper = build_model("cadnif", "CA-DRDB-AU-GRL-Net")
    assert paper.bn_running_stats and paper.aux_attention and paper.stacking == "same"


def test_released_fuses_whole_images_and_paper_mode_tiles_them():
    sizes = {}
    for name, model in (("paper", build_model("cadnif", "CA-DRDB-AU-GRL-Net")), ("released", _released())):
        seen = []
        model.shallow_pair.register_forward_hook(lambda m, inp, out, seen=seen: seen.append(tuple(inp[0].shape[-2:])))
        with torch.no_grad():
            model.eval()(*_pair((133, 100)))
        sizes[name] = seen
    assert sizes["released"] == [(133, 100)]
    assert sizes["paper"] == [(132, 132)] * 2


def test_options_are_registered_and_checked():
    spec = MODELS["cadnif"]
    assert set(spec.options) == {
        "stacking",
        "bn_running_stats",
        "aux_attention",
        "published_test_graph",
        "published_seed",
        "loss_crop_border",
    }
    with pytest.raises(ConfigError, match="stacking"):
        _released(stacking="diagonal")
    with pytest.raises(ConfigError, match="published_test_graph"):
        build_model("cadnif", "CA-DRDB-AU-GRL-Net", published_test_graph=True)
    with pytest.raises(ConfigError, match="not an option"):
        _released(tiles=3)
