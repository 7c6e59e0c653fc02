"""GGUF block types as lowbit schemes: the contract, exact sizes, the legacy group-wise path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.methods import resolve_variant
from lowbit.schemes import get_scheme, parse_scheme
from lowbit.schemes.gguf import TYPES, quantize
from lowbit.schemes.gguf.mixture import FILE_TYPES, GGUFMixture, fallback_type
from lowbit.schemes.gguf.scheme import GGUFScheme
from tests.conformance import SchemeConformance, weights

QUANT_SPECS = [f"gguf:{t}" for t in TYPES]


class TestGGUFSchemeConformance(SchemeConformance):
    specs = [*QUANT_SPECS, "gguf:F32"]
    shapes = [(64, 256), (48, 512)]


def test_codes_are_the_codec_bytes_and_storage_is_exact() -> None:
    w = weights((32, 512), seed=3)
    imp = torch.rand(512) + 0.1
    for name, t in TYPES.items():
        s = GGUFScheme(name)
        q = s.quantize(w, imp)
        ref = quantize(w.numpy(), name, imp.numpy())
        assert q.codes.dtype == torch.uint8 and np.array_equal(q.codes.numpy(), ref), name
        assert s.storage_bits((32, 512)) == q.codes.numel() * 8 == 32 * 512 // t.block_size * t.type_size * 8
        assert s.bits_per_weight((32, 512)) == pytest.approx(t.bits_per_weight)
        assert q.params == {}


def test_float_types_round_trip() -> None:
    w = weights((8, 64), seed=1)
    assert torch.equal(GGUFScheme("F32").dequantize(GGUFScheme("F32").quantize(w)), w)
    f16 = GGUFScheme("F16")
    assert torch.equal(f16.dequantize(f16.quantize(w)), w.half().float())
    bf16 = GGUFScheme("BF16")
    assert torch.equal(bf16.dequantize(bf16.quantize(w)), w.bfloat16().float())
    assert f16.storage_bits((8, 64)) == 8 * 64 * 16 and GGUFScheme("F32").weight_bits == 32


def test_rows_that_are_not_whole_blocks_are_refused_by_name() -> None:
    with pytest.raises(LowbitError, match=r"'blk\.0\.attn_q' has rows of 576 .*block of 256.*method gguf"):
        GGUFScheme("Q4_K").check_shape((576, 576), "blk.0.attn_q")
    with pytest.raises(LowbitError, match="block of 32"):
        GGUFScheme("Q8_0").quantize(torch.zeros(4, 48))
    GGUFScheme("Q8_0").check_shape((576, 576))  # 576 = 18 blocks of 32


def test_importance_must_match_columns() -> None:
    with pytest.raises(LowbitError, match="importance has 10 entries"):
        GGUFScheme("Q4_K").quantize(weights((4, 256)), torch.ones(10))
    with pytest.raises(LowbitError, match="finite and non-negative"):
        GGUFScheme("Q4_K").quantize(weights((4, 256)), -torch.ones(256))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_group_wise_interface_reproduces_the_reference_bytes(qtype: str) -> None:
    s = GGUFScheme(qtype)
    w = weights((16, 256), seed=5)
    g = s.column_group_size(256)
    assert g == 32
    params, codes = [], []
    for c0 in range(0, 256, g):
        p = s.fit(w[:, c0:c0 + g])
        params.append(p)
        cols = [s.quantize_with(w[:, c0 + j:c0 + j + 1], p) for j in range(g)]
        codes.append(torch.cat([c for c, _ in cols], dim=1))
        # the values quantize_with reports are exactly what the stored block decodes to
        block = s.assemble((16, 32), codes[-1], [p])
        assert torch.equal(torch.cat([v for _, v in cols], dim=1), s.dequantize(block))
    q = s.assemble((16, 256), torch.cat(codes, dim=1), params)
    assert torch.equal(q.codes, s.quantize(w).codes)


def test_group_wise_codes_clamp_for_error_fed_columns() -> None:
    s = GGUFScheme("Q4_0")
    p = s.fit(weights((4, 32)))
    codes, values = s.quantize_with(torch.full((4, 1), 1e3), p)
    assert int(codes.max()) <= 15 and int(codes.min()) >= 0
    codes, _ = s.quantize_with(torch.full((4, 1), -1e3), p)
    assert int(codes.min()) == 0


@pytest.mark.parametrize("qtype", ["IQ4_XS", "IQ4_NL", "F16"])
def test_non_uniform_and_float_types_refuse_column_wise_methods(qtype: str) -> None:
    with pytest.raises(LowbitError, match="column-wise"):
        GGUFScheme(qtype).column_group_size(256)


def test_gptq_act_order_groups_are_refused_on_decode() -> None:
    s = GGUFScheme("Q4_0")
    q = s.quantize(weights((4, 64)))
    q.params["g_idx"] = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(LowbitError, match="g_idx"):
        s.dequantize(q)


def test_specs_and_mixtures_parse() -> None:
    assert parse_scheme("gguf:q4_k") == GGUFScheme("Q4_K")
    assert parse_scheme("Q6_K") == GGUFScheme("Q6_K")  # bare names resolve too
    assert get_scheme("gguf-mix:Q4_K_M") == GGUFMixture("Q4_K_M") == parse_scheme("Q4_K_M")
    for name in FILE_TYPES:
        mix = GGUFMixture(name)
        assert parse_scheme(mix.spec()) == mix
    assert GGUFMixture("Q4_K_M").weight_bits == 4 and GGUFMixture("Q8_0").group_size == 32
    with pytest.raises(LowbitError, match="Q4_K is a block type"):
        resolve_variant("gguf:Q4_K")
    with pytest.raises(LowbitError, match="only be applied by method 'gguf'"):
        resolve_variant("rtn:Q4_K_M")
    with pytest.raises(LowbitError, match="variant gguf:Q4_K_M"):
        GGUFMixture("Q4_K_M").quantize(weights((4, 256)))
    assert resolve_variant("rtn:gguf:Q6_K").scheme == GGUFScheme("Q6_K")


def test_fallback_table_matches_llama_cpp() -> None:
    assert [fallback_type(t, 576) for t in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "Q8_0")] == \
        ["Q4_0", "Q4_0", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "Q8_0"]
    assert fallback_type("Q4_K", 512) == "Q4_K"
    assert fallback_type("Q4_K", 100) == "F16" and fallback_type("Q8_0", 48) == "F16"
    # storage of a mixture's anonymous tensor follows the fallback
    assert GGUFMixture("Q4_K_M").storage_bits((576, 576)) == GGUFScheme("Q5_0").storage_bits((576, 576))
