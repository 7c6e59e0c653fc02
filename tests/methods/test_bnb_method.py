"""The bnb method: NF4/FP4 round-to-nearest and LLM.int8(), on lowbit's runtime and on bitsandbytes' kernels."""

from __future__ import annotations

import sys

import pytest
import torch

from lowbit.compare import variant_fields
from lowbit.errors import LowbitError, MissingExtraError
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from lowbit.runtime.llm_int8 import LLMInt8Linear
from lowbit.runtime.quant_linear import run_stats, runtime_name
from tests.conformance import MethodConformance

IDS = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))


class TestBnb4bitConformance(MethodConformance):
    variants = ["bnb:nf4-dq", "bnb:fp4b128"]


class TestBnbInt8Conformance(MethodConformance):
    variants = ["bnb:int8"]

    def test_output_stays_close_to_float(self) -> None:
        # W8A8: the per-token int8 activations add error on top of the weights' (which the
        # conformance bound, set by weight bits alone, does not allow for).
        ref = load_model(self.model)
        with torch.inference_mode():
            a = ref.model(IDS).logits
        rel = {}
        for text in ["bnb:int8", "bnb:int8+t=0", "rtn:int8"]:
            q = load_model(self.model)
            quantize_model(q, resolve_variant(text), None)
            with torch.inference_mode():
                rel[text] = float((q.model(IDS).logits - a).norm() / a.norm())
        assert 0 < rel["rtn:int8"] < rel["bnb:int8"] < rel["bnb:int8+t=0"] < 0.1, rel


def _logits(variant: str, model: str = "tiny-llama") -> tuple[torch.Tensor, object]:
    loaded = load_model(model)
    quantize_model(loaded, resolve_variant(variant), None)
    with torch.inference_mode():
        return loaded.model(IDS).logits, loaded


def test_act_bits_and_row_fields() -> None:
    assert variant_fields(resolve_variant("bnb:int8"))["act_bits"] == 8
    assert variant_fields(resolve_variant("bnb:int8+t=0"))["act_bits"] == 8
    f = variant_fields(resolve_variant("bnb:nf4-dq"))
    assert (f["act_bits"], f["weight_bits"], f["granularity"], f["group_size"], f["scheme"]) == \
        (16, 4, "block", 64, "bnb:nf4-dq")
    assert variant_fields(resolve_variant("rtn:int8"))["act_bits"] == 16  # weight-only on the same grid


def test_bad_options_are_refused_before_quantizing() -> None:
    with pytest.raises(LowbitError, match="≥ 0"):
        resolve_variant("bnb:int8+t=-1")
    with pytest.raises(LowbitError, match="≥ 0"):
        resolve_variant("bnb:int8+t=nan")
    with pytest.raises(LowbitError, match="applies to bnb:int8 only"):
        resolve_variant("bnb:nf4+t=6")
    with pytest.raises(LowbitError, match="bitsandbytes grids"):
        resolve_variant("bnb:w4g64")
    with pytest.raises(LowbitError, match="must be one of"):
        resolve_variant("bnb:nf4+runtime=cuda")


def test_int8_records_outlier_columns_and_threshold_zero_has_none() -> None:
    _, loaded = _logits("bnb:int8")
    mods = [m for _, m in quantized_modules(loaded.model)]  # type: ignore[attr-defined]
    assert all(isinstance(m, LLMInt8Linear) and m.threshold == 6.0 for m in mods)
    stats = run_stats(loaded.model)  # type: ignore[attr-defined]
    assert stats["int8_calls"] == 14 and 0 < stats["outlier_cols"] < stats["input_cols"]
    _, plain = _logits("bnb:int8+t=0")
    assert run_stats(plain.model)["outlier_cols"] == 0  # type: ignore[attr-defined]
    _, strict = _logits("bnb:int8+t=2.5")
    assert run_stats(strict.model)["outlier_cols"] > stats["outlier_cols"]  # type: ignore[attr-defined]


def test_bnb_4bit_codes_equal_rtn_on_the_same_grid() -> None:
    a, _ = _logits("bnb:nf4-dq")
    b, _ = _logits("rtn:nf4-dq")
    assert torch.equal(a, b)


# --- bitsandbytes' own kernels -------------------------------------------------------


@pytest.fixture
def bnb():  # type: ignore[no-untyped-def]
    return pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'lowbit[bnb]')")


def test_int8_reference_equals_bitsandbytes_kernels_bit_for_bit(bnb) -> None:  # type: ignore[no-untyped-def]
    for t in ("", "+t=0", "+t=3"):
        ref, _ = _logits(f"bnb:int8{t}")
        lib, loaded = _logits(f"bnb:int8{t}+runtime=bitsandbytes")
        assert runtime_name(loaded.model).startswith("bitsandbytes ")  # type: ignore[attr-defined]
        assert "Linear8bitLt" in runtime_name(loaded.model)  # type: ignore[attr-defined]
        assert torch.equal(ref, lib), t
    # the same outlier columns are seen by both
    _, a = _logits("bnb:int8")
    _, b = _logits("bnb:int8+runtime=bitsandbytes")
    with torch.inference_mode():
        a.model(IDS), b.model(IDS)  # type: ignore[attr-defined]
    assert run_stats(a.model) == run_stats(b.model)  # type: ignore[attr-defined]


def test_4bit_bitsandbytes_kernels_match_reference(bnb) -> None:  # type: ignore[no-untyped-def]
    for v in ("bnb:nf4", "bnb:fp4-dq"):
        ref, _ = _logits(v)
        lib, loaded = _logits(v + "+runtime=bitsandbytes")
        name = runtime_name(loaded.model)  # type: ignore[attr-defined]
        assert name.startswith("bitsandbytes ") and "Linear4bit" in name
        if "bf16" in name:  # AVX512-BF16 CPUs: bf16 activations and scales inside the kernel
            assert float((ref - lib).norm() / ref.norm()) < 2e-2
        else:
            assert torch.equal(ref, lib)


def test_bitsandbytes_runtime_refuses_blocks_crossing_rows_on_cpu(bnb) -> None:  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")  # in_features 256 and 512
    with pytest.raises(LowbitError, match="multiple of the block size"):
        quantize_model(loaded, resolve_variant("bnb:nf4b512+runtime=bitsandbytes"), None)


def test_bitsandbytes_runtime_without_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    loaded = load_model("tiny-llama")
    with pytest.raises(MissingExtraError, match=r"lowbit\[bnb\]"):
        quantize_model(loaded, resolve_variant("bnb:nf4+runtime=bitsandbytes"), None)


def test_gptq_on_nf4_dq_saves_in_the_bnb_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The bnb grids serve column-wise methods too: GPTQ's stacked q/k/v split back into bnb tensors."""
    from lowbit.data import prepare_data
    from lowbit.formats.bnb_format import save_bnb_folder

    loaded = load_model("tiny-llama")
    calib = prepare_data(loaded.tokenizer, calib_samples=4, eval_tokens=256, window_tokens=128).calib
    result = quantize_model(loaded, resolve_variant("gptq:nf4-dq"), calib)
    assert round(result.bits_per_weight, 3) == 4.127
    with torch.inference_mode():
        ours = loaded.model(IDS).logits
    again = load_model(str(save_bnb_folder(loaded, tmp_path / "q")))
    with torch.inference_mode():
        assert torch.equal(again.model(IDS).logits, ours)
