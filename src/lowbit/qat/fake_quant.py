"""Fake quantizers: a weight's forward value on a scheme's grid, with straight-through gradients.

A fake quantizer maps the latent float weight ``W`` ``[O, I]`` to the value the
quantized model will compute with, ``ŵ``, and lets gradients through the
rounding as if it were the identity (the straight-through estimator, STE). It
can also :meth:`~FakeQuantizer.export` the codes of ``W`` as the same
:class:`QuantizedTensor` a PTQ method would produce, so training ends in the
representation every format writes.

Three adapters cover every scheme lowbit has or will have:

* :class:`AffineFakeQuant` — integer affine grids (:class:`IntScheme`). The
  grid (scale, zero point, GPTQ's ``g_idx``) is read from the PTQ result, so
  step 0 reproduces the init exactly; gradients of clamped weights are zero;
  ``lsq`` makes the scales trainable (LSQ, Esser et al. 2020).
* :class:`GroupwiseFakeQuant` — any scheme with the column-group interface
  (``column_group_size`` / ``fit`` / ``quantize_with`` / ``assemble``, as
  GPTQ uses): the grid is fitted once and frozen, codes follow ``W``.
* :class:`DynamicFakeQuant` — any scheme at all, through plain
  ``quantize`` / ``dequantize`` of the current weight at every forward.

:func:`fake_quantizer_for` picks the most specific one; :data:`ADAPTERS` lets a
scheme family register its own (e.g. an LSQ-capable NF4 adapter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.schemes.int_affine import IntScheme

_FP16_MAX = 65504.0
_FP16_TINY = 2.0**-24


def _ste(value: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, identity gradient to ``w`` (bit-exact: adds an exact 0)."""
    return value.detach() + (w - w.detach())


class FakeQuantizer(nn.Module):
    """Base class: ``forward(W) -> ŵ`` with STE gradients, and export to a :class:`QuantizedTensor`."""

    #: Whether :attr:`learnable` parameters (scales) exist for ``lsq``.
    supports_lsq: bool = False

    def __init__(self, scheme: Scheme, shape: tuple[int, int]) -> None:
        super().__init__()
        self.scheme = scheme
        self.shape = tuple(shape)

    def values(self, w: torch.Tensor) -> torch.Tensor:
        """The quantized value of each weight of ``w`` (no gradient)."""
        with torch.no_grad():
            return self.forward(w.detach())

    def export(self, w: torch.Tensor) -> QuantizedTensor:
        """Codes of ``w`` on this quantizer's grid, as the scheme's representation."""
        raise NotImplementedError


class _AffineSTE(torch.autograd.Function):
    """``ŵ = s·(clamp(round(W/s) + z, 0, qmax) − z)``; STE with LSQ's scale gradient.

    ``s`` and ``z`` broadcast against ``W`` (per tensor ``[1, 1]``, per channel
    ``[O, 1]``, per group ``[O, n_g, 1]`` against ``W`` viewed ``[O, n_g, G]``).
    Backward keeps only a 1-byte in-range mask and ``ŵ`` itself (which the
    matmul keeps anyway): the scale gradient follows from them, since
    ``∂ŵ/∂s = (ŵ − W·inside)/s`` — ``round(u) − u`` inside the range and the
    clamped level outside it, LSQ's gradient. Elementwise passes over every
    weight are half the cost of a training step on CPU, so they are counted.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, s: torch.Tensor, z: torch.Tensor,  # type: ignore[override]
                qmax: int) -> torch.Tensor:
        t = w / s
        t.round_().add_(z)
        out = t.clamp(0, qmax)
        inside = out == t
        del t
        # Same operation order as IntScheme.dequantize, so the exported model is bit-identical.
        out.sub_(z).mul_(s)
        ctx.save_for_backward(w, s, inside, out)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        w, s, inside, out = ctx.saved_tensors
        gw = g * inside
        gs = None
        if ctx.needs_input_grad[1]:
            # Σ_group g·(ŵ − W·inside) / s, as two batched dot products (no per-weight temporaries).
            gs = (_group_dot(g, out, s.shape) - _group_dot(gw, w, s.shape)) / s
        return gw, gs, None, None


def _group_dot(a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``(a·b)`` summed down to ``shape`` (the scale's shape), for ``a``, ``b`` shaped like the weight view."""
    if a.dim() == 3 and shape[-1] == 1:  # [O, n_g, G] groups
        g = a.shape[-1]
        return torch.bmm(a.reshape(-1, 1, g), b.reshape(-1, g, 1)).reshape(shape)
    if len(shape) == 2 and shape[0] == a.shape[0] and shape[1] == 1:  # per channel
        return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(shape)
    return (a * b).sum_to_size(shape)


