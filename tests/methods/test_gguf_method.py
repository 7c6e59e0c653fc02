"""Method gguf: llama.cpp's per-tensor rules, fallbacks, the quantized tied embedding, imatrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant
from lowbit.methods.gguf import weight_names
from lowbit.methods.gguf.rules import ModelFacts, plan_types, sort_key, use_more_bits
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from lowbit.runtime.quant_embedding import QuantEmbedding, TiedQuantEmbedding
from lowbit.runtime.quant_linear import QuantLinear, storage_bytes
from lowbit.schemes.gguf.mixture import get_file_type
from lowbit.schemes.gguf.scheme import GGUFScheme
from tests.conformance import MethodConformance


class TestGGUFMethodConformance(MethodConformance):
    # The contract counts nn.Linear targets; the head path is tested separately below.
    variants = ["gguf:Q4_K_M+lm_head=false", "gguf:Q8_0+lm_head=false"]


def _llama_shapes(n_layer: int, width: int, ff: int, kv: int, vocab: int, tied: bool) -> dict[str, tuple[int, int]]:
    shapes = {"token_embd.weight": (vocab, width)}
    if not tied:
        shapes["output.weight"] = (vocab, width)
    for i in range(n_layer):
        shapes.update({f"blk.{i}.attn_q.weight": (width, width), f"blk.{i}.attn_k.weight": (kv, width),
                       f"blk.{i}.attn_v.weight": (kv, width), f"blk.{i}.attn_output.weight": (width, width),
                       f"blk.{i}.ffn_gate.weight": (ff, width), f"blk.{i}.ffn_up.weight": (ff, width),
                       f"blk.{i}.ffn_down.weight": (width, ff)})
    return shapes


def test_use_more_bits_picks_the_documented_layers() -> None:
    picked = [i for i in range(32) if use_more_bits(i, 32)]
    assert picked == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_llama_quantize_order_sorts_layers_numerically() -> None:
    names = ["blk.10.attn_v.weight", "blk.2.ffn_down.weight", "token_embd.weight", "blk.2.attn_k.weight"]
    assert sorted(names, key=sort_key) == ["token_embd.weight", "blk.2.attn_k.weight", "blk.2.ffn_down.weight",
                                           "blk.10.attn_v.weight"]


def test_q4_k_m_rules_on_a_32_layer_llama() -> None:
    shapes = _llama_shapes(32, 4096, 11008, 1024, 32000, tied=False)
    plan = plan_types(get_file_type("Q4_K_M"), shapes, ModelFacts("llama", 32, 32, 8), has_imatrix=False)
    bumped = [i for i in range(32) if plan.types[f"blk.{i}.attn_v.weight"] == "Q6_K"]
    assert bumped == [i for i in range(32) if use_more_bits(i, 32)]
    assert [plan.types[f"blk.{i}.ffn_down.weight"] for i in (0, 4, 6)] == ["Q6_K", "Q4_K", "Q6_K"]
    assert plan.types["output.weight"] == "Q6_K" and plan.types["token_embd.weight"] == "Q4_K"
    assert plan.types["blk.5.attn_q.weight"] == "Q4_K" and not plan.fallbacks


def test_other_mixtures_follow_llama_cpp() -> None:
    shapes = _llama_shapes(32, 4096, 11008, 1024, 32000, tied=True)
    facts = ModelFacts("llama", 32, 32, 8)  # n_gqa 4
    q2 = plan_types(get_file_type("Q2_K"), shapes, facts, False).types
    assert (q2["blk.0.attn_v.weight"], q2["blk.0.ffn_down.weight"], q2["blk.0.attn_output.weight"]) == \
        ("Q4_K", "Q3_K", "Q3_K")
    q3m = plan_types(get_file_type("Q3_K_M"), shapes, facts, False).types
    assert [q3m[f"blk.{i}.attn_v.weight"] for i in (0, 1, 2)] == ["Q5_K", "Q5_K", "Q4_K"]
    assert [q3m[f"blk.{i}.ffn_down.weight"] for i in (0, 1, 2)] == ["Q5_K", "Q5_K", "Q4_K"]
    q4s = plan_types(get_file_type("Q4_K_S"), shapes, facts, False).types
    assert [q4s[f"blk.{i}.attn_v.weight"] for i in (3, 4)] == ["Q5_K", "Q4_K"]
    q40 = plan_types(get_file_type("Q4_0"), shapes, facts, False).types
    assert q40["token_embd.weight"] == "Q6_K" and q40["blk.0.ffn_down.weight"] == "Q4_0"  # tied → output rule
    q40im = plan_types(get_file_type("Q4_0"), shapes, facts, True).types
    assert [q40im[f"blk.{i}.ffn_down.weight"] for i in (3, 4)] == ["Q4_1", "Q4_0"]
    assert plan_types(get_file_type("Q8_0"), shapes, facts, False).types["token_embd.weight"] == "Q8_0"
    f16 = plan_types(get_file_type("F16"), shapes, facts, False).types
    assert set(f16.values()) == {"F16"}


def test_smollm2_shapes_fall_back_like_llama_quantize() -> None:
    # SmolLM2-135M: 30 layers, width 576, ff 1536, 3 kv heads of 64, tied; llama-quantize Q4_K_M prints
    # "180 of 272 tensor(s) required fallback quantization" (checked with llama-cpp-python 0.3.36).
    shapes = _llama_shapes(30, 576, 1536, 192, 49152, tied=True)
    plan = plan_types(get_file_type("Q4_K_M"), shapes, ModelFacts("llama", 30, 9, 3), False)
    assert len(plan.fallbacks) == 180
    assert plan.types["token_embd.weight"] == "Q8_0" and "token_embd.weight" not in plan.fallbacks
    assert plan.types["blk.0.attn_q.weight"] == "Q5_0" and plan.types["blk.0.attn_v.weight"] == "Q8_0"
    assert plan.types["blk.0.ffn_down.weight"] == "Q6_K"  # ne0 = 1536 = 6 × 256: a real k-quant
    lines = plan.describe_fallbacks(shapes)
    assert "ncols 576 not divisible by 256 (required for Q4_K) -> Q5_0" in lines[0]
    # Q4_0: the tied embedding's Q6_K falls back too (576 is a 32- but not a 256-multiple)
    plan40 = plan_types(get_file_type("Q4_0"), shapes, ModelFacts("llama", 30, 9, 3), False)
    assert plan40.fallbacks == ["token_embd.weight"] and plan40.types["token_embd.weight"] == "Q8_0"


def test_tied_head_is_quantized_once_and_read_by_the_embedding(tmp_path: Path) -> None:
    from lowbit.formats.lowbit_format import save_lowbit_folder

    q = load_model("tiny-llama")
    res = quantize_model(q, resolve_variant("gguf:Q4_K_M"), None)
    model = q.model
    assert isinstance(model.lm_head, QuantLinear) and model.lm_head.scheme_spec == "gguf:Q6_K"
    assert isinstance(model.model.embed_tokens, TiedQuantEmbedding)
    assert res.tensors["lm_head"].meta == {"gguf_name": "token_embd.weight", "tied_embedding": "model.embed_tokens"}
    ids = torch.tensor([[5, 17, 200]])
    emb = model.model.embed_tokens(ids)
    assert torch.equal(emb[0], model.lm_head.dequantized_weight()[ids[0]])
    # stored once: every quantized linear's bytes + norms, nothing for the embedding
    norms = sum(p.numel() * 4 for n, p in model.named_parameters() if "norm" in n)
    blocks = sum(m.codes.numel() for _, m in quantized_modules(model))
    assert storage_bytes(model) == blocks + norms
    assert res.stats["fallback_tensors"] == 0
    # the lowbit format reloads it exactly, tie included
    again = load_model(str(save_lowbit_folder(q, tmp_path / "q")))
    assert isinstance(again.model.model.embed_tokens, TiedQuantEmbedding)
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, again.model(ids).logits)


def test_untied_embedding_gets_the_default_type(tmp_path: Path) -> None:
    from lowbit.formats.lowbit_format import save_lowbit_folder

    q = load_model("tiny-llama")
    model = q.model
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    quantize_model(q, resolve_variant("gguf:Q4_K_M"), None)
    assert isinstance(model.model.embed_tokens, QuantEmbedding)
    assert model.model.embed_tokens.scheme_spec == "gguf:Q4_K" and model.lm_head.scheme_spec == "gguf:Q6_K"
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(model.model.embed_tokens(ids)[0], model.model.embed_tokens.dequantized_weight()[ids[0]])
    again = load_model(str(save_lowbit_folder(q, tmp_path / "untied")))
    assert isinstance(again.model.model.embed_tokens, QuantEmbedding)
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, again.model(ids).logits)


def test_lm_head_false_keeps_head_and_embedding_float() -> None:
    q = load_model("tiny-llama")
    quantize_model(q, resolve_variant("gguf:Q4_K_M+lm_head=false"), None)
    assert isinstance(q.model.lm_head, torch.nn.Linear) and isinstance(q.model.model.embed_tokens, torch.nn.Embedding)


def test_no_fallback_refuses_and_names_the_tensor() -> None:
    q = load_model("tiny-gpt2")  # width 128: no 256-multiple rows
    with pytest.raises(LowbitError, match=r"would need fallback quantization \(\+no_fallback\): blk\.0\."):
        quantize_model(q, resolve_variant("gguf:Q4_K_M+no_fallback"), None)
    q = load_model("tiny-gpt2")
    res = quantize_model(q, resolve_variant("gguf:Q4_K_M"), None)
    # rows of 128: attn_qkv, attn_output and ffn_up fall back in both layers; ffn_down (ne0 512) fits;
    # token_embd goes straight to Q8_0 by the output rule, which llama.cpp does not count as a fallback
    assert res.stats["fallback_tensors"] == 6
    types = res.stats["gguf_tensor_types"]
    assert [types[f"blk.{i}.attn_qkv.weight"] for i in (0, 1)] == ["Q5_0", "Q8_0"]  # attn_v rule: Q4_K, Q6_K
    assert [types[f"blk.{i}.ffn_down.weight"] for i in (0, 1)] == ["Q4_K", "Q6_K"]
    assert types["token_embd.weight"] == "Q8_0" and "position_embd.weight" not in types


def test_bits_per_weight_sums_each_tensors_own_type() -> None:
    q = load_model("tiny-llama")
    res = quantize_model(q, resolve_variant("gguf:Q4_K_M"), None)
    bits = sum(GGUFScheme(res.stats["gguf_tensor_types"][t.meta["gguf_name"]]).storage_bits(t.shape)
               for t in res.tensors.values())
    assert res.bits_per_weight == pytest.approx(bits / sum(t.numel for t in res.tensors.values()))
    assert 4.5 < res.bits_per_weight < 6.5625


def test_imatrix_from_calibration_changes_the_codes() -> None:
    from lowbit.data import prepare_data

    base = load_model("tiny-llama")
    calib = prepare_data(base.tokenizer, calib_samples=4, eval_tokens=256, window_tokens=64).calib
    plain = quantize_model(load_model("tiny-llama"), resolve_variant("gguf:Q4_K_M"), calib)
    weighted = quantize_model(load_model("tiny-llama"), resolve_variant("gguf:Q4_K_M+imatrix"), calib)
    im = weighted.stats["imatrix_data"]
    assert len(im) == 14 and all(c == 4 * 64 for c in im.counts.values())
    assert np.array_equal(im.sums["blk.0.attn_q.weight"], im.sums["blk.0.attn_k.weight"])  # shared input
    assert not torch.equal(plain.tensors["model.layers.0.mlp.up_proj"].codes,
                           weighted.tensors["model.layers.0.mlp.up_proj"].codes)
    # the head is quantized without one, as llama-imatrix never sees output matmuls
    assert torch.equal(plain.tensors["lm_head"].codes, weighted.tensors["lm_head"].codes)
    with pytest.raises(LowbitError, match="calibration"):
        quantize_model(load_model("tiny-llama"), resolve_variant("gguf:Q4_K_M+imatrix"), None)


def test_imatrix_statistic_is_the_mean_squared_input() -> None:
    from lowbit.data.windows import TokenSet
    from lowbit.methods.gguf.imatrix import mean_sq_inputs

    loaded = load_model("tiny-llama")
    windows = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(2))
    lin = {"model.layers.1.mlp.down_proj": loaded.model.model.layers[1].mlp.down_proj}
    got = mean_sq_inputs(loaded, TokenSet("t", windows, 1), lin, torch.device("cpu"))
    seen: list[torch.Tensor] = []
    h = lin["model.layers.1.mlp.down_proj"].register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 512)))
    with torch.inference_mode():
        loaded.model(windows)
    h.remove()
    x = torch.cat(seen).double()
    s, n = got["model.layers.1.mlp.down_proj"]
    assert n == 96
    np.testing.assert_allclose(s, (x * x).sum(0).numpy(), rtol=1e-4)


def test_weight_names_map_llama_modules() -> None:
    names, shapes = weight_names(load_model("tiny-llama").model)
    assert names["model.layers.1.self_attn.v_proj"] == "blk.1.attn_v.weight"
    assert names["lm_head"] == names["model.embed_tokens"] == "token_embd.weight"
    assert "output.weight" not in shapes and shapes["blk.0.ffn_down.weight"] == (256, 512)
