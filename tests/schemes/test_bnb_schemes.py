"""bitsandbytes grids: the scheme contract, exact sizes, and byte-for-byte equality with bitsandbytes on CPU.

The oracle is bitsandbytes itself (``quantize_4bit``, ``quantize_blockwise``,
``Int8Params``); those tests skip with a reason when it is not installed.
"""

from __future__ import annotations

import math

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.formats.bnb_layout import to_bnb
from lowbit.schemes import parse_scheme
from lowbit.schemes.bnb import Bnb4bitScheme, BnbInt8Scheme
from lowbit.schemes.bnb.codebooks import dynamic_map, quantize_blockwise_8bit, table_4bit
from tests.conformance import SchemeConformance, weights

FOUR_BIT = ["nf4", "fp4", "nf4-dq", "fp4-dq", "nf4b128", "fp4b32-dq"]
# Shapes that exercise blocks crossing rows, an odd element count (padding), a tensor smaller
# than one block, a partial last block and a partial last nested (256) block.
SHAPES = [(128, 96), (33, 77), (1, 1), (3, 5), (160, 576), (300, 64)]


class TestBnbSchemeConformance(SchemeConformance):
    specs = [*FOUR_BIT, "int8"]


def test_specs_parse_to_canonical_names() -> None:
    assert parse_scheme("nf4").spec() == "bnb:nf4"
    assert parse_scheme("bnb:nf4b64-dq").spec() == "bnb:nf4-dq"
    assert parse_scheme("NF4b128").spec() == "bnb:nf4b128"
    assert parse_scheme("fp4-dq") == Bnb4bitScheme("fp4", 64, True)
    assert parse_scheme("int8") == BnbInt8Scheme()
    with pytest.raises(LowbitError, match="32, 64, 128"):
        parse_scheme("nf4b100")
    with pytest.raises(LowbitError, match="not a valid bnb scheme"):
        parse_scheme("bnb:nf3")


def test_bits_per_weight_are_exact() -> None:
    shape = (4096, 4096)
    assert parse_scheme("nf4").bits_per_weight(shape) == 4.5
    assert parse_scheme("fp4b128").bits_per_weight(shape) == 4.25
    # 4 + 8/64 + 32/(64·256) + one fp32 offset per tensor
    assert parse_scheme("nf4-dq").bits_per_weight(shape) == pytest.approx(4 + 0.125 + 32 / 16384 + 32 / 4096**2)
    assert round(parse_scheme("nf4-dq").bits_per_weight(shape), 3) == 4.127
    assert parse_scheme("int8").bits_per_weight((576, 1536)) == 8 + 32 / 1536
    # An odd count stores a whole last byte.
    assert parse_scheme("nf4").storage_bits((3, 5)) == 8 * 8 + 32


def test_tables_are_bitsandbytes_values() -> None:
    nf4 = table_4bit("nf4")
    assert nf4[7] == 0 and nf4[0] == -1 and nf4[15] == 1 and bool((nf4.diff() > 0).all())
    fp4 = table_4bit("fp4")
    assert fp4.tolist()[:8] == pytest.approx([0, 0.0625 / 12, 8 / 12, 1, 4 / 12, 6 / 12, 2 / 12, 3 / 12])
    m = dynamic_map()
    assert m.numel() == 256 and m[-1] == 1 and bool((m.diff() >= 0).all()) and float(m[0]) == pytest.approx(-0.99297, abs=1e-5)


def test_double_quant_absmax_is_close_and_zero_blocks_are_exact() -> None:
    w = weights((256, 512), seed=3)
    w[:2] = 0  # whole blocks of zeros
    s = parse_scheme("nf4-dq")
    q = s.quantize(w)
    plain = parse_scheme("nf4").quantize(w)
    assert torch.equal(q.codes, plain.codes)  # codes are chosen with the float32 absmax
    rel = (s.absmax_values(q) - plain.params["absmax"]).abs() / plain.params["absmax"].max()
    assert float(rel.max()) < 0.01
    assert float(s.dequantize(q)[:2].abs().max()) < 1e-3  # a zero block dequantizes to ±(offset error)·0 = 0
    assert torch.equal(s.dequantize(q)[:2], torch.zeros(2, 512))


def test_all_zero_and_tiny_tensors() -> None:
    for spec in ["nf4", "fp4-dq", "int8"]:
        s = parse_scheme(spec)
        for shape in [(4, 8), (1, 1)]:
            q = s.quantize(torch.zeros(shape))
            assert torch.equal(s.dequantize(q), torch.zeros(shape))


def test_int8_refuses_weights_beyond_float16() -> None:
    w = torch.zeros(4, 4)
    w[1, 2] = 1e5
    with pytest.raises(LowbitError, match="65504"):
        parse_scheme("int8").quantize(w)


