"""`lowbit inspect`: what a model is made of, as far as quantization is concerned."""

from __future__ import annotations

from typing import Any

from torch import nn

from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import QuantLinear, storage_bytes

#: Group sizes users commonly pick (GPTQ/AWQ 128, lowbit 64, GGUF 32/256).
COMMON_GROUPS = (32, 64, 128, 256)


def describe(loaded: LoadedModel) -> dict[str, Any]:
    """Architecture, parameter count, every linear with the group sizes dividing its input, sizes."""
    linears = []
    for name, mod in loaded.model.named_modules():
        if isinstance(mod, nn.Linear | QuantLinear):
            o, i = mod.out_features, mod.in_features
            linears.append({
                "name": name,
                "shape": [o, i],
                "groups_dividing_input": [g for g in COMMON_GROUPS if i % g == 0],
                "scheme": mod.scheme_spec if isinstance(mod, QuantLinear) else None,
                "skipped_by_default": any(name == s or name.endswith("." + s) for s in loaded.arch.skip),
            })
    return {
        "name": loaded.name,
        "architecture": type(loaded.model).__name__,
        "family": loaded.arch.family,
        "kind": loaded.arch.kind,
        "params": loaded.params,
        "float_bytes": loaded.float_bytes,
        "stored_bytes": storage_bytes(loaded.model),
        "variant": loaded.variant,
        "base_model": loaded.base,
        "linears": linears,
    }
