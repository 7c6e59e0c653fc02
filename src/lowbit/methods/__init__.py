"""Methods registry, variant resolution and the one entry point that quantizes a model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.methods.base import COMMON_OPTIONS, Method, QuantContext
from lowbit.methods.awq import AWQ
from lowbit.methods.bnb import BnbMethod
from lowbit.methods.gguf import GGUF
from lowbit.methods.gptq import GPTQ
from lowbit.methods.mixed import Mixed
from lowbit.methods.qat import QAT
from lowbit.methods.rtn import RTN
from lowbit.methods.smoothquant import SmoothQuant
from lowbit.models.loader import LoadedModel
from lowbit.registry import Registry
from lowbit.schemes import get_scheme
from lowbit.schemes.base import QuantizedTensor, Scheme, check_finite
from lowbit.variant import VariantString

METHODS: Registry[Method] = Registry("method")
METHODS.add("rtn", RTN(), "nearest")
METHODS.add("bnb", BnbMethod(), "bitsandbytes")
METHODS.add("gguf", GGUF(), "llama.cpp")
METHODS.add("gptq", GPTQ())
METHODS.add("awq", AWQ())
METHODS.add("smoothquant", SmoothQuant(), "sq")
METHODS.add("qat", QAT())
METHODS.add("mixed", Mixed(), "mixed-precision")


@dataclass(frozen=True)
class Variant:
    """A validated variant: method, scheme and typed options."""

    text: str
    method: Method
    scheme: Scheme
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def act_bits(self) -> int:
        """Activation bits at run time (16 when activations stay float)."""
        return self.method.act_bits(self.scheme, self.options)


def resolve_variant(text: str) -> Variant:
    """Parse and validate ``METHOD:SCHEME[+OPTION…]``."""
    vs = VariantString.parse(text)
    method = METHODS.get(vs.method)
    scheme = method.resolve_scheme(vs.scheme)
    method.check_scheme(scheme)
    if getattr(scheme, "needs_calibration", False) and not method.needs_calibration:
        raise LowbitError(f"scheme {scheme.spec()} takes its activation scales from calibration, which "
                          f"{method.name} does not run; use a calibrating method (e.g. smoothquant:{vs.scheme})")
    specs = method.all_options()
    options = {name: spec.default for name, spec in specs.items()}
    for name, raw in vs.options:
        if name not in specs:
            raise LowbitError(f"unknown option '{name}' for method {method.name}; options: {', '.join(sorted(specs))}")
        options[name] = specs[name].convert(raw, method.name)
    method.check_options(scheme, options)
    return Variant(str(vs), method, scheme, options)


def select_targets(loaded: LoadedModel, include_head: bool = False) -> dict[str, nn.Linear]:
    """Linears to quantize: every nn.Linear except the family's output heads (unless asked)."""
    out: dict[str, nn.Linear] = {}
    for name, mod in loaded.model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        is_head = any(name == s or name.endswith("." + s) for s in loaded.arch.skip)
        if is_head and not include_head:
            continue
        out[name] = mod
    if not out:
        raise LowbitError(f"model {loaded.name} has no Linear layers to quantize")
    return out


@dataclass
class QuantResult:
    """What quantizing one variant produced and cost."""

    variant: Variant
    tensors: dict[str, QuantizedTensor]
    calib_seconds: float
    quant_seconds: float
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per quantized weight, every scale, zero and index counted."""
        # Each tensor names its own scheme: mixtures (GGUF Q4_K_M) differ per tensor.
        bits = sum(get_scheme(q.scheme).tensor_storage_bits(q) for q in self.tensors.values())
        return bits / sum(q.numel for q in self.tensors.values())


def quantize_model(loaded: LoadedModel, variant: Variant, calib: TokenSet | None,
                   device: torch.device | None = None) -> QuantResult:
    """Quantize ``loaded.model`` in place with ``variant``."""
    device = device or next(loaded.model.parameters()).device
    targets = select_targets(loaded, bool(variant.options.get("lm_head")))
    for name, lin in targets.items():
        variant.scheme.check_shape(tuple(lin.weight.shape), name)
        check_finite(name, lin.weight)
    ctx = QuantContext(loaded, targets, variant.scheme, variant.options, calib, device)
    start = time.perf_counter()
    variant.method.quantize(ctx)
    elapsed = time.perf_counter() - start
    missing = sorted(set(targets) - set(ctx.installed))
    if missing:
        raise RuntimeError(f"method {variant.method.name} did not quantize {missing[:3]}…")
    calib_s = float(ctx.stats.pop("calib_seconds", 0.0))
    loaded.variant = variant.text
    loaded.base = loaded.base or loaded.spec
    return QuantResult(variant, dict(ctx.installed), calib_s, elapsed - calib_s, ctx.stats)


__all__ = ["COMMON_OPTIONS", "METHODS", "Method", "QuantContext", "QuantResult", "Variant",
           "quantize_model", "resolve_variant", "select_targets"]