@pytest.mark.parametrize("spec", ["nf4", "fp4-dq", "nf4b32-dq", "int8"])
def test_columnwise_interface_reproduces_quantize(spec: str) -> None:
    s = parse_scheme(spec)
    w = weights((48, 256), seed=5)
    g = s.column_group_size(w.shape[1])
    codes, params = [], []
    for c in range(0, w.shape[1], g):
        p = s.fit(w[:, c : c + g])
        k, deq = s.quantize_with(w[:, c : c + g], p)
        codes.append(k)
        params.append(p)
    q = s.assemble(tuple(w.shape), torch.cat(codes, dim=1), params)
    ref = s.quantize(w)
    assert torch.equal(q.codes, ref.codes)
    for name in ref.params:
        assert torch.equal(q.params[name], ref.params[name]), name


def test_columnwise_needs_blocks_that_tile_rows() -> None:
    with pytest.raises(LowbitError, match="576 is not a multiple of the block size 128"):
        parse_scheme("nf4b128").column_group_size(576)
    assert parse_scheme("nf4").column_group_size(576) == 64


def _reference_dequant(s: Bnb4bitScheme, q) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """table[code] · absmax[flat index // blocksize], written independently of the scheme's code."""
    n = q.numel
    block = torch.arange(n) // s.blocksize
    return (table_4bit(s.quant_type)[q.codes.reshape(-1).long()] * s.absmax_values(q)[block]).reshape(q.shape)


@pytest.mark.parametrize("spec", FOUR_BIT)
def test_dequantize_follows_flattened_blocks(spec: str) -> None:
    s = parse_scheme(spec)
    for shape in SHAPES:
        q = s.quantize(weights(shape, seed=1, outlier=False))
        assert torch.equal(s.dequantize(q), _reference_dequant(s, q))


# --- bit-exactness against bitsandbytes --------------------------------------------------


@pytest.fixture(scope="module")
def bnb():  # type: ignore[no-untyped-def]
    return pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'lowbit[bnb]')")


@pytest.fixture(scope="module")
def real_weights() -> dict[str, torch.Tensor]:
    """Real trained weights: every linear of MiniLM's first layer and one of its last."""
    from lowbit.models import load_model

    m = load_model("minilm").model
    keep = ("encoder.layer.0.", "encoder.layer.5.output.dense")
    return {n: mod.weight.detach().clone() for n, mod in m.named_modules()
            if isinstance(mod, torch.nn.Linear) and n.startswith(keep)}


def _bnb_state(bnb, w: torch.Tensor, s: Bnb4bitScheme) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """What bitsandbytes stores for ``w``: the packed weight plus its packed quant_state."""
    packed, state = bnb.functional.quantize_4bit(w, blocksize=s.blocksize, quant_type=s.quant_type,
                                                 compress_statistics=s.double_quant)
    return {"weight": packed, **{f"weight.{k}": v for k, v in state.as_dict(packed=True).items()}}


