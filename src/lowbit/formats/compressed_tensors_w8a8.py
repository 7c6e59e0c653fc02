"""compressed-tensors ``int-quantized``: the W8A8 checkpoint vLLM serves.

Layout of ``OUT/`` (a Hugging Face folder):

* ``config.json``: the base config plus ``quantization_config`` with
  ``quant_method: compressed-tensors``, ``format: int-quantized``,
  ``quantization_status: compressed``, one config group targeting ``Linear``
  (weights int8 symmetric per channel; input activations int8 symmetric, per
  token dynamic, or per tensor static) and ``ignore`` listing every Linear left
  float (the output head);
* ``model.safetensors``: for each quantized linear ``NAME``: ``NAME.weight``
  int8 ``[O, I]`` (lowbit's code − 128), ``NAME.weight_scale`` fp32 ``[O, 1]``
  (the fp16 scale, exactly widened), ``NAME.input_scale`` fp32 ``[1]`` when
  static, ``NAME.bias`` if any; every other tensor as it is (tied head once).

SmoothQuant leaves no tensor of its own: its factors are already folded into
the norms and weights. Dequantizing with compressed-tensors' own
``IntQuantizationCompressor`` reproduces lowbit's weights exactly (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import QuantLinear, quantized_modules
from lowbit.schemes.w8a8 import W8A8Scheme
from lowbit.utils.atomic import atomic_dir, check_output_path


def quantization_config(static: bool, ignore: list[str]) -> dict[str, Any]:
    """The ``quantization_config`` block for a W8A8 model."""
    weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "group_size": None,
               "dynamic": False, "actorder": None, "observer": "minmax", "block_structure": None}
    acts = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor" if static else "token",
            "group_size": None, "dynamic": not static, "actorder": None,
            "observer": "minmax" if static else None, "block_structure": None}
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "ignore": ignore,
        "kv_cache_scheme": None,
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": acts,
                                      "output_activations": None, "format": "int-quantized"}},
    }


def _w8a8_modules(loaded: LoadedModel) -> tuple[dict[str, QuantLinear], bool]:
    mods = dict(quantized_modules(loaded.model))
    if not mods:
        raise LowbitError("the model has no quantized layers; quantize it with a W8A8 variant first")
    specs = {m.scheme_spec for m in mods.values()}
    if any(not isinstance(m.scheme, W8A8Scheme) for m in mods.values()) or len(specs) != 1:
        raise LowbitError(f"the compressed-tensors int-quantized format holds W8A8 models (rtn:w8a8, smoothquant:w8a8, "
                          f"smoothquant:w8a8static); this model's linears use {', '.join(sorted(specs))}")
    return mods, next(iter(mods.values())).scheme.static  # type: ignore[attr-defined]


def save_compressed_tensors(loaded: LoadedModel, out: Path, overwrite: bool = False,
                            inputs: list[Path] | None = None) -> Path:
    """Write a W8A8-quantized ``loaded`` as a compressed-tensors int-quantized folder, atomically."""
    out = Path(out)
    check_output_path(out, inputs, overwrite)
    model = loaded.model
    mods, static = _w8a8_modules(loaded)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in mods or (t.numel() and t.data_ptr() in seen):
            continue
        seen.add(t.data_ptr())
        tensors[key] = t.detach().contiguous().cpu()
    for name, mod in mods.items():
        q = mod.quantized
        tensors[f"{name}.weight"] = W8A8Scheme.int8_weight(q).contiguous().cpu()
        tensors[f"{name}.weight_scale"] = q.params["scale"].float().reshape(-1, 1).contiguous().cpu()
        if static:
            tensors[f"{name}.input_scale"] = q.params["input_scale"].float().reshape(1).contiguous().cpu()
        if mod.bias is not None:
            tensors[f"{name}.bias"] = mod.bias.detach().contiguous().cpu()
    ignore = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in mods)
    cfg = model.config.to_dict()
    cfg["quantization_config"] = quantization_config(static, ignore)
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return out
