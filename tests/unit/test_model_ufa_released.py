"""UFA-Fuse `released=True` is the authors' AF network, layer by layer (docs/models.md).

The parameter count alone let a different network pass as the released one; these tests
pin the order, shapes and activations of every layer, the attention formulas on inputs
with known answers, and the whole forward pass against an independent re-statement in
torch.nn.functional written from the facts, with the authors' key names.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion.errors import ConfigError
from fusion.models import build_model, count_parameters
from fusion.models.ufa_released import channel_masks, spatial_masks
from tests.conftest import SHARED

KEYS = SHARED / "reference" / "official" / "official_state_dict_keys.json"


def _authors_layout() -> dict[str, list[int]]:
    if not KEYS.is_file():
        pytest.skip(f"{KEYS} not found")
    return json.loads(KEYS.read_text())["ufa_AF_state_dict"]


def _authors_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v, generator=g) * 0.05 for k, v in _authors_layout().items()}


def reference_forward(
    w: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor, fixed: bool = False
) -> torch.Tensor:
    """The released AF forward as docs/models.md states it, in F.* calls on the authors' keys."""

    def conv(x, name, lrelu=True):
        k = w[f"{name}.weight"]
        y = F.conv2d(x, k, w.get(f"{name}.bias"), padding=k.shape[-1] // 2)
        return F.leaky_relu(y, 0.01) if lrelu else y

    def backbone(x):
        x = conv(x, "conv1.0")
        for rb in ("rb1", "rb2", "rb3"):
            x = conv(conv(x, f"{rb}.body.0"), f"{rb}.body.2", lrelu=False)  # no skip, no last activation
        return conv(x, "sc4.conv1.body.0")

    f1, f2 = backbone(a), backbone(b)
    p1, p2 = f1.mean((2, 3), keepdim=True), f2.mean((2, 3), keepdim=True)
    c1 = torch.exp(p1) / (torch.exp(p1) + torch.exp(p2) + 1e-10)
    c2 = torch.exp(p2) / (torch.exp(p1) + torch.exp(p2) + 1e-10)
    f1, f2 = f1 * c1, f2 * c2

    def desc(f):
        return torch.cat([f.mean(1, keepdim=True), f.max(1, keepdim=True).values], 1)

    a1 = F.conv2d(desc(f1), w["sc4.att_sp.att1.conv.weight"], padding=3)
    a2 = F.conv2d(desc(f2), w["sc4.att_sp.att2.conv.weight"], padding=3)
    s1 = torch.exp(a1) / ((torch.exp(a1) if fixed else torch.exp(a2)) + torch.exp(a2) + 1e-10)
    s2 = torch.exp(a2) / (torch.exp(a1) + torch.exp(a2) + 1e-10)
    f1, f2 = conv(f1 * s1, "sc4.conv2.body.0"), conv(f2 * s2, "sc4.conv2.body.0")
    x = conv(torch.cat([f1, f2], 1), "fusion", lrelu=False)
    for i in range(4):
        x = conv(x, f"EX3.{i}.body.0")
    return torch.sigmoid(conv(x, "restruction", lrelu=False))


def test_released_graph_has_the_authors_keys_and_shapes():
    model = build_model("ufa", "UFA", released=True)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == _authors_layout()
    assert count_parameters(model) == 455_111


def test_released_layers_run_in_the_documented_order_with_their_activations():
    model = build_model("ufa", "UFA", released=True).eval()
    calls: list[str] = []
    for name, m in model.named_modules():
        if not list(m.children()):
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append(_describe(name, mod)))
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    conv, lrelu = "conv3x3 64->64", "lrelu0.01"
    expected = ["conv1.0 conv3x3 3->64", f"conv1.1 {lrelu}"]
    for rb in ("rb1", "rb2", "rb3"):
        expected += [f"{rb}.body.0 {conv}", f"{rb}.body.1 {lrelu}", f"{rb}.body.2 {conv}"]
    # the attention block's shared convs run once per input
    expected += [f"sc4.conv1.body.0 {conv}", f"sc4.conv1.body.1 {lrelu}"] * 2
    expected += ["sc4.att_sp.att1.conv conv7x7 2->1 nobias", "sc4.att_sp.att2.conv conv7x7 2->1 nobias"]
    expected += [f"sc4.conv2.body.0 {conv}", f"sc4.conv2.body.1 {lrelu}"] * 2
    expected += ["fusion conv1x1 128->64"]
    for i in range(4):
        expected += [f"EX3.{i}.body.0 {conv}", f"EX3.{i}.body.1 {lrelu}"]
    expected += ["restruction conv3x3 64->3"]
    assert calls == expected


