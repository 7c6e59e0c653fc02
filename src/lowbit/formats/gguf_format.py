"""The ``gguf`` format: a single file llama.cpp loads (``--format gguf``).

What is written, for a model quantized by method ``gguf``:

* ``general.architecture`` and the ``{arch}.*`` hyperparameters llama.cpp
  reads (context/embedding/feed-forward lengths, block count, head counts,
  norm epsilon, rope base and dimension, vocabulary size);
* ``general.file_type`` (the llama.cpp file type), ``general.quantization_version``
  (2, GGML_QNT_VERSION), ``general.quantized_by``, and with an importance
  matrix the ``quantize.imatrix.*`` keys llama-quantize writes;
* the tokenizer (:mod:`.gguf_tokenizer`);
* every tensor under its llama.cpp name (``gguf.TensorNameMap``), in
  llama-quantize's order (by layer, then name): quantized weights as the
  exact block bytes lowbit computed, q/k rows in llama.cpp's rotary order,
  everything else (norms, biases, position embeddings) as F32. A tied output
  head is stored once, as ``token_embd.weight``.

For the same float weights and file type, the tensor bytes equal those of
``llama_model_quantize`` on an F32 GGUF of the model (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowbit import __version__
from lowbit.errors import LowbitError
from lowbit.models.gguf_arch import GGUFArch, HParams, gguf_arch, hparams, qk_row_permutation, tensor_name
from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import quantized_modules
from lowbit.schemes import get_scheme
from lowbit.schemes.gguf.mixture import get_file_type
from lowbit.schemes.gguf.scheme import GGUFScheme, type_id
from lowbit.utils.atomic import atomic_file, check_output_path

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION


def gguf_source(loaded: LoadedModel) -> Path | None:
    """The GGUF file the float model came from, if it came from one (tokenizer metadata is copied from it)."""
    from lowbit.models.bundled import smollm2_gguf_path

    for spec in (loaded.base, loaded.spec):
        if spec == "smollm2-135m":
            return smollm2_gguf_path()
        if spec and spec.endswith(".gguf") and Path(spec).expanduser().is_file():
            return Path(spec).expanduser()
    return None


def _arch_kv(w: Any, arch: GGUFArch, hp: HParams) -> None:
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_block_count(hp.n_layer)
    w.add_head_count(hp.n_head)
    if arch.rms_norm:
        w.add_head_count_kv(hp.n_head_kv)
        w.add_layer_norm_rms_eps(hp.norm_eps)
        w.add_vocab_size(hp.n_vocab)
        w.add_rope_dimension_count(hp.head_dim)
        if hp.rope_theta is not None:
            w.add_rope_freq_base(hp.rope_theta)
        if hp.head_dim != hp.n_embd // hp.n_head:
            w.add_key_length(hp.head_dim)
            w.add_value_length(hp.head_dim)
    else:
        w.add_layer_norm_eps(hp.norm_eps)
    if hp.rope_scaling is not None:
        kind = hp.rope_scaling.get("rope_type", hp.rope_scaling.get("type"))
        if kind != "linear":
            raise LowbitError(f"GGUF export: rope scaling '{kind}' is not supported by lowbit's writer "
                              "(only linear); use llama.cpp's convert_hf_to_gguf.py for this model")
        w.add_rope_scaling_type("linear")
        w.add_rope_scaling_factor(float(hp.rope_scaling["factor"]))


def _permute(name: str, rows: np.ndarray, arch: GGUFArch, hp: HParams) -> np.ndarray:
    perm = qk_row_permutation(name, hp) if arch.permute_qk else None
    return rows[perm] if perm is not None else rows


def _quantized_tensors(loaded: LoadedModel, arch: GGUFArch, hp: HParams) -> tuple[dict[str, tuple[np.ndarray, Any]], set[int]]:
    """GGUF name → (array, raw ggml type or None) for every quantized module, and the data pointers they own."""
    import gguf

    out: dict[str, tuple[np.ndarray, Any]] = {}
    owned: set[int] = set()
    for mname, mod in quantized_modules(loaded.model):
        q = mod.quantized
        scheme = get_scheme(q.scheme)
        if not isinstance(scheme, GGUFScheme):
            raise LowbitError(f"the gguf format stores GGUF block types; '{mname}' is {q.scheme}. "
                              "Quantize with method gguf (e.g. --variant gguf:Q4_K_M)")
        name = q.meta.get("gguf_name") or tensor_name(arch, hp.n_layer, f"{mname}.weight")
        if name is None:
            raise LowbitError(f"no llama.cpp tensor name for '{mname}'")
        raw = _permute(name, np.ascontiguousarray(q.codes.detach().cpu().numpy()), arch, hp)
        if scheme.qtype == "F32":
            out[name] = (raw.view(np.float32), None)
        elif scheme.qtype == "F16":
            out[name] = (raw.view(np.float16), None)
        else:
            out[name] = (raw, gguf.GGMLQuantizationType(type_id(scheme.qtype)))
        if mod.bias is not None:
            bias = mod.bias.detach().float().cpu().numpy()
            out[name[: -len("weight")] + "bias"] = (_permute(name[: -len("weight")] + "bias", bias, arch, hp), None)
        owned.update(t.data_ptr() for t in mod.state_dict().values())
    return out, owned


def _float_tensors(loaded: LoadedModel, arch: GGUFArch, hp: HParams, owned: set[int]) -> dict[str, tuple[np.ndarray, Any]]:
    """Every other parameter (norms, biases, position embeddings, float heads) as F32, tied copies once."""
    out: dict[str, tuple[np.ndarray, Any]] = {}
    params = {id(p) for p in loaded.model.parameters()}
    seen = set(owned)
    for key, t in loaded.model.state_dict(keep_vars=True).items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        name = tensor_name(arch, hp.n_layer, key)
        if name is None:
            if id(t) in params:
                raise LowbitError(f"GGUF export: no llama.cpp tensor name for parameter '{key}'")
            continue  # buffers llama.cpp recomputes (rotary caches, masks)
        out[name] = (_permute(name, t.detach().to(torch.float32).cpu().numpy(), arch, hp), None)
    return out


def save_gguf(loaded: LoadedModel, out: Path, overwrite: bool = False, inputs: list[Path] | None = None) -> Path:
    """Write ``loaded`` (quantized by method gguf) to the GGUF file ``out``, atomically."""
    from lowbit.formats.gguf_tokenizer import copy_tokenizer_kv, general_kv, hf_tokenizer_kv, writer_class
    from lowbit.methods.gguf import file_type_of
    from lowbit.methods.gguf.rules import sort_key

    out = Path(out)
    check_output_path(out, inputs, overwrite)
    model = loaded.model
    arch = gguf_arch(model.config.model_type)
    hp = hparams(model.config)
    quantized, owned = _quantized_tensors(loaded, arch, hp)
    if not quantized:
        raise LowbitError("the gguf format writes quantized models; quantize with method gguf first, e.g. "
                          "--variant gguf:Q4_K_M (or gguf:F16 / gguf:F32 for an unquantized file)")
    # A llama.cpp file type only when method gguf applied one; other methods on GGUF grids
    # (gptq:gguf:Q4_0) leave general.file_type out and llama.cpp guesses it from the tensors.
    ftype_name = file_type_of(loaded)
    ftype = get_file_type(ftype_name) if ftype_name is not None else None
    tensors = {**_float_tensors(loaded, arch, hp, owned), **quantized}
    source = gguf_source(loaded)
    with atomic_file(out) as tmp:
        w = writer_class()(str(tmp), arch.name, use_temp_file=False)
        w.add_type("model")
        meta = general_kv(source) if source is not None else {}
        w.add_name(meta.pop("general.name", loaded.name))
        for key, value in meta.items():
            w.add_string(key, value)
        _arch_kv(w, arch, hp)
        if ftype is not None:
            w.add_file_type(ftype.ftype_id)
        w.add_quantization_version(QUANTIZATION_VERSION)  # llama-quantize and convert_hf_to_gguf always write it
        w.add_string("general.quantized_by", f"lowbit {__version__} ({loaded.variant})")
        imatrix = (loaded.extra.get("gguf") or {}).get("imatrix")
        if imatrix:
            w.add_string("quantize.imatrix.file", str(imatrix["source"]))
            if imatrix.get("datasets"):
                w.add_string("quantize.imatrix.dataset", str(imatrix["datasets"][-1]))
            w.add_int32("quantize.imatrix.entries_count", int(imatrix["entries"]))
            w.add_int32("quantize.imatrix.chunks_count", int(imatrix["chunks"]))
        if source is not None:
            copy_tokenizer_kv(w, source)
        elif loaded.tokenizer is not None:
            hf_tokenizer_kv(w, loaded.tokenizer, hp.n_vocab)
        else:
            raise LowbitError("GGUF export needs the model's tokenizer; this model has none")
        for name in sorted(tensors, key=sort_key):
            array, raw_dtype = tensors[name]
            w.add_tensor(name, np.ascontiguousarray(array), raw_dtype=raw_dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


__all__ = ["QUANTIZATION_VERSION", "gguf_source", "save_gguf"]
