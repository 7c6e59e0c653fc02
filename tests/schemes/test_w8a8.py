import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.schemes import parse_scheme
from lowbit.schemes.int_affine import IntScheme
from lowbit.schemes.w8a8 import W8A8Scheme
from tests.conformance import SchemeConformance, weights


class TestW8A8Conformance(SchemeConformance):
    # The static spec stores an input scale a method attaches (tested below), so
    # the storage contract, which quantizes weights alone, runs on the dynamic one.
    specs = ["w8a8"]


def test_specs_parse_and_round_trip() -> None:
    assert parse_scheme("w8a8") == W8A8Scheme(False)
    assert parse_scheme("wa:w8a8static") == W8A8Scheme(True)
    assert parse_scheme(W8A8Scheme(True).spec()) == W8A8Scheme(True)
    assert W8A8Scheme(False).act_bits == 8 and W8A8Scheme(True).act_granularity == "tensor"


def test_weight_codes_are_the_int8_per_channel_grid() -> None:
    w = weights((32, 64))
    q = W8A8Scheme().quantize(w)
    ref = IntScheme(8, True, 0, "channel").quantize(w)
    assert torch.equal(q.codes, ref.codes) and torch.equal(q.params["scale"], ref.params["scale"])
    signed = W8A8Scheme.int8_weight(q)
    assert signed.dtype == torch.int8
    assert torch.equal(signed.long(), q.codes.long() - 128)


def test_storage_counts_the_static_input_scale() -> None:
    shape = (32, 64)
    assert W8A8Scheme(True).storage_bits(shape) == W8A8Scheme(False).storage_bits(shape) + 32
    assert W8A8Scheme(False).storage_bits(shape) == 32 * 64 * 8 + 32 * 16


def test_per_token_codes_by_hand() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [300.0, 1.0, -1.0, 2.0]])
    q, s = W8A8Scheme().quantize_act(x)
    assert torch.allclose(s.squeeze(1)[[0, 2]], torch.tensor([2.0 / 127, 300.0 / 127]))
    assert q[0].tolist() == [64, -127, 32, 0]  # round(1 / (2/127)) = round(63.5) = 64 (half to even)
    assert q[1].tolist() == [0, 0, 0, 0]
    assert q[2].tolist() == [127, 0, 0, 1]


def test_static_scale_clamps_to_int8_range() -> None:
    x = torch.tensor([[1.0, -5.0, 0.02]])
    q, s = W8A8Scheme(True).quantize_act(x, torch.tensor([0.01]))
    assert q.tolist() == [[100, -128, 2]] and float(s) == pytest.approx(0.01)
    with pytest.raises(LowbitError, match="input scale"):
        W8A8Scheme(True).quantize_act(x, None)


def test_inf_row_stays_non_finite_and_others_unaffected() -> None:
    x = torch.randn(3, 16)
    clean = W8A8Scheme().fake_quant_act(x)
    x[1, 3] = float("inf")
    for scheme, scale in ((W8A8Scheme(), None), (W8A8Scheme(True), torch.tensor([0.05]))):
        y = scheme.fake_quant_act(x, scale)
        assert not torch.isfinite(y[1]).all()
        assert torch.isfinite(y[[0, 2]]).all()
    assert torch.equal(W8A8Scheme().fake_quant_act(x)[[0, 2]], clean[[0, 2]])


def test_input_scale_must_be_positive_and_finite() -> None:
    s = W8A8Scheme(True)
    q = s.quantize(weights((8, 16)))
    assert float(s.with_input_scale(q, 0.5).params["input_scale"]) == 0.5
    for bad in (0.0, float("inf"), float("nan")):
        with pytest.raises(LowbitError, match="input scale"):
            s.with_input_scale(q, bad, "layer.x")
    with pytest.raises(LowbitError, match="dynamic"):
        W8A8Scheme(False).with_input_scale(q, 0.5)
