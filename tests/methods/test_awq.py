"""AWQ: conformance, exact folding, scale and clip search beating RTN, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lowbit.calibrate import get_blocks
from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant
from lowbit.methods.awq_search import apply_clip, can_fold, fake_quant, fold_scales, search_clip, search_scale
from lowbit.models import LoadedModel, load_model
from lowbit.schemes import parse_scheme
from tests.conformance import MethodConformance, weights


class TestAWQConformance(MethodConformance):
    variants = ["awq:w4g64", "awq:w3g64+duo+noclip"]
    needs_calib = True


class TestAWQOnGPT2(MethodConformance):
    variants = ["awq:w4g32asym"]
    model = "tiny-gpt2"
    needs_calib = True


def mha_llama() -> LoadedModel:
    """tiny-llama with as many KV heads as query heads, so v_proj → o_proj folds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lowbit.models.arch import LLAMA

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=257, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return LoadedModel(model, None, "mha-llama", LLAMA)


def run(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert", "mha-llama"])
def test_folding_leaves_the_float_model_unchanged(name: str) -> None:
    loaded = mha_llama() if name == "mha-llama" else load_model(name)
    ids = torch.randint(0, 250, (2, 24), generator=torch.Generator().manual_seed(0))
    before = run(loaded.model, ids)
    g = torch.Generator().manual_seed(1)
    folded = []
    for block in get_blocks(loaded):
        for grp in loaded.arch.groups:
            prev = block.get_submodule(grp.prev) if grp.prev else None
            consumers = [block.get_submodule(n) for n in grp.linears]
            if can_fold(prev, consumers):
                s = torch.rand(consumers[0].in_features, generator=g) * 4 + 0.25
                fold_scales(prev, consumers, s)
                folded.append(grp.prev)
    assert folded  # every family has something to fold
    if name == "tiny-llama":  # GQA: v_proj emits fewer channels than o_proj reads
        assert "self_attn.v_proj" not in folded
    if name == "mha-llama":
        assert "self_attn.v_proj" in folded
    if name == "tiny-bert":  # post-norm: only value → output.dense
        assert set(folded) == {"attention.self.value"}
    after = run(loaded.model, ids)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def salient_inputs(n: int, i: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, i, generator=g)
    x[:, [3, 17, 40, 77]] *= 25.0  # a few salient channels, as in LLM activations
    return x


def test_awq_scaling_beats_rtn_on_a_layer_with_salient_channels() -> None:
    scheme = parse_scheme("w4g64")
    lin = nn.Linear(128, 96, bias=False)
    lin.weight.data = weights((96, 128), seed=2, outlier=False)
    x, x_test = salient_inputs(1024, 128, 0), salient_inputs(1024, 128, 1)
    ref = lin(x).detach()

    def score() -> float:
        return float((lin(x) - ref).pow(2).mean())

    w = lin.weight.detach().clone()
    s, alpha, _ = search_scale([lin], x.abs().mean(0), scheme, score)
    assert torch.equal(lin.weight, w)  # restored after the search
    assert alpha > 0
    rtn_err = (x_test @ (fake_quant(w, scheme) - w).t()).norm()
    awq_w = fake_quant(w * s, scheme)  # the layer after folding computes (x / s) @ Q(W·s)ᵀ
    awq_err = ((x_test / s) @ awq_w.t() - x_test @ w.t()).norm()
    assert awq_err < 0.7 * rtn_err


def test_clip_search_never_increases_group_output_error() -> None:
    scheme = parse_scheme("w3g32")
    w = weights((64, 128), seed=3)
    x = torch.randn(512, 128, generator=torch.Generator().manual_seed(3))
    bounds = search_clip(w, x, scheme)
    assert bounds.shape == (64, 4)
    org = w.abs().reshape(64, 4, 32).amax(-1)
    assert torch.all(bounds <= org) and torch.all(bounds >= org * 0.55)
    assert torch.any(bounds < org)  # heavy-tailed weights: some groups clip

    def group_err(q: torch.Tensor) -> torch.Tensor:
        d = (q - w).reshape(64, 4, 32)
        return torch.einsum("ogk,ngk->ong", d, x.reshape(512, 4, 32)).pow(2).mean(1)

    clipped = group_err(fake_quant(apply_clip(w, bounds, 32), scheme))
    plain = group_err(fake_quant(w, scheme))
    assert torch.all(clipped <= plain * (1 + 1e-5))
    assert clipped.sum() < plain.sum()


def test_model_awq_beats_rtn_when_activations_have_salient_channels() -> None:
    from lowbit.data import prepare_data

    def salient_model() -> LoadedModel:
        loaded = load_model("tiny-llama")
        for block in get_blocks(loaded):
            for norm in (block.input_layernorm, block.post_attention_layernorm):
                norm.weight.data[[5, 60, 130, 200]] *= 12.0
        return loaded

    ref = salient_model()
    data = prepare_data(ref.tokenizer, calib_samples=8, eval_tokens=256, window_tokens=128)
    a = run(ref.model, data.eval.windows)
    errs = {}
    for text in ("rtn:w4g64", "awq:w4g64"):
        m = salient_model()
        res = quantize_model(m, resolve_variant(text), data.calib)
        errs[text] = float((run(m.model, data.eval.windows) - a).norm() / a.norm())
        if text.startswith("awq"):
            assert res.calib_seconds > 0
            assert "self_attn.v_proj → self_attn.o_proj" in res.stats["awq"]["unscaled_groups"]
            assert len(res.stats["awq"]["alpha"]) == 2 * 3  # 2 blocks × 3 foldable groups
    assert errs["awq:w4g64"] < 0.8 * errs["rtn:w4g64"]


def test_architecture_without_scaling_groups_is_refused() -> None:
    loaded = load_model("tiny-llama")
    loaded.arch = dataclasses.replace(loaded.arch, family="mystery", groups=())
    ids = TokenSet("t", torch.randint(0, 256, (2, 16)), 1)
    with pytest.raises(LowbitError, match="awq has no scaling groups for architecture 'mystery'; supported: llama"):
        quantize_model(loaded, resolve_variant("awq:w4g64"), ids)


def test_search_option_sets_the_tokens_each_scale_candidate_is_scored_on() -> None:
    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    calib = TokenSet("t", ids, 1)

    def scored(variant: str) -> int:
        return quantize_model(load_model("tiny-llama"), resolve_variant(variant), calib).stats["awq"]["search_tokens"]

    # Whole pipeline batches of two 32-token windows, until the count is reached.
    assert scored("awq:w4g32") == 256  # the default 1024 is more than the 8 windows hold
    assert scored("awq:w4g32+search=64") == 64
    assert scored("awq:w4g32+search=65") == 128
    with pytest.raises(LowbitError, match=r"\+search"):
        resolve_variant("awq:w4g32+search=0")
