"""The ``lowbit`` format: a Hugging Face folder whose quantized linears hold packed codes.

Layout of ``OUT/``:

* ``config.json`` and tokenizer files: the base model's, unchanged;
* ``model.safetensors``: every float tensor under its usual name, and for each
  quantized linear ``NAME``: ``NAME.codes`` (packed by :mod:`lowbit.packing`),
  ``NAME.<param>`` (grid parameters, e.g. ``scale`` fp16, ``zero`` uint8) and
  ``NAME.bias`` if any;
* ``lowbit.json``: format version, variant, base model, and per module its
  scheme spec, shape and parameter names.

Reloading rebuilds exactly the same :class:`QuantizedTensor` objects, so a
reloaded model's logits are bit-identical to the one that was saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lowbit import __version__
from lowbit.errors import LowbitError
from lowbit.models.arch import arch_for_model_type
from lowbit.models.loader import LoadedModel, conv1d_to_linear
from lowbit.runtime.quant_linear import QuantLinear, install_quantized, quantized_modules
from lowbit.schemes import get_scheme
from lowbit.schemes.base import QuantizedTensor
from lowbit.utils.atomic import atomic_dir, check_output_path

FORMAT_VERSION = 1
DESCRIPTION = "lowbit.json"
WEIGHTS = "model.safetensors"


def _float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without quantized buffers, tied duplicates stored once."""
    qnames = {n for n, _ in quantized_modules(model)}
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for key, t in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in qnames:
            continue
        ptr = t.data_ptr()
        if ptr in seen and t.numel() > 0:
            continue  # tied weight (e.g. lm_head = embed_tokens): stored once
        seen[ptr] = key
        out[key] = t.detach().contiguous().cpu()
    return out


def save_lowbit_folder(loaded: LoadedModel, out: Path, overwrite: bool = False, inputs: list[Path] | None = None) -> Path:
    """Write ``loaded`` (quantized in place) to the folder ``out``, atomically."""
    out = Path(out)
    check_output_path(out, inputs, overwrite)
    model = loaded.model
    tensors = _float_state(model)
    modules: dict[str, Any] = {}
    for name, mod in quantized_modules(model):
        q = mod.quantized
        scheme = get_scheme(q.scheme)
        tensors[f"{name}.codes"] = scheme.pack_codes(q).contiguous()
        for pname, p in q.params.items():
            tensors[f"{name}.{pname}"] = p.detach().contiguous().cpu()
        if mod.bias is not None:
            tensors[f"{name}.bias"] = mod.bias.detach().contiguous().cpu()
        modules[name] = {"scheme": q.scheme, "shape": list(q.shape), "params": sorted(q.params), "meta": q.meta}
    if not modules:
        raise LowbitError("the model has no quantized layers; quantize it before saving in the lowbit format")
    desc = {
        "format": "lowbit",
        "format_version": FORMAT_VERSION,
        "lowbit_version": __version__,
        "variant": loaded.variant,
        "base_model": loaded.base,
        "seed": loaded.seed,
        "architecture": loaded.arch.family,
        "modules": modules,
    }
    with atomic_dir(out, overwrite) as tmp:
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "lowbit": "1"})
        (tmp / DESCRIPTION).write_text(json.dumps(desc, indent=2), encoding="utf-8")
    return out


def _skeleton(folder: Path, dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = AutoConfig.from_pretrained(folder)
    arch = arch_for_model_type(config.model_type)
    cls = AutoModelForCausalLM if arch.kind == "causal-lm" else AutoModel
    # Every weight is overwritten from the file: random init would cost 5 s on SmolLM2.
    with no_init_weights():
        model = cls.from_config(config, dtype=dtype)
    if arch.family == "gpt2":
        conv1d_to_linear(model)
    return model, arch


def load_lowbit_folder(folder: Path, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a folder written by :func:`save_lowbit_folder`."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    try:
        desc = json.loads((folder / DESCRIPTION).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LowbitError(f"{folder / DESCRIPTION} is not valid JSON: {e}") from e
    if desc.get("format") != "lowbit" or int(desc.get("format_version", 0)) > FORMAT_VERSION:
        raise LowbitError(f"{folder} was written by a newer lowbit (format {desc.get('format_version')}); upgrade lowbit")
    if not (folder / WEIGHTS).is_file():
        raise LowbitError(f"{folder} has no {WEIGHTS}")
    model, arch = _skeleton(folder, dtype)
    tensors = load_file(str(folder / WEIGHTS))
    for name, info in desc["modules"].items():
        shape = tuple(int(x) for x in info["shape"])
        scheme = get_scheme(info["scheme"])
        try:
            codes = scheme.unpack_codes(tensors.pop(f"{name}.codes"), shape)
            params = {p: tensors.pop(f"{name}.{p}") for p in info["params"]}
        except KeyError as e:
            raise LowbitError(f"{folder / WEIGHTS} lacks tensor {e} of quantized module '{name}'") from None
        q = QuantizedTensor(info["scheme"], shape, codes, params, dict(info.get("meta", {})))
        install_with_bias(model, name, q, tensors, folder, dtype)
    load_float_tensors(model, tensors, folder / WEIGHTS)
    tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").is_file() else None
    return LoadedModel(model, tokenizer, str(folder), arch, variant=desc.get("variant"),
                       base=desc.get("base_model"), seed=int(desc.get("seed", 0)))


def install_with_bias(model: torch.nn.Module, name: str, q: QuantizedTensor, tensors: dict[str, torch.Tensor],
                      folder: Path, dtype: torch.dtype) -> QuantLinear:
    """Install ``q`` as the linear ``name`` and give it the bias popped from ``tensors``, if the layer has one."""
    mod = install_quantized(model, name, q)
    bias = tensors.pop(f"{name}.bias", None)
    if (bias is None) != (mod.bias is None):
        raise LowbitError(f"bias of '{name}' does not match the architecture in {folder}")
    if bias is not None and mod.bias is not None:
        mod.bias.data = bias.to(dtype)
    return mod


def load_float_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load every remaining (float) tensor, check nothing is missing or left over, tie the head, freeze."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    loaded_by_hand = {f"{n}.{k}" for n, m in quantized_modules(model) for k in m.state_dict()}
    missing = [k for k in missing if k not in loaded_by_hand and not _is_tied(model, k)]
    if missing or unexpected:
        raise LowbitError(f"{source} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if hasattr(model, "tie_weights") and not isinstance(model.get_output_embeddings(), QuantLinear):
        model.tie_weights()
    model.eval().requires_grad_(False)


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return bool(getattr(model.config, "tie_word_embeddings", False)) and out is not None and key.endswith("lm_head.weight")

