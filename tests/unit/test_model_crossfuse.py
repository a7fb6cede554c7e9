"""Model behaviour: CrossFuse shapes, sizes, parameter counts, CAM ablations, stages and freezing."""

from __future__ import annotations

import functools

import pytest
import torch

from fusion.models import MODELS, build_model, count_parameters
from fusion.models.crossfuse import (
    Attention,
    CrossAttentionMechanism,
    CrossFuse,
    TransformerBlock,
    _from_tokens,
    pad_to_multiple,
    skip_weights,
)

VARIANTS = list(MODELS["crossfuse"].variants)


def conv(cin, cout, k=3):
    return cin * cout * k * k + cout


def dense(cin):  # 3 layers, growth 64, 3x3 to 128
    return sum(conv(cin + 64 * i, 64) for i in range(3)) + conv(cin + 192, 128)


ENCODER = conv(1, 32) + dense(32) + dense(128)
RECON = conv(128, 64) + conv(64, 64) + conv(64, 32) + conv(32, 1, 1)
DECODER = conv(128, 64) + 128 + conv(64, 64) + 128 + conv(64, 32) + 64 + conv(32, 32) + 64 + conv(32, 1, 1)
D = 512
BLOCK = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)  # norms, qkv, proj, mlp


def cam(depth):  # per modality: 2 SA stages + 1 CA stack, each `depth` blocks; one final CA norm per branch
    return 2 * 3 * depth * BLOCK + 2 * 2 * D


F_CNN = conv(256, 128) + 3 * conv(128, 128)
F_DENSE = dense(256) + conv(128, 128)
TWO_STAGE = 2 * (ENCODER + RECON) + DECODER
EXPECTED = {
    "full": TWO_STAGE + cam(1),
    "s1-c1": TWO_STAGE + cam(1),
    "s2-c2": TWO_STAGE + cam(2),
    "s3-c3": TWO_STAGE + cam(3),
    "no-resoftmax": TWO_STAGE + cam(1),
    "no-shift": TWO_STAGE + cam(1),
    "F_CNN": TWO_STAGE + F_CNN,
    "F_Dense": TWO_STAGE + F_DENSE,
    "one-stage": 2 * ENCODER + DECODER + cam(1),
}


@functools.cache
def _small(variant):
    """Eval-mode model with 4-pixel CAM windows, shared by read-only tests (building costs more than running)."""
    return CrossFuse(variant, window=4).eval()


def _pair(size, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *size, generator=g), torch.rand(batch, 1, *size, generator=g)


def test_variants_and_paper_names():
    assert VARIANTS == ["full", "s1-c1", "s2-c2", "s3-c3", "no-resoftmax", "no-shift", "F_CNN", "F_Dense", "one-stage"]
    assert MODELS["crossfuse"].variants["no-resoftmax"] == "w/o re-softmax"
    assert MODELS["crossfuse"].task == "ir-vis"


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_hand_counts(variant):
    assert count_parameters(_small(variant)) == EXPECTED[variant]  # the window size adds no parameters


def test_pinned_totals_and_differences():
    assert EXPECTED["full"] == 21_564_259
    assert ENCODER == 1_125_312 and BLOCK == 3_152_384
    assert EXPECTED["s2-c2"] - EXPECTED["s1-c1"] == 6 * BLOCK  # 2 SA + 1 CA block per modality
    assert EXPECTED["full"] - EXPECTED["one-stage"] == 2 * RECON  # no stage-1 decoders
    assert count_parameters(build_model("crossfuse", "full", released=True)) == EXPECTED["full"] + 2  # BN on 1x1


def test_registry_model_keeps_odd_sizes_and_unit_range():
    # 37x53: padded to 40x56 for the encoders, deep map 5x7 padded to one 32x32 window
    model = build_model("crossfuse", "full").eval()
    assert count_parameters(model) == EXPECTED["full"]
    with torch.no_grad():
        out = model(*_pair((37, 53)))
    assert out.shape == (1, 1, 37, 53)
    assert out.min() >= 0 and out.max() <= 1


