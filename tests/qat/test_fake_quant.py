"""Fake quantizers: exact forward values, straight-through and LSQ gradients, export."""

from __future__ import annotations

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.qat.fake_quant import (
    AffineFakeQuant,
    DynamicFakeQuant,
    GroupwiseFakeQuant,
    adapter_kind,
    fake_quant_act_int8,
    fake_quantizer_for,
)
from lowbit.schemes import parse_scheme
from lowbit.schemes.base import QuantizedTensor
from tests.conformance import weights

SPECS = ["w3g64", "w4g64asym", "w2g32", "w4g48", "w8ch", "w4t", "w3g48asym"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("kind", ["affine", "groupwise", "dynamic"])
def test_forward_at_init_is_the_ptq_dequantization_bit_for_bit(spec: str, kind: str) -> None:
    scheme = parse_scheme(spec)
    w = weights((48, 192), seed=3)  # 192 % 48 == 0, 192 % 64 == 0; w4g48 on 192 tiles, others too
    q0 = scheme.quantize(w)
    fq = fake_quantizer_for(scheme, q0, w, kind=kind)
    assert torch.equal(fq(w), scheme.dequantize(q0))
    q = fq.export(w)
    assert q.scheme == q0.scheme and torch.equal(q.codes, q0.codes)
    for name, p in q0.params.items():
        assert torch.equal(q.params[name], p) and q.params[name].dtype == p.dtype


@pytest.mark.parametrize("spec", ["w3g64", "w4g64asym", "w4ch"])
def test_partial_last_group_matches_the_scheme(spec: str) -> None:
    scheme = parse_scheme(spec)
    w = weights((16, 200), seed=1)  # 200 = 3·64 + 8: a partial last group
    q0 = scheme.quantize(w)
    fq = AffineFakeQuant(scheme, q0)  # type: ignore[arg-type]
    assert torch.equal(fq(w), scheme.dequantize(q0))
    assert torch.equal(fq.export(w).codes, q0.codes)


def _reference_affine(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, qmax: int) -> torch.Tensor:
    """LSQ written with autograd: round as identity, clamp's own gradient."""
    u = w / s
    r = u + (torch.round(u) - u).detach()
    return (torch.clamp(r + z, 0, qmax) - z) * s


@pytest.mark.parametrize("spec", ["w3g64", "w4g64asym", "w3ch", "w4t"])
def test_ste_and_lsq_gradients_match_autograd_reference(spec: str) -> None:
    scheme = parse_scheme(spec)
    w0 = weights((32, 128), seed=5)
    q0 = scheme.quantize(w0)
    fq = AffineFakeQuant(scheme, q0, lsq=True)  # type: ignore[arg-type]
    # Move some weights outside the grid so both clamp branches are exercised.
    w = (w0 * 1.3).requires_grad_(True)
    g = torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    (fq(w) * g).sum().backward()
    assert fq.scale.grad is not None and w.grad is not None

    s = fq.scale.detach().clone().requires_grad_(True)
    w2 = (w0 * 1.3).requires_grad_(True)
    ref = _reference_affine(w2, s[:, fq.gidx], fq.zero[:, fq.gidx], scheme.qmax)  # type: ignore[attr-defined]
    (ref * g).sum().backward()
    torch.testing.assert_close(w.grad, w2.grad)
    torch.testing.assert_close(fq.scale.grad, s.grad, rtol=1e-4, atol=1e-6)
    clamped = (w.grad == 0).float().mean()
    assert 0 < clamped < 0.5  # some weights were clamped (zero gradient), most were not


def test_lsq_forward_uses_the_fp16_scale_it_will_store() -> None:
    scheme = parse_scheme("w3g64")
    w = weights((16, 128), seed=2)
    fq = AffineFakeQuant(scheme, scheme.quantize(w), lsq=True)  # type: ignore[arg-type]
    with torch.no_grad():
        fq.scale.mul_(1.0 + 1e-4)  # no longer an fp16 value
    q = fq.export(w)
    assert torch.equal(fq(w).detach(), scheme.dequantize(q))


def test_act_order_g_idx_is_honoured() -> None:
    scheme = parse_scheme("w4g32")
    w = weights((8, 128), seed=4)
    q0 = scheme.quantize(w)
    g_idx = torch.randperm(128, generator=torch.Generator().manual_seed(0)).to(torch.int32) // 32
    q0.params["g_idx"] = g_idx
    fq = AffineFakeQuant(scheme, q0)  # type: ignore[arg-type]
    scale = q0.params["scale"].float()[:, g_idx.long()]
    expected = (torch.clamp(torch.round(w / scale) + 8, 0, 15) - 8) * scale
    assert torch.equal(fq(w), expected)
    q = fq.export(w)
    assert torch.equal(q.params["g_idx"], g_idx)


def test_adapter_choice_and_lsq_refusal() -> None:
    scheme = parse_scheme("w4g64")
    assert adapter_kind(scheme) == "affine"
    w = weights((8, 64))
    q0 = scheme.quantize(w)
    assert isinstance(fake_quantizer_for(scheme, q0, w), AffineFakeQuant)
    assert isinstance(fake_quantizer_for(scheme, q0, w, kind="groupwise"), GroupwiseFakeQuant)
    assert isinstance(fake_quantizer_for(scheme, q0, w, kind="dynamic"), DynamicFakeQuant)
    with pytest.raises(LowbitError, match="lsq"):
        fake_quantizer_for(scheme, q0, w, lsq=True, kind="dynamic")


def test_generic_adapters_pass_gradients_straight_through() -> None:
    scheme = parse_scheme("w4g64")
    w0 = weights((8, 128))
    for kind in ("groupwise", "dynamic"):
        fq = fake_quantizer_for(scheme, scheme.quantize(w0), w0, kind=kind)
        w = w0.clone().requires_grad_(True)
        fq(w).sum().backward()
        assert torch.equal(w.grad, torch.ones_like(w0))


def test_groupwise_grid_stays_frozen_while_dynamic_refits() -> None:
    scheme = parse_scheme("w4g64")
    w = weights((8, 64), seed=7, outlier=False)
    q0 = scheme.quantize(w)
    grown = w * 2  # the group's range doubles
    frozen = fake_quantizer_for(scheme, q0, w, kind="groupwise")(grown)
    refit = fake_quantizer_for(scheme, q0, w, kind="dynamic")(grown)
    # The frozen grid ends at ±8 steps of its init scale (doubled weights clamp there); a refitted grid covers them.
    ends = 8 * q0.params["scale"].float()
    assert (frozen.abs() <= ends).all()
    assert (refit.abs() > ends).any()
    assert torch.equal(refit, scheme.dequantize(scheme.quantize(grown)))


def test_act_int8_per_token() -> None:
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 10, 64)
    x.requires_grad_(True)
    y = fake_quant_act_int8(x)
    s = x.detach().abs().amax(-1, keepdim=True) / 127
    levels = (y.detach() / s).round()
    assert torch.allclose(y.detach() / s, levels, atol=1e-3) and levels.abs().max() <= 127
    assert ((y.detach() - x.detach()).abs() <= s / 2 + 1e-6).all()
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_export_keeps_the_representation_shape() -> None:
    scheme = parse_scheme("w4t")
    w = weights((8, 64))
    q0 = scheme.quantize(w)
    q = AffineFakeQuant(scheme, q0)(w)  # type: ignore[arg-type]
    assert q.shape == w.shape
    out = AffineFakeQuant(scheme, q0).export(w)  # type: ignore[arg-type]
    assert isinstance(out, QuantizedTensor) and out.params["scale"].shape == q0.params["scale"].shape
