"""Prepare → train → convert: swap quantized linears for trainable fake-quantized ones and back.

``prepare`` replaces each target by a :class:`FakeQuantLinear` whose latent
float weight starts where the PTQ init puts it: the original float weight
wherever that rounds to the init's code (all of it, for RTN), the init's
grid value elsewhere (GPTQ moved those codes), so the first forward equals the
PTQ model's. ``convert`` turns each one back into the
:class:`QuantizedTensor` of its scheme, which any format writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from lowbit.qat.fake_quant import FakeQuantizer, fake_quant_act_int8, fake_quantizer_for
from lowbit.runtime.quant_linear import _set_module
from lowbit.schemes import get_scheme
from lowbit.schemes.base import QuantizedTensor

#: How activation fake-quantization is recorded in a converted tensor's ``meta``.
ACT_INT8_META = "int8-per-token-sym"


class FakeQuantLinear(nn.Module):
    """``y = fq_act(x) @ fq(W).T + b`` with a trainable latent weight ``W`` (float32)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fq: FakeQuantizer, act8: bool = False,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.fq = fq
        self.act8 = act8
        self.meta = dict(meta or {})

    def quantized_weight(self) -> torch.Tensor:
        """The weight the quantized model computes with (gradients pass straight through)."""
        return self.fq(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act8:
            x = fake_quant_act_int8(x)
        return nn.functional.linear(x, self.quantized_weight(), self.bias)

    def trainable(self) -> dict[str, nn.Parameter]:
        """Parameters QAT updates: the latent weight, and the scales under LSQ."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def to_quantized(self) -> QuantizedTensor:
        """The trained weight as its scheme's representation."""
        q = self.fq.export(self.weight)
        q.meta = {**self.meta, **q.meta}
        if self.act8:
            q.meta["act_quant"] = ACT_INT8_META
        return q

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, fq={type(self.fq).__name__}, act8={self.act8}"


def latent_init(fq: FakeQuantizer, w: torch.Tensor, q0: QuantizedTensor) -> torch.Tensor:
    """Float weight where it already rounds to the init's value, the init's value elsewhere."""
    deq0 = get_scheme(q0.scheme).dequantize(q0, torch.float32).to(w.device)
    return torch.where(fq.values(w) == deq0, w, deq0)


def prepare(model: nn.Module, float_weights: dict[str, torch.Tensor], inits: dict[str, QuantizedTensor],
            lsq: bool = False, act8: bool = False, kind: str | None = None) -> dict[str, FakeQuantLinear]:
    """Swap each module named in ``inits`` for a :class:`FakeQuantLinear` (in place).

    Args:
        model: the model (its modules named in ``inits`` are replaced).
        float_weights: the float weight ``[O, I]`` of each target.
        inits: the PTQ result of each target (its grid and codes).
        lsq: make the scales trainable.
        act8: fake-quantize each linear's input to int8 per token.
        kind: force an adapter (``affine`` / ``groupwise`` / ``dynamic``); default: the scheme's best.
    """
    out: dict[str, FakeQuantLinear] = {}
    for name, q0 in inits.items():
        w = float_weights[name].detach().float()
        scheme = get_scheme(q0.scheme)
        fq = fake_quantizer_for(scheme, q0.to("cpu"), w.cpu(), lsq, kind).to(w.device)
        old = model.get_submodule(name)
        bias = getattr(old, "bias", None)
        new = FakeQuantLinear(latent_init(fq, w, q0), bias, fq, act8, q0.meta).to(w.device)
        _set_module(model, name, new)
        out[name] = new
    return out


def fake_quant_modules(model: nn.Module) -> Iterator[tuple[str, FakeQuantLinear]]:
    """Every :class:`FakeQuantLinear` in ``model`` with its qualified name."""
    for name, mod in model.named_modules():
        if isinstance(mod, FakeQuantLinear):
            yield name, mod


def convert(model: nn.Module) -> dict[str, QuantizedTensor]:
    """The representation of every fake-quantized linear (the caller installs them)."""
    return {name: mod.to_quantized() for name, mod in fake_quant_modules(model)}


def _act_int8_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (fake_quant_act_int8(args[0]), *args[1:])


def attach_act_quant(module: nn.Module) -> None:
    """Fake-quantize ``module``'s input to int8 per token, as the W·A8 target will at run time."""
    module.register_forward_pre_hook(_act_int8_hook)
