"""The ``bnb`` format: a model folder exactly as transformers saves a bitsandbytes model.

``OUT/config.json`` is the base config plus the ``quantization_config`` that
transformers writes for ``BitsAndBytesConfig(load_in_4bit=…)`` /
``(load_in_8bit=…)``; ``OUT/model.safetensors`` holds every float tensor under
its usual name and each quantized linear in bitsandbytes' layout
(:mod:`.bnb_layout`). ``AutoModelForCausalLM.from_pretrained(OUT)`` with
bitsandbytes installed loads it. The safetensors metadata also records the
lowbit variant and base model (transformers ignores those entries).

:func:`load_bnb_folder` reads such folders — written by lowbit or by
transformers itself — into lowbit's representation, without bitsandbytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lowbit.errors import LowbitError
from lowbit.formats.bnb_layout import QS_PREFIX, from_bnb_4bit, from_bnb_int8, to_bnb
from lowbit.formats.lowbit_format import finish_model, float_state, install_with_bias
from lowbit.models.arch import arch_for_model_type
from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import QuantLinear, quantized_modules
from lowbit.schemes import get_scheme
from lowbit.schemes.bnb import Bnb4bitScheme, BnbInt8Scheme
from lowbit.utils.atomic import atomic_dir, check_output_path

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
DEFAULT_THRESHOLD = 6.0


def quantization_config(scheme: Bnb4bitScheme | BnbInt8Scheme, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """``config.json → quantization_config`` as transformers 5 writes it for this scheme."""
    four = isinstance(scheme, Bnb4bitScheme)
    return {
        "_load_in_4bit": four,
        "_load_in_8bit": not four,
        "bnb_4bit_compute_dtype": "float32",
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": scheme.quant_type if four else "fp4",
        "bnb_4bit_use_double_quant": scheme.double_quant if four else False,
        "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": None,
        "llm_int8_threshold": float(threshold),
        "load_in_4bit": four,
        "load_in_8bit": not four,
        "quant_method": "bitsandbytes",
    }


def _one_scheme(loaded: LoadedModel) -> tuple[Bnb4bitScheme | BnbInt8Scheme, float]:
    specs = {mod.scheme_spec for _, mod in quantized_modules(loaded.model)}
    if not specs:
        raise LowbitError("the model has no quantized layers; quantize it with a bnb variant before saving as bnb")
    if len(specs) > 1:
        raise LowbitError(f"the bnb format holds one grid per model, this model mixes {', '.join(sorted(specs))}")
    scheme = get_scheme(specs.pop())
    if not isinstance(scheme, Bnb4bitScheme | BnbInt8Scheme):
        raise LowbitError(f"the bnb format stores bitsandbytes grids (bnb:nf4, bnb:fp4, bnb:nf4-dq, bnb:int8), "
                          f"not {scheme.spec()}; quantize with e.g. --variant bnb:nf4-dq")
    thresholds = {float(mod.meta.get("threshold", DEFAULT_THRESHOLD)) for _, mod in quantized_modules(loaded.model)}
    return scheme, thresholds.pop() if len(thresholds) == 1 else DEFAULT_THRESHOLD


def save_bnb_folder(loaded: LoadedModel, out: Path, overwrite: bool = False, inputs: list[Path] | None = None) -> Path:
    """Write ``loaded`` (quantized with a bnb variant) as a transformers + bitsandbytes folder, atomically."""
    out = Path(out)
    check_output_path(out, inputs, overwrite)
    scheme, threshold = _one_scheme(loaded)
    if loaded.arch.family == "gpt2":
        raise LowbitError("the bnb format is not available for GPT-2 models (transformers quantizes their Conv1D "
                          "layers transposed); use --format lowbit")
    model = loaded.model
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, QuantLinear):
        raise LowbitError("transformers keeps the output head of a bitsandbytes model in float; quantize without "
                          "+lm_head to save in the bnb format")
    tensors = float_state(model)
    for name, mod in quantized_modules(model):
        for key, t in to_bnb(mod.quantized).items():
            tensors[f"{name}.{key}"] = t
        if mod.bias is not None:
            tensors[f"{name}.bias"] = mod.bias.detach().float().contiguous().cpu()
    cfg = model.config.to_dict()
    cfg["quantization_config"] = quantization_config(scheme, threshold)
    meta = {"format": "pt", "lowbit_variant": loaded.variant or scheme.spec(), "lowbit_base": loaded.base or ""}
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / WEIGHTS), metadata=meta)
    return out


def is_bnb_folder(folder: Path) -> bool:
    """Whether ``folder/config.json`` declares a bitsandbytes quantization."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    qc = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    return isinstance(qc, dict) and qc.get("quant_method") == "bitsandbytes"


