"""Complete Hugging Face model folders in the GPTQ, AWQ and compressed-tensors formats.

``OUT/`` holds ``config.json`` (the base config plus the format's
``quantization_config``), the tokenizer files, ``model.safetensors`` (every
float tensor at the model's dtype under its usual name, and each quantized
linear's tensors as its codec writes them), and ``lowbit-origin.json``
(variant, base model, seed: what ``lowbit eval`` needs to find the float
reference). :func:`load_quantized_folder` reads any of them back into
:class:`~lowbit.runtime.QuantLinear` modules with exactly the weights that
were written, so the logits match the model before export bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lowbit import __version__
from lowbit.errors import LowbitError
from lowbit.formats.int_codecs import BY_METHOD, CODECS, IntCodec
from lowbit.formats.lowbit_format import finish_model, float_state, install_with_bias, skeleton
from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import quantized_modules
from lowbit.schemes import get_scheme
from lowbit.schemes.base import Scheme
from lowbit.schemes.int_affine import IntScheme
from lowbit.utils.atomic import atomic_dir, check_output_path

WEIGHTS = "model.safetensors"
ORIGIN = "lowbit-origin.json"


def check_variant(fmt: str, scheme: Scheme, options: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse, before any work, a variant that format ``fmt`` cannot store for these linears."""
    g_idx = bool(options.get("act")) and not bool(options.get("static"))
    CODECS[fmt].check(scheme, shapes, g_idx)


def _save(codec: IntCodec, loaded: LoadedModel, out: Path, overwrite: bool, inputs: list[Path] | None) -> Path:
    out = Path(out)
    check_output_path(out, inputs, overwrite)
    model = loaded.model
    qmods = list(quantized_modules(model))
    if not qmods:
        raise LowbitError(f"the model has no quantized layers; quantize it before saving in the {codec.name} format")
    specs = {m.scheme_spec for _, m in qmods}
    if len(specs) != 1:
        raise LowbitError(f"format {codec.name} stores one grid for the whole model; found {sorted(specs)}")
    scheme = get_scheme(specs.pop())
    codec.check(scheme, {n: m.shape for n, m in qmods}, any("g_idx" in m.quantized.params for _, m in qmods))
    assert isinstance(scheme, IntScheme)
    tensors = float_state(model)
    for name, mod in qmods:
        for key, t in codec.encode(mod.quantized).items():
            tensors[f"{name}.{key}"] = t.detach().contiguous().cpu()
        if mod.bias is not None:
            tensors[f"{name}.bias"] = mod.bias.detach().contiguous().cpu()
    head = any(n == s or n.endswith("." + s) for n, _ in qmods for s in loaded.arch.skip)
    cfg = model.config.to_dict()
    cfg["quantization_config"] = codec.config([m.quantized for _, m in qmods], scheme, head)
    origin = {"lowbit_version": __version__, "format": codec.name, "variant": loaded.variant,
              "base_model": loaded.base, "seed": loaded.seed, "architecture": loaded.arch.family}
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / ORIGIN).write_text(json.dumps(origin, indent=2), encoding="utf-8")
    return out


def save_gptq_folder(loaded: LoadedModel, out: Path, overwrite: bool = False,
                     inputs: list[Path] | None = None) -> Path:
    """Write a GPTQ checkpoint folder (v1 for symmetric grids, v2 for asymmetric)."""
    return _save(CODECS["gptq"], loaded, out, overwrite, inputs)


def save_awq_folder(loaded: LoadedModel, out: Path, overwrite: bool = False,
                    inputs: list[Path] | None = None) -> Path:
    """Write an AutoAWQ GEMM checkpoint folder."""
    return _save(CODECS["awq"], loaded, out, overwrite, inputs)


def save_compressed_tensors_folder(loaded: LoadedModel, out: Path, overwrite: bool = False,
                                   inputs: list[Path] | None = None) -> Path:
    """Write a compressed-tensors ``pack-quantized`` folder."""
    return _save(CODECS["compressed-tensors"], loaded, out, overwrite, inputs)


def quantized_folder_method(folder: Path) -> str | None:
    """The ``quant_method`` of a folder's config.json when lowbit can read it, else None."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    method = (cfg.get("quantization_config") or {}).get("quant_method")
    return method if method in BY_METHOD else None


def load_quantized_folder(folder: Path, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Read a GPTQ / AWQ / compressed-tensors folder into lowbit's reference runtime."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    qc = cfg["quantization_config"]
    codec = BY_METHOD[qc["quant_method"]]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LowbitError(f"{folder} has no .safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    model, arch = skeleton(folder, dtype)
    suffix = "." + codec.marker
    names = sorted(k[: -len(suffix)] for k in tensors if k.endswith(suffix))
    if not names:
        raise LowbitError(f"{folder}: quant_method {codec.quant_method} but no '*{suffix}' tensors")
    for name in names:
        prefix = name + "."
        local = {k[len(prefix):]: tensors.pop(k) for k in list(tensors)
                 if k.startswith(prefix) and "." not in k[len(prefix):]}
        bias = local.pop("bias", None)
        try:
            q = codec.decode(local, qc)
        except KeyError as e:
            raise LowbitError(f"{folder}: quantized module '{name}' lacks tensor {e}") from None
        install_with_bias(model, name, q, bias, dtype, folder)
    tokenizer = finish_model(model, tensors, files[0])
    origin: dict[str, Any] = {}
    if (folder / ORIGIN).is_file():
        origin = json.loads((folder / ORIGIN).read_text(encoding="utf-8"))
    return LoadedModel(model, tokenizer, str(folder), arch, variant=origin.get("variant"),
                       base=origin.get("base_model"), seed=int(origin.get("seed", 0)))