# Smaller windows keep the CAM cheap on CPU; parameter shapes do not depend on the window.
@pytest.mark.parametrize("variant", VARIANTS)
def test_any_size_gives_same_size_output_in_unit_range(variant):
    for size in [(13, 21), (1, 9)]:
        with torch.no_grad():
            out = _small(variant)(*_pair(size, batch=2))
        assert out.shape == (2, 1, *size)
        assert out.min() >= 0 and out.max() <= 1


def test_multi_window_maps_and_released_output():
    # window 4 on 40x24 -> deep 5x3 -> padded to 8x4: two windows
    model = _small("full")
    released = CrossFuse("full", window=4, released=True).eval()
    with torch.no_grad():
        out = model(*_pair((40, 24)))
        rel = released(*_pair((40, 24)))
    assert out.shape == rel.shape == (1, 1, 40, 24)
    assert out.min() >= 0 and out.max() <= 1
    assert rel.min().item() == pytest.approx(0.0, abs=1e-6) and rel.max().item() == pytest.approx(1.0, abs=1e-4)


def test_encoder_gives_shallow_full_resolution_and_deep_one_eighth_features():
    model = _small("full")
    sh, de = model.encoders["ir"].encoder(torch.rand(1, 1, 32, 24))
    assert sh.shape == (1, 32, 32, 24)
    assert de.shape == (1, 128, 4, 3)
    assert model.encoders["ir"].encoder is not model.encoders["vi"].encoder


@pytest.mark.parametrize("size", [(37, 53), (3, 5)])
def test_autoencode_reconstructs_at_input_size(size):
    model = _small("full")
    for m in ("ir", "vi"):
        with torch.no_grad():
            assert model.autoencode(torch.rand(1, 1, *size), m).shape == (1, 1, *size)
    with pytest.raises(ValueError, match="modality"):
        model.autoencode(torch.rand(1, 1, 8, 8), "rgb")
    with pytest.raises(RuntimeError, match="one-stage"):
        _small("one-stage").autoencode(torch.rand(1, 1, 8, 8), "ir")


def test_padding_reaches_the_needed_multiple():
    assert pad_to_multiple(torch.rand(1, 1, 37, 53), 8).shape[-2:] == (40, 56)
    assert pad_to_multiple(torch.rand(1, 1, 3, 5), 8, minimum=16).shape[-2:] == (16, 16)  # replicate fallback
    x = torch.rand(1, 1, 32, 64)
    assert pad_to_multiple(x, 32) is x


# ---------------------------------------------------------------- CAM ablations


