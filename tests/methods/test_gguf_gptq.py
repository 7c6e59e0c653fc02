"""Method gguf with +gptq: llama.cpp's per-tensor types, codes chosen by GPTQ on each type's grid."""

from __future__ import annotations

import pytest
import torch

from lowbit.data import prepare_data
from lowbit.errors import LowbitError
from lowbit.methods import QuantResult, quantize_model, resolve_variant
from lowbit.models import load_model
from tests.conformance import MethodConformance


class TestGGUFGPTQConformance(MethodConformance):
    variants = ["gguf:Q4_K_M+gptq+lm_head=false", "gptq:gguf:Q4_K"]
    needs_calib = True


@pytest.fixture(scope="module")
def runs() -> tuple[dict[str, QuantResult], dict[str, float]]:
    """Each variant's result and its relative logit error on held-out text (tiny-llama: widths 256/512)."""
    ref = load_model("tiny-llama")
    data = prepare_data(ref.tokenizer, calib_samples=8, eval_tokens=256, window_tokens=128)
    with torch.inference_mode():
        a = ref.model(data.eval.windows).logits
    results, errs = {}, {}
    for text in ("gguf:Q4_K_M", "gguf:Q4_K_M+gptq", "gguf:Q4_K_M+imatrix", "gguf:Q4_K_M+imatrix+gptq"):
        m = load_model("tiny-llama")
        results[text] = quantize_model(m, resolve_variant(text), data.calib)
        with torch.inference_mode():
            errs[text] = float((m.model(data.eval.windows).logits - a).norm() / a.norm())
    return results, errs


def test_gptq_keeps_every_tensors_type_and_lowers_the_error(runs) -> None:  # type: ignore[no-untyped-def]
    results, errs = runs
    for base in ("gguf:Q4_K_M", "gguf:Q4_K_M+imatrix"):
        plain, gptq = results[base], results[base + "+gptq"]
        assert {n: q.scheme for n, q in gptq.tensors.items()} == {n: q.scheme for n, q in plain.tensors.items()}
        assert gptq.bits_per_weight == plain.bits_per_weight
        assert errs[base + "+gptq"] < 0.85 * errs[base], errs
    stats = results["gguf:Q4_K_M+imatrix+gptq"].stats["gptq"]
    assert stats["solved"] == 14 and stats["plain"] == ["token_embd.weight"]  # 2 blocks × 7 linears; tied head
    assert results["gguf:Q4_K_M+imatrix+gptq"].calib_seconds > 0


def test_k_quant_grids_are_llama_cpps_imatrix_fit(runs) -> None:  # type: ignore[no-untyped-def]
    # Super-scales and sub-scales of every k-quant block are the plain +imatrix encoder's; only codes differ.
    results, _ = runs
    plain, gptq = results["gguf:Q4_K_M+imatrix"].tensors, results["gguf:Q4_K_M+imatrix+gptq"].tensors
    header = {"gguf:Q4_K": (144, slice(0, 16)), "gguf:Q6_K": (210, slice(192, 210))}
    checked = 0
    for name, q in gptq.items():
        if q.scheme in header and name != "lm_head":
            size, grid = header[q.scheme]
            mine, theirs = q.codes.reshape(q.shape[0], -1, size), plain[name].codes.reshape(q.shape[0], -1, size)
            assert torch.equal(mine[..., grid], theirs[..., grid]), name
            assert not torch.equal(mine, theirs), name
            checked += 1
    assert checked == 14


def test_refusals_and_calibration_use() -> None:
    with pytest.raises(LowbitError, match=r"gguf:IQ4_XS\+gptq: IQ4_XS has no grid GPTQ"):
        resolve_variant("gguf:IQ4_XS+gptq")
    v, plain = resolve_variant("gguf:Q4_K_M+gptq"), resolve_variant("gguf:Q4_K_M")
    assert v.method.uses_calibration(v.options) and not plain.method.uses_calibration(plain.options)
    with pytest.raises(LowbitError, match="gguf \\+gptq needs calibration text"):
        quantize_model(load_model("tiny-llama"), v, None)