class AffineFakeQuant(FakeQuantizer):
    """Integer affine grid read from a PTQ result (``scale``, ``zero``, ``g_idx``)."""

    supports_lsq = True

    def __init__(self, scheme: IntScheme, q0: QuantizedTensor, lsq: bool = False) -> None:
        super().__init__(scheme, q0.shape)
        o, i = self.shape
        scale = q0.params["scale"].detach().float().cpu()
        if scheme.gran == "tensor":
            scale = scale.reshape(1, 1)
        if scheme.symmetric:
            zero = torch.full_like(scale, float(1 << (scheme.bits - 1)))
        else:
            zero = q0.params["zero"].detach().float().cpu().reshape(scale.shape)
        self.has_g_idx = "g_idx" in q0.params
        if self.has_g_idx:
            gidx = q0.params["g_idx"].detach().long().cpu()
        elif scheme.gran == "tensor":
            gidx = torch.zeros(i, dtype=torch.long)
        else:
            gidx = torch.arange(i) // scheme.column_group_size(i)
        self.scale_shape = tuple(q0.params["scale"].shape)
        self.lsq = lsq
        if lsq:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.register_buffer("zero", zero)
        self.register_buffer("gidx", gidx)
        self.qmax = scheme.qmax

    def stored_scale(self) -> torch.Tensor:
        """The scale as stored (fp16 values in float32); STE through the fp16 rounding under LSQ."""
        s = self.scale
        if not self.lsq:
            return s
        stored = s.detach().clamp(_FP16_TINY, _FP16_MAX).half().float()
        return stored + (s - s.detach())

    def _views(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``W``, scale and zero in shapes that broadcast (no per-weight copy of the grid when groups tile rows)."""
        s, z = self.stored_scale(), self.zero
        o, i = self.shape
        if self.scheme.granularity != "group" and not self.has_g_idx:
            return w, s, z  # [1, 1] or [O, 1]: broadcasts as is
        g = self.scheme.column_group_size(i)
        if self.has_g_idx or i % g:
            return w, s[:, self.gidx], z[:, self.gidx]  # act-order or a partial last group: index per column
        return w.reshape(o, i // g, g), s.unsqueeze(-1), z.unsqueeze(-1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wv, s, z = self._views(w)
        return _AffineSTE.apply(wv, s, z, self.qmax).reshape(self.shape)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep learned scales inside fp16's positive range after an optimizer step."""
        if self.lsq:
            self.scale.clamp_(_FP16_TINY, _FP16_MAX)

    @torch.no_grad()
    def export(self, w: torch.Tensor) -> QuantizedTensor:
        scheme = self.scheme
        assert isinstance(scheme, IntScheme)
        s = self.stored_scale().detach()
        wv, se, z = self._views(w.detach().float())
        codes = torch.clamp(torch.round(wv / se.detach()) + z, 0, self.qmax).reshape(self.shape)
        params = {"scale": s.half().reshape(self.scale_shape).clone()}
        if not scheme.symmetric:
            params["zero"] = self.zero.to(torch.uint8).reshape(self.scale_shape).clone()
        if self.has_g_idx:
            params["g_idx"] = self.gidx.to(torch.int32).clone()
        return QuantizedTensor(scheme.spec(), self.shape, codes.to(torch.uint8).contiguous(), params)


class GroupwiseFakeQuant(FakeQuantizer):
    """Any scheme with the column-group interface: grid fitted once on ``w_grid``, then frozen."""

    def __init__(self, scheme: Scheme, w_grid: torch.Tensor) -> None:
        super().__init__(scheme, tuple(w_grid.shape))
        o, i = self.shape
        g = scheme.column_group_size(i)
        self.bounds = [(a, min(a + g, i)) for a in range(0, i, g)]
        self.param_keys: list[list[str]] = []
        for j, (a, b) in enumerate(self.bounds):
            params = scheme.fit(w_grid[:, a:b].detach().float())
            self.param_keys.append(sorted(params))
            for k, v in params.items():
                self.register_buffer(f"p{j}_{k}", v.detach().clone())

    def _group_params(self, j: int) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"p{j}_{k}") for k in self.param_keys[j]}

    def _quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, vals = [], []
        for j, (a, b) in enumerate(self.bounds):
            c, v = self.scheme.quantize_with(w[:, a:b], self._group_params(j))
            codes.append(c)
            vals.append(v.float())
        return torch.cat(codes, dim=1), torch.cat(vals, dim=1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, vals = self._quantize(w.detach().float())
        return _ste(vals, w)

    @torch.no_grad()
    def export(self, w: torch.Tensor) -> QuantizedTensor:
        codes, _ = self._quantize(w.detach().float())
        return self.scheme.assemble(self.shape, codes, [self._group_params(j) for j in range(len(self.bounds))])


class DynamicFakeQuant(FakeQuantizer):
    """Any scheme: ``dequantize(quantize(W))`` of the current weight at every forward."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            vals = self.scheme.dequantize(self.scheme.quantize(w.detach().float()), torch.float32)
        return _ste(vals, w)

    @torch.no_grad()
    def export(self, w: torch.Tensor) -> QuantizedTensor:
        return self.scheme.quantize(w.detach().float())


#: How a fake quantizer is built: (scheme, PTQ init, float weight, lsq) -> quantizer.
AdapterFactory = Callable[[Scheme, QuantizedTensor, torch.Tensor, bool], FakeQuantizer]


def _affine(scheme: Scheme, q0: QuantizedTensor, w: torch.Tensor, lsq: bool) -> FakeQuantizer:
    assert isinstance(scheme, IntScheme)
    return AffineFakeQuant(scheme, q0, lsq)


def _groupwise(scheme: Scheme, q0: QuantizedTensor, w: torch.Tensor, lsq: bool) -> FakeQuantizer:
    return GroupwiseFakeQuant(scheme, w)


def _dynamic(scheme: Scheme, q0: QuantizedTensor, w: torch.Tensor, lsq: bool) -> FakeQuantizer:
    return DynamicFakeQuant(scheme, tuple(w.shape))


#: Scheme class → adapter; families with their own fake quantizer register here.
ADAPTERS: dict[type[Scheme], AdapterFactory] = {IntScheme: _affine}
#: Adapters by kind, for :func:`fake_quantizer_for`'s ``kind`` argument (tests, comparisons).
KINDS: dict[str, AdapterFactory] = {"affine": _affine, "groupwise": _groupwise, "dynamic": _dynamic}


def has_groupwise_interface(scheme: Scheme) -> bool:
    """Whether ``scheme`` overrides the column-group methods GPTQ uses."""
    cls = type(scheme)
    return all(getattr(cls, m) is not getattr(Scheme, m) for m in ("column_group_size", "fit", "quantize_with", "assemble"))


def adapter_kind(scheme: Scheme) -> str:
    """``"affine"`` (or a registered family adapter), ``"groupwise"`` or ``"dynamic"``."""
    for cls in type(scheme).__mro__:
        if cls in ADAPTERS:
            return "affine" if ADAPTERS[cls] is _affine else cls.__name__
    return "groupwise" if has_groupwise_interface(scheme) else "dynamic"


def supports_lsq(scheme: Scheme) -> bool:
    """Whether ``+lsq`` (trainable scales) is available for ``scheme``."""
    return any(cls in ADAPTERS for cls in type(scheme).__mro__)


def fake_quantizer_for(scheme: Scheme, q0: QuantizedTensor, w: torch.Tensor, lsq: bool = False,
                       kind: str | None = None) -> FakeQuantizer:
    """The fake quantizer for one weight ``w`` ``[O, I]`` initialised from its PTQ result ``q0``."""
    if kind is not None:
        factory = KINDS[kind]
    else:
        factory = next((ADAPTERS[c] for c in type(scheme).__mro__ if c in ADAPTERS), None)
        if factory is None:
            factory = _groupwise if has_groupwise_interface(scheme) else _dynamic
    fq = factory(scheme, q0, w, lsq)
    if lsq and not fq.supports_lsq:
        raise LowbitError(f"+lsq (trainable scales) is not available for scheme {scheme.spec()}; "
                          "it needs an affine grid (int:…) — drop +lsq to train the weights only")
    return fq


def fake_quant_act_int8(x: torch.Tensor) -> torch.Tensor:
    """Dynamic symmetric int8 per-token fake quantization of activations ``[..., I]`` (STE).

    ``s = max|x| / 127`` per token (last axis), ``x̂ = s·clamp(round(x/s), −127, 127)``:
    the scheme W·A8 integer kernels use (SmoothQuant).
    """
    with torch.no_grad():
        s = (x.detach().abs().amax(dim=-1, keepdim=True) / 127.0).clamp(min=1e-12)
        xq = torch.clamp(torch.round(x.detach() / s), -127, 127) * s
    return _ste(xq, x)
