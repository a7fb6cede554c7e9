"""`fusion import-weights crossfuse IR_AE VI_AE FUSION`: the authors' three state dicts, built here
from the key names and shapes of their released files (shared/reference/official), land in
the released CrossFuse tensor for tensor; bad files are refused with their name."""

from __future__ import annotations

import json
import re

import pytest
import torch

from fusion.errors import ConfigError, DataError
from fusion.models import MODELS
from fusion.weights import convert, import_weights
from fusion.weights.crossfuse import autoencoder_layout, fusion_layout
from tests.conftest import SHARED

KEYS_JSON = SHARED / "reference/official/official_state_dict_keys.json"
AE_SECTION = "crossfuse_autoencoder_state_dict (one file per modality: ir, vi)"


@pytest.fixture(scope="module")
def layouts():
    if not KEYS_JSON.is_file():
        pytest.skip(f"{KEYS_JSON} not found")
    ref = json.loads(KEYS_JSON.read_text())
    return {"ae": ref[AE_SECTION], **{d: ref[f"crossfuse_transfuse_state_dict_depth{d}"] for d in (1, 2, 3)}}


def _authors(layout: dict, seed: int) -> dict[str, torch.Tensor]:
    """Distinctive values: every tensor random (counters for num_batches_tracked), variances positive,
    the fixed 3x3 means as the authors' code sets them."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (k, shape) in enumerate(layout.items()):
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(1000 * seed + i)
        elif k.startswith("decoder_fusion.weight."):
            out[k] = torch.full(shape, 1 / 9)
        else:
            t = torch.randn(shape, generator=g)
            out[k] = t.abs() + 0.5 if k.endswith("running_var") else t
    return out


def _save(tmp_path, name, state):
    path = tmp_path / name
    torch.save(state, path)
    return path


def _files(tmp_path, layouts, depth, fusion=None):
    ir = _save(tmp_path, "auto_encoder_epoch_4_ir.model", _authors(layouts["ae"], 1))
    vi = _save(tmp_path, "auto_encoder_epoch_4_vi.model", _authors(layouts["ae"], 2))
    fu = _save(
        tmp_path, f"fusetrans_s{depth}_c{depth}.model", fusion if fusion is not None else _authors(layouts[depth], 3)
    )
    return ir, vi, fu


# Where each authors' tensor belongs, written from the released network/*.py independently of the
# importer's tables: (authors' key pattern, project key template).
RULES_AE = [
    (r"fea_encoder1\.conv1\.conv2d\.0\.(\w+)", "encoder.shallow.{0}"),
    (r"fea_encoder1\.dense_blocks\.0\.dense_conv(\d)\.conv2d\.0\.(\w+)", "encoder.dense1.convs.{0}.{1}"),
    (r"fea_encoder1\.dense_blocks\.2\.dense_conv(\d)\.conv2d\.0\.(\w+)", "encoder.dense2.convs.{0}.{1}"),
    (r"fea_encoder1\.dense_blocks\.0\.adjust_conv\.conv2d\.0\.(\w+)", "encoder.dense1.adjust.{0}"),
    (r"fea_encoder1\.dense_blocks\.2\.adjust_conv\.conv2d\.0\.(\w+)", "encoder.dense2.adjust.{0}"),
    (r"recon_decoder1\.conv1\.conv2d\.0\.(\w+)", "decoder.c1.{0}"),
    (r"recon_decoder1\.conv_block\.0\.conv2d\.0\.(\w+)", "decoder.c2.{0}"),
    (r"recon_decoder1\.conv_block\.2\.conv2d\.0\.(\w+)", "decoder.c3.{0}"),
    (r"recon_decoder1\.conv_last\.conv2d\.0\.(\w+)", "decoder.last.{0}"),
]
_PART = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attn.proj",
    "attn.qkv": "attn.qkv",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
    "attn.q_linear": "attn.q",
    "attn.k_linear": "attn.k",
    "attn.v_linear": "attn.v",
}
_SA_MOD = {"1": "ir", "2": "vi"}  # self_atten1(x1 = ir), self_atten2(x2 = vi)
_CA_MOD = {"1": "vi", "2": "ir"}  # cross_atten1(ir, vi): query IR, key/value/residual VI
_DEC = {"conv1": "c1", "conv_block.0": "c2", "conv_block.2": "c3", "conv_block.4": "c4", "conv_last": "last"}


def _project_key(authors_key: str, modality: str | None) -> str | None:
    if modality is not None:
        for pattern, template in RULES_AE:
            if m := re.fullmatch(pattern, authors_key):
                return f"encoders.{modality}." + template.format(*m.groups())
        return None
    if m := re.fullmatch(
        r"cross_atten_block\.self_atten_block(\d)\.self_atten(\d)\.blocks\.(\d)\.(.+)\.(\w+)", authors_key
    ):
        stage, mod, i, part, p = m.groups()
        return f"fusion.sa{stage}.{_SA_MOD[mod]}.{i}.{_PART[part]}.{p}"
    if m := re.fullmatch(
        r"cross_atten_block\.cross_atten_block\.cross_atten(\d)\.blocks\.(\d)\.(.+)\.(\w+)", authors_key
    ):
        mod, i, part, p = m.groups()
        return None if part == "attn.qkv" else f"fusion.ca.{_CA_MOD[mod]}.{i}.{_PART[part]}.{p}"
    if m := re.fullmatch(r"cross_atten_block\.cross_atten_block\.cross_atten(\d)\.norm\.(\w+)", authors_key):
        return f"fusion.ca_norm.{_CA_MOD[m.group(1)]}.{m.group(2)}"
    if m := re.fullmatch(r"decoder_fusion\.(conv1|conv_block\.\d|conv_last)\.conv2d\.(\d)\.(\w+)", authors_key):
        return f"decoder.{_DEC[m.group(1)]}.{m.group(2)}.{m.group(3)}"
    return None


EXPECTED_IGNORED = re.compile(
    r"cross_atten_block\.self_atten_block\d\.self_atten\d\.norm\.\w+"
    r"|cross_atten_block\.cross_atten_block\.cross_atten\d\.blocks\.\d\.attn\.qkv\.\w+"
    r"|conv_gra\.weight|decoder_fusion\.weight\.conv_(sh|de)\.weight"
)


def test_expected_layouts_are_the_authors_files(layouts):
    assert autoencoder_layout() == layouts["ae"]
    for depth in (1, 2, 3):
        assert fusion_layout(depth) == layouts[depth]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_every_authors_tensor_lands_where_it_belongs_and_the_depth_is_inferred(tmp_path, layouts, depth):
    files = _files(tmp_path, layouts, depth)
    sources = {"ir": torch.load(files[0]), "vi": torch.load(files[1]), None: torch.load(files[2])}
    result, net = convert("crossfuse", files)
    assert result.variant == f"s{depth}-c{depth}" and result.variant in MODELS["crossfuse"].variants
    assert (result.stage, result.task, result.model_options) == ("fusion", "ir-vis", {"released": True})
    ours = net.state_dict()
    expected = {}
    for modality, state in sources.items():
        for k in state:
            target = _project_key(k, modality)
            if target is None:
                assert modality is None and EXPECTED_IGNORED.fullmatch(k), f"no rule for {k}"
                assert k in result.ignored, f"{k}: neither used nor reported as ignored"
            else:
                expected[target] = (modality, k)
    assert set(expected) == set(ours), "every parameter and buffer of the model comes from an authors' tensor"
    for target, (modality, k) in expected.items():
        assert torch.equal(ours[target], sources[modality][k].to(ours[target].dtype)), f"{k} -> {target}"
    assert sorted(result.ignored) == sorted(k for k in sources[None] if EXPECTED_IGNORED.fullmatch(k))


def test_checkpoint_loads_and_fuses_through_the_project(tmp_path, layouts):
    from fusion.checkpoint import model_from_checkpoint
    from fusion.inference import load_model

    files = _files(tmp_path, layouts, 1)
    out, result = import_weights("crossfuse", files, tmp_path / "authors.pt")
    model, payload = model_from_checkpoint(out)
    assert payload["stage"] == "fusion" and payload["variant"] == "s1-c1" and payload["source"] == "authors"
    assert payload["ignored_source_tensors"] == result.ignored and len(payload["source_files"]) == 3
    assert model.released and model.optimizer_overrides == {"weight_decay": 0.9}
    fused_model, info = load_model(str(out))
    g = torch.Generator().manual_seed(0)
    ir, vi = torch.rand(1, 1, 40, 44, generator=g), torch.rand(1, 1, 40, 44, generator=g)
    with torch.no_grad():
        fused = fused_model(ir, vi)
    assert fused.shape == (1, 1, 40, 44) and torch.isfinite(fused).all()
    assert fused.min() >= 0 and fused.max() <= 1 + 1e-6
    with pytest.raises(ConfigError, match="already exists"):
        import_weights("crossfuse", files, out)


def _expect_error(files, match):
    with pytest.raises(DataError, match=match):
        convert("crossfuse", files)


def test_bad_fusion_files_are_refused_naming_the_file_and_keys(tmp_path, layouts):
    good = _authors(layouts[1], 3)
    key = "decoder_fusion.conv1.conv2d.0.weight"
    _expect_error(
        _files(tmp_path, layouts, 1, {k: v for k, v in good.items() if k != key}),
        rf"fusetrans_s1_c1.model: missing 1 .* key\(s\): {re.escape(key)}",
    )
    _expect_error(
        _files(tmp_path, layouts, 1, {**good, "extra.weight": torch.zeros(3)}),
        r"fusetrans_s1_c1.model: 1 key\(s\) that the .* does not have: extra.weight",
    )
    _expect_error(
        _files(tmp_path, layouts, 1, {**good, key: torch.zeros(64, 128, 1, 1)}),
        rf"fusetrans_s1_c1.model: wrong shape: {re.escape(key)} \[64, 128, 1, 1\]",
    )
    bad_mean = {**good, "decoder_fusion.weight.conv_de.weight": torch.rand(128, 128, 3, 3)}
    _expect_error(_files(tmp_path, layouts, 1, bad_mean), r"fusetrans_s1_c1.model: decoder_fusion.weight.conv_de")
    # two SA blocks per stage with one CA block: no such network
    mixed = {**_authors(layouts[2], 3)}
    mixed = {k: v for k, v in mixed.items() if not re.search(r"cross_atten\d\.blocks\.1\.", k)}
    _expect_error(
        _files(tmp_path, layouts, 1, mixed),
        r"fusetrans_s1_c1.model: \d+ key\(s\) that the .*self_atten_block1.self_atten1.blocks.1",
    )


def test_a_file_in_the_wrong_place_is_named(tmp_path, layouts):
    ir, vi, fu = _files(tmp_path, layouts, 1)
    _expect_error([ir, vi, ir], r"auto_encoder_epoch_4_ir.model: looks like a CrossFuse auto-encoder file")
    _expect_error([fu, vi, ir], r"fusetrans_s1_c1.model: looks like the CrossFuse FUSION file")
    _expect_error([vi, ir, fu], r"auto_encoder_epoch_4_vi.model: named as the VI auto-encoder but given as IR_AE")
    ufa = _save(tmp_path, "ufa.pth", {"conv1.weight": torch.zeros(64, 3, 3, 3)})
    _expect_error([ir, vi, ufa], r"ufa.pth: none of the .* keys found")
    with pytest.raises(ConfigError, match="takes 3 file"):
        convert("crossfuse", [ir, vi])


def test_truncated_and_code_carrying_files_are_refused_without_running_anything(tmp_path, layouts):
    ir, vi, fu = _files(tmp_path, layouts, 1)
    data = fu.read_bytes()
    (tmp_path / "truncated.model").write_bytes(data[: len(data) // 2])
    _expect_error([ir, vi, tmp_path / "truncated.model"], r"truncated.model: not a readable PyTorch state dict")

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"fea_encoder1.conv1.conv2d.0.weight": Evil()}, tmp_path / "evil.model")
    _expect_error([tmp_path / "evil.model", vi, fu], r"evil.model: not a readable PyTorch state dict")
    assert not marker.exists(), "the pickle's code ran"