def _read_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    files = [folder / WEIGHTS]
    if (folder / INDEX).is_file():
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        files = [folder / f for f in sorted(set(index.get("weight_map", {}).values()))]
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    for f in files:
        if not f.is_file():
            raise LowbitError(f"{folder} has no {f.name} (a bitsandbytes folder stores its weights as safetensors)")
        with safe_open(str(f), "pt") as fh:
            meta.update(fh.metadata() or {})
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
    return tensors, meta


def _take(tensors: dict[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    """Pop the module's quantization tensors (everything under ``module.`` except its bias)."""
    prefix = module + "."
    keys = [k for k in tensors if k.startswith(prefix) and k != prefix + "bias"]
    return {k[len(prefix):]: tensors.pop(k) for k in keys}


def _quantized_module_names(model: torch.nn.Module, tensors: dict[str, torch.Tensor], four: bool) -> list[str]:
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    names = set()
    for key in tensors:
        if four and QS_PREFIX in key:
            names.add(key.split("." + QS_PREFIX)[0])
        if not four and key.endswith(".SCB"):
            names.add(key[: -len(".SCB")])
    # A linear whose stored weight is not float but has no quantization state is a broken file: name it.
    for name, lin in linears.items():
        w = tensors.get(f"{name}.weight")
        if w is not None and name not in names and (not w.is_floating_point() or tuple(w.shape) != tuple(lin.weight.shape)):
            need = f"{name}.{QS_PREFIX}<nf4|fp4>" if four else f"{name}.SCB"
            raise LowbitError(f"tensor '{name}.weight' is quantized ({w.dtype}, {list(w.shape)}) but '{need}' is "
                              "missing from the folder")
    unknown = sorted(n for n in names if n not in linears)
    if unknown:
        raise LowbitError(f"bitsandbytes tensors for '{unknown[0]}', which is not a Linear layer of this architecture")
    return sorted(names)


def load_bnb_folder(folder: Path, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a transformers + bitsandbytes folder into lowbit's quantized linears (no bitsandbytes needed)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    folder = Path(folder)
    qc = json.loads((folder / "config.json").read_text(encoding="utf-8"))["quantization_config"]
    four, eight = bool(qc.get("load_in_4bit")), bool(qc.get("load_in_8bit"))
    if four == eight:
        raise LowbitError(f"{folder / 'config.json'}: quantization_config must set exactly one of load_in_4bit / "
                          "load_in_8bit")
    if eight and qc.get("llm_int8_has_fp16_weight"):
        raise LowbitError(f"{folder}: llm_int8_has_fp16_weight is true, so the weights are not stored quantized")
    threshold = float(qc.get("llm_int8_threshold", DEFAULT_THRESHOLD))
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # build a plain float skeleton; lowbit installs the quantized linears
    arch = arch_for_model_type(config.model_type)
    cls = AutoModelForCausalLM if arch.kind == "causal-lm" else AutoModel
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is overwritten from the file
        model = cls.from_config(config, dtype=dtype)
    tensors, meta = _read_tensors(folder)
    for name in _quantized_module_names(model, tensors, four):
        rel = _take(tensors, name)
        q = from_bnb_4bit(name, rel) if four else from_bnb_int8(name, rel, threshold)
        install_with_bias(model, name, q, tensors.pop(f"{name}.bias", None), dtype, folder)
    tokenizer = finish_model(model, {k: v.to(dtype) for k, v in tensors.items()}, folder / "model.safetensors")
    first = next(iter(quantized_modules(model)), None)
    variant = meta.get("lowbit_variant") or (_variant_of(first[1], threshold) if first else None)
    return LoadedModel(model, tokenizer, str(folder), arch, variant=variant, base=meta.get("lowbit_base") or None)


def _variant_of(mod: QuantLinear, threshold: float) -> str:
    spec = mod.scheme_spec
    if spec == "bnb:int8" and threshold != DEFAULT_THRESHOLD:
        return f"{spec}+t={threshold:g}"
    return spec