def _describe(name: str, m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        return f"{name} conv{k}x{k} {m.in_channels}->{m.out_channels}" + ("" if m.bias is not None else " nobias")
    if isinstance(m, nn.LeakyReLU):
        return f"{name} lrelu{m.negative_slope:g}"
    return f"{name} {type(m).__name__}"


@pytest.mark.parametrize("fixed", [False, True])
def test_released_forward_equals_a_restatement_of_the_facts(fixed):
    model = build_model("ufa", "UFA", released=True, fix_spatial_softmax=fixed).eval()
    w = _authors_state()
    model.load_state_dict(w)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 24, 20, generator=g), torch.rand(2, 3, 24, 20, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model(a, b), reference_forward(w, a, b, fixed), rtol=0, atol=1e-6)


def test_the_spatial_softmax_bug_changes_the_output_and_the_fix_removes_it():
    w = _authors_state()
    outs = []
    for fixed in (False, True):
        m = build_model("ufa", "UFA", released=True, fix_spatial_softmax=fixed).eval()
        m.load_state_dict(w)
        with torch.no_grad():
            outs.append(
                m(
                    torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)),
                    torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)),
                )
            )
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_channel_masks_on_inputs_with_a_known_answer():
    f1, f2 = torch.zeros(1, 2, 3, 3), torch.full((1, 2, 3, 3), math.log(3.0))
    m1, m2 = channel_masks(f1, f2)  # exp(0) = 1, exp(ln 3) = 3
    torch.testing.assert_close(m1, torch.full((1, 2, 1, 1), 0.25))
    torch.testing.assert_close(m2, torch.full((1, 2, 1, 1), 0.75))


def test_spatial_masks_reproduce_the_released_bug_and_its_fix():
    a1, a2 = torch.full((1, 1, 2, 2), math.log(2.0)), torch.full((1, 1, 2, 2), math.log(3.0))
    m1, m2 = spatial_masks(a1, a2, fixed=False)  # 2 / (3 + 3), 3 / (2 + 3)
    torch.testing.assert_close(m1, torch.full_like(a1, 1 / 3))
    torch.testing.assert_close(m2, torch.full_like(a1, 3 / 5))
    f1, _ = spatial_masks(a1, a2, fixed=True)  # 2 / (2 + 3)
    torch.testing.assert_close(f1, torch.full_like(a1, 2 / 5))


def test_no_sigmoid_on_the_spatial_attention_and_masks_are_not_normalised():
    """A 7x7 response of 5 and 0 gives exp(5)/(1+1) = 74, a mask far above 1: the released code
    applies no sigmoid before its exp-normalisation."""
    m1, _ = spatial_masks(torch.full((1, 1, 1, 1), 5.0), torch.zeros(1, 1, 1, 1), fixed=False)
    assert m1.item() == pytest.approx(math.exp(5) / 2, rel=1e-6)


def test_released_resblocks_have_no_skip_connection():
    model = build_model("ufa", "UFA", released=True)
    x = torch.rand(1, 64, 8, 8)
    body = model.rb1.body
    with torch.no_grad():
        torch.testing.assert_close(model.rb1(x), body[2](F.leaky_relu(body[0](x), 0.01)))


def test_released_initialisation_is_xavier_normal():
    torch.manual_seed(0)
    w = build_model("ufa", "UFA", released=True).rb1.body[0].weight
    fan = 64 * 9
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (fan + fan)), rel=0.05)


def test_fix_option_needs_the_released_graph():
    with pytest.raises(ConfigError, match="train.options.fix_spatial_softmax"):
        build_model("ufa", "UFA", fix_spatial_softmax=True)
    with pytest.raises(ConfigError, match="train.options.bogus: not an option of ufa"):
        build_model("ufa", "UFA", released=True, bogus=1)


def test_released_loss_uses_a_zero_padded_ssim_window():
    from fusion.losses import ssim, ssim_zero_padded
    from fusion.models import build_loss

    class Cfg:
        options, released = {"lambda_l1": 0.2}, True

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    assert build_loss("ufa", Cfg()).ssim is ssim_zero_padded
    assert ssim_zero_padded(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert abs(ssim_zero_padded(x, y).item() - ssim(x, y).item()) > 1e-4  # the border differs