def _manual_attention(attn: Attention, x, query, sign):
    q = attn.q(query) if attn.cross else attn.qkv(x).chunk(3, -1)[0]
    k, v = (attn.k(x), attn.v(x)) if attn.cross else attn.qkv(x).chunk(3, -1)[1:]
    b, n, d = x.shape
    h = attn.heads

    def split(t):
        return t.reshape(b, -1, h, d // h).transpose(1, 2)

    logits = split(q) @ split(k).transpose(-1, -2) * (d // h) ** -0.5
    out = torch.softmax(sign * logits, dim=-1) @ split(v)
    return attn.proj(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("reverse,sign", [(True, -1.0), (False, 1.0)])
def test_cross_attention_uses_re_softmax_only_when_asked(reverse, sign):
    torch.manual_seed(0)
    attn = Attention(16, heads=4, cross=True, reverse=reverse)
    x, query = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    torch.testing.assert_close(attn(x, query), _manual_attention(attn, x, query, sign), rtol=1e-4, atol=1e-5)


def test_no_resoftmax_variant_has_plain_softmax_everywhere_and_full_has_re_softmax_in_ca_only():
    def flags(variant):
        cam_ = _small(variant).fusion
        return (
            {a.reverse for s in (cam_.sa1, cam_.sa2) for m in s.values() for blk in m for a in [blk.attn]},
            {blk.attn.reverse for m in cam_.ca.values() for blk in m},
        )

    assert flags("full") == ({False}, {True})
    assert flags("no-resoftmax") == ({False}, {False})


def _roll_spy(monkeypatch):
    calls = []
    real = torch.roll

    def spy(*args, **kwargs):
        calls.append(kwargs.get("shifts", args[1] if len(args) > 1 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "roll", spy)
    return calls


@pytest.mark.parametrize(
    "variant,released,training,rolls",
    [
        ("full", False, True, 4),  # shift + unshift, per modality
        ("full", False, False, 4),
        ("no-shift", False, False, 0),
        ("no-shift", False, True, 0),
        ("full", True, True, 0),  # released code: shift off in training
        ("full", True, False, 4),
    ],
)
def test_shift_rolls_by_half_a_window_only_where_the_variant_says(monkeypatch, variant, released, training, rolls):
    model = CrossFuse(variant, window=4, released=released).train(training)
    calls = _roll_spy(monkeypatch)
    with torch.no_grad():
        model(*_pair((16, 16)))
    assert len(calls) == rolls
    assert all(abs(s[0]) == 2 and abs(s[1]) == 2 for s in calls)  # window // 2 feature pixels


def _small_cam(**kw):
    torch.manual_seed(0)
    return CrossAttentionMechanism(channels=8, patch=2, window=4, heads=2, **kw).eval()


def test_roll_within_one_window_cannot_change_attention_but_a_global_roll_does():
    ir, vi = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)  # 2 x 2 windows of 4
    plain, inside, across = _small_cam(shift=False), _small_cam(shift_within_window=True), _small_cam()
    inside.load_state_dict(plain.state_dict())
    across.load_state_dict(plain.state_dict())
    with torch.no_grad():
        ref = plain(ir, vi)
        torch.testing.assert_close(inside(ir, vi), ref, rtol=1e-4, atol=1e-5)  # token permutation only
        assert not torch.allclose(across(ir, vi), ref, atol=1e-3)
        one_window = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
        torch.testing.assert_close(across(*one_window), plain(*one_window), rtol=1e-4, atol=1e-5)


def test_cam_fuses_by_summing_the_two_cross_attention_branches():
    cam_ = _small_cam()
    ir, vi = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    branches = {}
    for m in ("ir", "vi"):
        cam_.ca_norm[m].register_forward_hook(lambda mod, inp, out, m=m: branches.update({m: out}))
    with torch.no_grad():
        fused = cam_(ir, vi)
    torch.testing.assert_close(fused, _from_tokens(branches["ir"] + branches["vi"], 2, 8, 4))


def test_cnn_and_dense_ablations_have_no_attention():
    for v in ("F_CNN", "F_Dense"):
        assert not any(isinstance(m, (TransformerBlock, Attention)) for m in _small(v).modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in _small("F_CNN").fusion.modules()) == 4


# ---------------------------------------------------------------- stages, freezing, gradients


def test_stage_metadata():
    assert _small("full").stages == ("autoencoder", "fusion")
    assert _small("F_CNN").stages == ("autoencoder", "fusion")
    one = _small("one-stage")
    assert one.stages == ("joint",) and not one.two_stage
    with pytest.raises(ValueError, match="trains stages"):
        one.parameters_for("fusion")


def _grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _names(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("variant", ["full", "no-resoftmax", "F_CNN", "F_Dense"])
def test_stage_two_gradient_reaches_fusion_and_decoder_but_not_frozen_encoders(variant):
    torch.manual_seed(0)
    model = CrossFuse(variant, window=4).freeze_encoders().train()
    assert not model.encoders.training
    model(*_pair((16, 16), batch=2)).mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert _grads(model) == trainable == _names(model, model.parameters_for("fusion"))
    assert not any(n.startswith("encoders.") for n in trainable)
    assert all(p.grad is None for p in model.encoders.parameters())


def test_stage_one_gradient_reaches_one_auto_encoder():
    model = CrossFuse("full", window=4)
    model.autoencode(torch.rand(2, 1, 16, 16), "vi").mean().backward()
    got = _grads(model)
    assert got == {n for n in _names(model, model.parameters_for("autoencoder")) if n.startswith("encoders.vi.")}


def test_one_stage_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = CrossFuse("one-stage", window=4).train()
    model(*_pair((16, 16), batch=2)).mean().backward()
    assert _grads(model) == {n for n, _ in model.named_parameters()} == _names(model, model.parameters_for("joint"))


def test_output_clamp_is_straight_through():
    model = CrossFuse("F_CNN").train()
    x = model._output(torch.tensor([-0.5, 0.5, 1.5], requires_grad=True))
    assert x.tolist() == [0.0, 0.5, 1.0]
    x.sum().backward()


def test_skip_weights_are_local_mean_ratios():
    a, b = torch.full((1, 2, 6, 6), 3.0), torch.full((1, 2, 6, 6), 1.0)
    w_a, w_b = skip_weights(a, b, "deep")
    torch.testing.assert_close(w_a[..., 1:-1, 1:-1], torch.full((1, 2, 4, 4), 0.75), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_a + w_b, torch.ones_like(w_a), rtol=1e-5, atol=1e-5)
    # shallow weights follow detail |x - mean|: a flat map has none, a textured one takes the weight
    tex = torch.zeros(1, 1, 6, 6)
    tex[..., ::2, ::2] = 1.0
    _, w_tex = skip_weights(torch.ones(1, 1, 6, 6) * 0.5, tex, "shallow")
    assert (w_tex[..., 1:-1, 1:-1] > 0.99).all()
    assert not w_tex.requires_grad


def test_errors():
    model = _small("F_CNN")
    with pytest.raises(ValueError, match="exactly 2"):
        model(*_pair((16, 16)), torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="gray"):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------- released mode and its fixes


def test_released_options_are_registered_and_validated():
    from fusion.errors import ConfigError
    from fusion.models.crossfuse import RELEASED_OPTIONS

    assert (
        set(MODELS["crossfuse"].options)
        == set(RELEASED_OPTIONS)
        == {"fix_ca_chaining", "fix_odd_sizes", "fix_weight_decay", "fix_ms_ssim"}
    )
    released = CrossFuse("s2-c2", window=4, released=True)
    assert released.fusion.released_chaining and released.released_sizing
    assert released.optimizer_overrides == {"weight_decay": 0.9}
    fixed = CrossFuse("s2-c2", window=4, released=True, fix_ca_chaining=True, fix_odd_sizes=True, fix_weight_decay=True)
    assert not fixed.fusion.released_chaining and not fixed.released_sizing and fixed.optimizer_overrides == {}
    paper = _small("s2-c2")
    assert not paper.fusion.released_chaining and not paper.released_sizing and paper.optimizer_overrides == {}
    with pytest.raises(ConfigError, match="train.options.fix_ca_chaining: fixes a bug of the released code"):
        build_model("crossfuse", "s2-c2", fix_ca_chaining=True)
    with pytest.raises(ConfigError, match="train.options.fix_odd_sizes: expected true or false"):
        build_model("crossfuse", "full", released=True, fix_odd_sizes="yes")
    with pytest.raises(ConfigError, match="train.options.bogus: not an option of crossfuse"):
        build_model("crossfuse", "full", released=True, bogus=True)


def _randomise_norms(module, seed=1):
    """Trained LayerNorms are not the identity; with gain 1 and bias 0 the two chainings nearly agree."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data = 1 + 0.5 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.5 * torch.randn(m.bias.shape, generator=g)


def _authors_cross_module(blocks, final_norm, x1, x2):
    """The released `cross_atten_module.forward` with its `Block.forward(cross=True)`, line by line:
    the list [query, key, value] goes from block to block."""
    x = [x1, x2, x2]
    for blk in blocks:
        x_ = [blk.norm1(t) for t in x]
        a = blk.attn
        b, n, d = x_[0].shape
        h = a.heads

        def split(t, b=b, n=n, h=h, d=d):
            return t.reshape(b, n, h, d // h).permute(0, 2, 1, 3)

        q, k, v = split(a.q(x_[0])), split(a.k(x_[1])), split(a.v(x_[2]))
        dp = -1 * ((q @ k.transpose(-2, -1)) * (d // h) ** -0.5)
        out = x[2] + a.proj((dp.softmax(dim=-1) @ v).transpose(1, 2).flatten(2))
        out = out + blk.mlp(blk.norm2(out))
        x = [x_[0], out, out]
        x[2] = final_norm(x[2])
    return x[2]


@pytest.mark.parametrize("depth", [2, 3])
def test_released_chaining_of_stacked_cross_attention_blocks_is_the_authors(depth):
    cam_ = _small_cam(depth=depth, released_chaining=True)
    _randomise_norms(cam_)
    ir, vi = torch.randn(2, 4, 32), torch.randn(2, 4, 32)  # tokens: 2 windows x 4 tokens x (8 x 2 x 2)
    with torch.no_grad():
        # cross_atten1(ir, vi): query IR, key/value VI -> the project's VI branch; cross_atten2 -> IR
        want_vi = _authors_cross_module(cam_.ca["vi"], cam_.ca_norm["vi"], ir, vi)
        want_ir = _authors_cross_module(cam_.ca["ir"], cam_.ca_norm["ir"], vi, ir)
        torch.testing.assert_close(cam_.cross_branch(vi, ir, "vi"), want_vi, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cam_.cross_branch(ir, vi, "ir"), want_ir, rtol=1e-4, atol=1e-5)
        cam_.released_chaining = False  # the paper chaining (train.options.fix_ca_chaining) is another network
        assert not torch.allclose(cam_.cross_branch(vi, ir, "vi"), want_vi, atol=1e-3)


def test_one_block_chains_the_same_either_way():
    cam_ = _small_cam(released_chaining=True)
    _randomise_norms(cam_)
    ir, vi = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    with torch.no_grad():
        want = _authors_cross_module(cam_.ca["vi"], cam_.ca_norm["vi"], ir, vi)
        torch.testing.assert_close(cam_.cross_branch(vi, ir, "vi"), want, rtol=1e-4, atol=1e-5)
        cam_.released_chaining = False
        torch.testing.assert_close(cam_.cross_branch(vi, ir, "vi"), want, rtol=1e-4, atol=1e-5)


def test_centre_pad_puts_the_odd_pixel_at_the_bottom_right():
    from fusion.models.crossfuse import centre_pad

    x = torch.arange(2 * 6 * 5, dtype=torch.float32).reshape(1, 2, 6, 5)
    torch.testing.assert_close(centre_pad(x, (9, 8)), torch.nn.functional.pad(x, (1, 2, 1, 2), mode="reflect"))
    torch.testing.assert_close(centre_pad(x, (10, 8)), torch.nn.functional.pad(x, (1, 2, 2, 2), mode="reflect"))
    assert centre_pad(x, (6, 5)).shape == x.shape


def test_released_sizing_floors_in_pooling_and_centre_pads_the_decoder_output():
    torch.manual_seed(0)
    model = CrossFuse("full", window=4, released=True).eval()
    ir, vi = _pair((100, 76))
    seen = {}
    model.decoder.c4.register_forward_hook(lambda mod, inp, out: seen.update(c4=out.shape[-2:]))
    with torch.no_grad():
        out = model(ir, vi)
        assert out.shape == (1, 1, 100, 76) and seen["c4"] == (96, 72)  # 100 // 8 * 8, 76 // 8 * 8
        # hand reference: no input padding, deep maps 12 x 9, decoder output reflect-padded by 2 on every side
        enc = {m: model.encoders[m].encoder(x) for m, x in (("ir", ir), ("vi", vi))}
        sh, de = {m: e[0] for m, e in enc.items()}, {m: e[1] for m, e in enc.items()}
        assert de["ir"].shape[-2:] == (12, 9)
        fused = model.fusion(pad_to_multiple(de["ir"], 4), pad_to_multiple(de["vi"], 4))[..., :12, :9]
        dec = model.decoder
        w_ir, w_vi = skip_weights(de["ir"], de["vi"], "deep", sum_channels=True)
        x = fused + w_ir * de["ir"] + w_vi * de["vi"]
        x = dec.c4(dec.up(dec.c3(dec.up(dec.c2(dec.up(dec.c1(x)))))))
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
        s_ir, s_vi = skip_weights(sh["ir"], sh["vi"], "shallow", sum_channels=True)
        ref = dec.last(x + 0.5 * s_ir * sh["ir"] + s_vi * sh["vi"])
        torch.testing.assert_close(out, model._output(ref), rtol=1e-4, atol=1e-5)
        # the fix pads the input instead: a different image
        fixed = CrossFuse("full", window=4, released=True, fix_odd_sizes=True).eval()
        fixed.load_state_dict(model.state_dict())
        other = fixed(ir, vi)
        assert other.shape == out.shape and not torch.allclose(other, out, atol=1e-3)
        # below 16 px the released code fails: padded to 16, cropped back
        assert model(*_pair((5, 13))).shape == (1, 1, 5, 13)
