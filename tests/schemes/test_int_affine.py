import math

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.schemes import IntScheme, parse_scheme
from tests.conformance import SchemeConformance, weights


class TestIntConformance(SchemeConformance):
    specs = ["w8ch", "w8t", "w4g64", "w4g128asym", "w3g64", "w2g32", "w4g100", "w5g32asym", "w6ch", "w7t"]
    shapes = [(64, 256), (48, 200)]  # 200 is not a multiple of 64 or 128: partial last group


@pytest.mark.parametrize("spec", ["w8ch", "w4g64", "w4g64asym", "w3g32", "w2g128asym", "w4t", "w6g50"])
def test_round_trip_error_is_at_most_half_a_step(spec: str) -> None:
    s = parse_scheme(spec)
    w = weights((32, 200), seed=3)
    q = s.quantize(w)
    err = (s.dequantize(q) - w).abs()
    step = s._expand(q.params["scale"].float(), q.shape)
    # Half a step, plus fp16 rounding of the stored scale (≤ 2^-11 relative,
    # times at most 2^(b-1) steps from the zero point).
    slack = 1 + 2.0**-11 * 2**s.bits
    assert (err <= step * 0.5 * slack + 1e-12).all()


@pytest.mark.parametrize(("spec", "shape", "bpw"), [
    ("w4g128", (4096, 4096), 4.125),
    ("w4g64", (4096, 4096), 4.25),
    ("w4g128asym", (4096, 4096), 4.15625),  # + a 4-bit zero per group
    ("w8ch", (1024, 512), 8 + 16 / 512),
    ("w8t", (1024, 512), 8 + 16 / (1024 * 512)),
    ("w4g64", (10, 200), 4 + 4 * 16 / 200),  # ceil(200/64) = 4 groups, the last partial
])
def test_exact_bits_per_weight(spec: str, shape: tuple[int, int], bpw: float) -> None:
    assert parse_scheme(spec).bits_per_weight(shape) == pytest.approx(bpw, rel=0, abs=1e-12)


def test_partial_last_group_has_its_own_scale() -> None:
    s = parse_scheme("w4g64")
    w = torch.zeros(2, 100)
    w[:, 64:] = 1.0  # only the partial group (36 columns) is non-zero
    w[:, :64] = 0.01
    q = s.quantize(w)
    assert q.params["scale"].shape == (2, 2)
    assert q.params["scale"][0, 1].item() == pytest.approx(1.0 / 7.5, rel=1e-3)
    assert torch.allclose(s.dequantize(q)[:, 64:], torch.full((2, 36), 14 / 15), rtol=1e-3)


def test_codes_match_gptq_and_compressed_tensors_convention() -> None:
    # symmetric 4-bit: s = absmax / 7.5, q = round(w/s) + 8, clamped to [0, 15]
    s = parse_scheme("w4ch")
    w = torch.tensor([[-1.5, -0.1, 0.0, 0.1, 1.5]])
    q = s.quantize(w)
    scale = torch.tensor(1.5 / 7.5).half().float()
    expected = torch.clamp(torch.round(w / scale) + 8, 0, 15).to(torch.uint8)
    assert torch.equal(q.codes, expected)
    assert q.codes[0, 2] == 8


def test_asymmetric_zero_point_and_range_include_zero() -> None:
    s = parse_scheme("w4chasym")
    w = torch.tensor([[0.5, 1.0, 2.0, 3.0]])  # all positive: range widened to [0, 3]
    q = s.quantize(w)
    assert q.params["zero"].item() == 0
    assert q.params["scale"].item() == pytest.approx(3 / 15, rel=1e-3)


def test_all_zero_rows_are_exact() -> None:
    for spec in ("w4g64", "w4g64asym", "w8t"):
        s = parse_scheme(spec)
        assert torch.equal(s.dequantize(s.quantize(torch.zeros(4, 128))), torch.zeros(4, 128))


@pytest.mark.parametrize("bad", ["w1g64", "w9ch", "w4g0", "w4g-8"])
def test_bad_int_schemes_are_refused(bad: str) -> None:
    with pytest.raises(LowbitError):
        parse_scheme(bad)


def test_unknown_scheme_lists_examples() -> None:
    with pytest.raises(LowbitError, match="w4g64"):
        parse_scheme("x4")


def test_group_interface_matches_whole_tensor_quantization() -> None:
    s = parse_scheme("w4g64asym")
    w = weights((16, 200))
    q = s.quantize(w)
    codes, params = [], []
    for start in range(0, 200, 64):
        p = s.fit(w[:, start : start + 64])
        c, _ = s.quantize_with(w[:, start : start + 64], p)
        codes.append(c)
        params.append(p)
    q2 = s.assemble(q.shape, torch.cat(codes, dim=1), params)
    assert torch.equal(q.codes, q2.codes)
    assert torch.equal(q.params["scale"], q2.params["scale"])
    assert torch.equal(q.params["zero"], q2.params["zero"])


def test_weights_too_large_for_fp16_scales() -> None:
    with pytest.raises(LowbitError, match="fp16"):
        parse_scheme("w4ch").quantize(torch.full((1, 4), 1e6))


def test_spec_is_canonical() -> None:
    assert IntScheme.parse("W4G64SYM") == IntScheme(4, True, 64, "group")
    assert parse_scheme("int:w4g128asym").spec() == "int:w4g128asym"
    assert math.isclose(parse_scheme("w8t").bits_per_weight((2, 2)), 8 + 16 / 4)


@pytest.mark.parametrize("spec", ["w4g64", "w3g64asym", "w4ch", "w8t", "w2g32asym"])
def test_in_place_column_quantizer_equals_quantize_with(spec: str) -> None:
    # GPTQ's hot loop uses quantize_column_; it must give quantize_with's codes and values exactly.
    scheme = parse_scheme(spec)
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(3)) * 0.05
    params = scheme.fit(w[:, :64] if scheme.granularity == "group" else w)
    grid = scheme.column_grid(params, 0)
    for j in (0, 5, 63):
        col = w[:, j] * 1.3  # off the fitted range too: clamping included
        codes = torch.empty(48, dtype=torch.uint8)
        q = scheme.quantize_column_(col.clone(), grid, codes)
        c_ref, q_ref = scheme.quantize_with(col.unsqueeze(1), grid)
        assert torch.equal(codes, c_ref[:, 0]) and torch.equal(q, q_ref[:, 0])