def _assert_same_state(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(mine) == sorted(theirs), what
    for key in theirs:
        assert mine[key].dtype == theirs[key].dtype, f"{what}: {key} dtype"
        assert torch.equal(mine[key], theirs[key]), f"{what}: {key} differs"


@pytest.mark.parametrize("spec", FOUR_BIT)
def test_4bit_state_equals_bitsandbytes_on_random_weights(bnb, spec: str) -> None:  # type: ignore[no-untyped-def]
    """codes (packed, high nibble first, padded), absmax, nested absmax/offset, quant maps and the
    quant_state JSON equal quantize_4bit's output byte for byte."""
    s = parse_scheme(spec)
    for i, shape in enumerate(SHAPES):
        w = weights(shape, seed=10 + i)
        if shape[0] > 8:
            w[2] = 0  # all-zero blocks
            w[5, :7] *= 1e-30  # values far below the block's absmax
        _assert_same_state(to_bnb(s.quantize(w)), _bnb_state(bnb, w, s), f"{spec} {shape}")


@pytest.mark.parametrize("spec", FOUR_BIT)
def test_4bit_state_equals_bitsandbytes_on_real_weights(bnb, real_weights, spec: str) -> None:  # type: ignore[no-untyped-def]
    s = parse_scheme(spec)
    for name, w in real_weights.items():
        _assert_same_state(to_bnb(s.quantize(w)), _bnb_state(bnb, w, s), f"{spec} {name}")


def test_odd_element_count_is_padded_like_bitsandbytes(bnb) -> None:  # type: ignore[no-untyped-def]
    for spec in ["nf4", "fp4"]:
        s = parse_scheme(spec)
        w = weights((7, 9), seed=2)
        mine = to_bnb(s.quantize(w))["weight"]
        theirs = _bnb_state(bnb, w, s)["weight"]
        assert mine.shape == (32, 1) and torch.equal(mine, theirs)


@pytest.mark.parametrize("spec", FOUR_BIT)
def test_4bit_dequantize_equals_bitsandbytes(bnb, spec: str) -> None:  # type: ignore[no-untyped-def]
    # Only row-aligned blocks: bitsandbytes 0.50's AVX-512 CPU dequantizer indexes absmax per row and
    # misreads blocks that cross rows (in_features % blocksize != 0); the flattened-block definition
    # (quantize_4bit, its pure-torch and CUDA paths) is checked in test_dequantize_follows_flattened_blocks.
    s = parse_scheme(spec)
    for shape in [(128, 128), (64, 512), (24, 4096)]:
        w = weights(shape, seed=4)
        packed, state = bnb.functional.quantize_4bit(w, blocksize=s.blocksize, quant_type=s.quant_type,
                                                     compress_statistics=s.double_quant)
        assert torch.equal(s.dequantize(s.quantize(w)), bnb.functional.dequantize_4bit(packed, state))


def test_nested_8bit_quantizer_equals_bitsandbytes(bnb) -> None:  # type: ignore[no-untyped-def]
    from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib

    if isinstance(lib, ErrorHandlerMockBNBNativeLibrary):
        pytest.skip("bitsandbytes' native CPU library is not loaded; lowbit follows the native quantize_blockwise")
    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(n, generator=g) * 10 ** float(torch.randn(1, generator=g)) for n in (1, 255, 256, 257, 4000)]
    cases.append(torch.cat([torch.zeros(300), torch.randn(300, generator=g)]))  # a zero block
    sweep = torch.linspace(-1, 1, 256 * 512)
    sweep = sweep[torch.randperm(sweep.numel(), generator=g)]
    sweep[::256] = 1.0  # every block's absmax 1: all 65,536 lookup bins are hit
    cases.append(sweep)
    for x in cases:
        codes, state = bnb.functional.quantize_blockwise(x, blocksize=256)
        mine, absmax = quantize_blockwise_8bit(x, dynamic_map())
        assert torch.equal(mine, codes) and torch.equal(absmax, state.absmax)
    assert torch.equal(dynamic_map(), bnb.functional.create_dynamic_map())


def _bnb_int8(bnb, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    p = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")
    return p.CB, p.SCB


def test_int8_cb_scb_equal_bitsandbytes(bnb, real_weights) -> None:  # type: ignore[no-untyped-def]
    s = parse_scheme("int8")
    cases = {f"random{shape}": weights(shape, seed=7) for shape in [(128, 96), (33, 77), (1, 1)]}
    cases.update(real_weights)
    for name, w in cases.items():
        q = s.quantize(w)
        cb, scb = _bnb_int8(bnb, w)
        assert torch.equal(q.codes, cb) and torch.equal(q.params["SCB"], scb), name
        assert torch.equal(s.dequantize(q), bnb.functional.int8_vectorwise_dequant(cb, scb)), name


def test_int8_layout_is_module_scb_and_weight_format() -> None:
    q = parse_scheme("int8").quantize(weights((16, 32)))
    t = to_bnb(q)
    assert sorted(t) == ["SCB", "weight", "weight_format"]
    assert t["weight"].dtype == torch.int8 and t["SCB"].shape == (16,) and int(t["weight_format"]) == 0
    assert math.isclose(float(t["SCB"][0]), float(weights((16, 32))[0].abs().max().half()), rel_tol=0)


@pytest.mark.parametrize("spec", ["nf4", "fp4b32", "int8"])
def test_split_rows_of_stacked_matrices_equals_quantizing_each(spec: str) -> None:
    """GPTQ solves q/k/v stacked and splits the result: pieces equal separate quantization."""
    s = parse_scheme(spec)
    parts = [weights((n, 128), seed=20 + n) for n in (64, 32, 32)]
    pieces = s.split_rows(s.quantize(torch.cat(parts)), [64, 32, 32])
    for w, piece in zip(parts, pieces, strict=True):
        ref = s.quantize(w)
        assert piece.shape == ref.shape and torch.equal(piece.codes, ref.codes)
        assert all(torch.equal(piece.params[k], ref.params[k]) for k in ref.params)


def test_split_rows_under_double_quant_rebuilds_each_nested_state() -> None:
    s = parse_scheme("nf4-dq")
    parts = [weights((n, 128), seed=30 + n) for n in (64, 32)]
    pieces = s.split_rows(s.quantize(torch.cat(parts)), [64, 32])
    for w, piece in zip(parts, pieces, strict=True):
        ref = s.quantize(w)
        assert torch.equal(piece.codes, ref.codes)
        assert piece.params["nested_absmax"].numel() == ref.params["nested_absmax"].numel()
        close = (s.absmax_values(piece) - s.absmax_values(ref)).abs().max() / s.absmax_values(ref).max()
        assert float(close) < 0.02  # rounded to 8 bits twice instead of once (once: < 0.7%)
