"""Per-layer weight error of a quantized model against its float original."""

from __future__ import annotations

import torch
from torch import nn

from lowbit.runtime.quant_linear import quantized_modules

#: Methods that fold scales into the weights before quantizing (AWQ, SmoothQuant):
#: their quantized weight approximates W·diag(s), not W, so this error means nothing for them.
RESCALING_METHODS = ("awq", "smoothquant")


@torch.inference_mode()
def layer_errors(float_model: nn.Module, quant_model: nn.Module) -> dict[str, float]:
    """``‖W − Ŵ‖_F / ‖W‖_F`` for every quantized linear (dimensionless, 0 = exact).

    A cheap, model-free picture of where a variant loses precision; the report
    plots it per layer.
    """
    out: dict[str, float] = {}
    for name, mod in quantized_modules(quant_model):
        try:
            w = float_model.get_submodule(name).weight.detach().float()
        except AttributeError:
            continue
        deq = mod.dequantized_weight(torch.float32).to(w.device)
        if deq.shape != w.shape:
            continue
        norm = float(w.norm())
        out[name] = float((deq - w).norm()) / norm if norm > 0 else 0.0
    return out
