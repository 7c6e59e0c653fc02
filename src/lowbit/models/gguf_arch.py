"""What llama.cpp calls a model's parts: GGUF architecture, tensor names, hyperparameters.

Kept as data, like :mod:`lowbit.models.arch`: which Hugging Face
``model_type`` becomes which GGUF ``general.architecture``, whether its q/k
projections need llama.cpp's rotary row order, and the hyperparameters the
``{arch}.*`` metadata keys carry. Tensor names come from the ``gguf``
package's ``TensorNameMap`` (the table ``convert_hf_to_gguf.py`` uses).

Row order of q_proj/k_proj: Hugging Face Llama checkpoints interleave the two
rotary halves differently from llama.cpp, so ``convert_hf_to_gguf.py``
permutes their rows (``LlamaModel.permute``) and transformers' GGUF loader
undoes it. Quantization is row-wise, so permuting the rows of the quantized
bytes gives exactly the bytes of quantizing the permuted weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from lowbit.errors import LowbitError


@dataclass(frozen=True)
class GGUFArch:
    """How one Hugging Face family maps to llama.cpp.

    Attributes:
        name: GGUF ``general.architecture`` (llama.cpp's ``LLM_ARCH_*`` name).
        permute_qk: q_proj/k_proj rows need llama.cpp's rotary order.
        rms_norm: norms are RMSNorm (``attention.layer_norm_rms_epsilon``) rather than LayerNorm.
    """

    name: str
    permute_qk: bool
    rms_norm: bool


#: Hugging Face ``model_type`` → llama.cpp architecture (as convert_hf_to_gguf.py maps them).
GGUF_ARCHS: dict[str, GGUFArch] = {
    "llama": GGUFArch("llama", True, True),
    "mistral": GGUFArch("llama", True, True),
    "gpt2": GGUFArch("gpt2", False, False),
}


def gguf_arch(model_type: str) -> GGUFArch:
    """The llama.cpp architecture of ``model_type``; LowbitError naming the supported ones."""
    if model_type not in GGUF_ARCHS:
        raise LowbitError(f"GGUF export and llama.cpp mixtures support model types {', '.join(GGUF_ARCHS)}; "
                          f"this model is '{model_type}'")
    return GGUF_ARCHS[model_type]


@dataclass(frozen=True)
class HParams:
    """The hyperparameters llama.cpp reads (sizes in elements, eps unitless)."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    n_vocab: int
    head_dim: int
    norm_eps: float
    rope_theta: float | None
    rope_scaling: dict[str, Any] | None


def _get(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def hparams(config: Any) -> HParams:
    """Hyperparameters from a transformers config (Llama/Mistral or GPT-2 naming)."""
    n_embd = int(_get(config, "hidden_size", "n_embd"))
    n_head = int(_get(config, "num_attention_heads", "n_head"))
    rope = _get(config, "rope_parameters", "rope_scaling")
    theta = _get(config, "rope_theta")
    if theta is None and isinstance(rope, dict):
        theta = rope.get("rope_theta")
    scaling = dict(rope) if isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) != "default" else None
    return HParams(
        n_layer=int(_get(config, "num_hidden_layers", "n_layer")),
        n_embd=n_embd,
        n_ff=int(_get(config, "intermediate_size", "n_inner", default=4 * n_embd)),
        n_head=n_head,
        n_head_kv=int(_get(config, "num_key_value_heads", default=n_head)),
        n_ctx=int(_get(config, "max_position_embeddings", "n_positions", default=2048)),
        n_vocab=int(config.vocab_size),
        head_dim=int(_get(config, "head_dim", default=n_embd // n_head)),
        norm_eps=float(_get(config, "rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps", default=1e-5)),
        rope_theta=float(theta) if theta is not None else None,
        rope_scaling=scaling,
    )


@lru_cache(maxsize=16)
def _name_map(arch: str, n_layer: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layer)


def tensor_name(arch: GGUFArch, n_layer: int, hf_name: str) -> str | None:
    """GGUF name of the Hugging Face tensor ``hf_name`` (``model.layers.3.mlp.down_proj.weight`` →
    ``blk.3.ffn_down.weight``); None when llama.cpp has no such tensor (e.g. rotary caches)."""
    return _name_map(arch.name, n_layer).get_name(hf_name, try_suffixes=(".weight", ".bias"))


def qk_row_permutation(gguf_name: str, hp: HParams) -> np.ndarray | None:
    """Row order llama.cpp expects for ``attn_q``/``attn_k`` (``LlamaModel.permute``), else None."""
    if gguf_name.endswith("attn_q.weight") or gguf_name.endswith("attn_q.bias"):
        heads = hp.n_head
    elif gguf_name.endswith("attn_k.weight") or gguf_name.endswith("attn_k.bias"):
        heads = hp.n_head_kv
    else:
        return None
    rows = heads * hp.head_dim
    return np.arange(rows).reshape(heads, 2, hp.head_dim // 2).swapaxes(1, 2).reshape(-1)


def tied_embeddings(model: nn.Module) -> bool:
    """Whether the output head shares its matrix with the input embedding."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if out is None or emb is None:
        return False
    w_out, w_emb = getattr(out, "weight", None), getattr(emb, "weight", None)
    if isinstance(w_out, torch.Tensor) and isinstance(w_emb, torch.Tensor):
        return bool(w_out.data_ptr() == w_emb.data_ptr())
    return bool(getattr(model.config, "tie_word_embeddings", False))


def module_name_of(model: nn.Module, module: nn.Module | None) -> str | None:
    """Qualified name of ``module`` inside ``model`` (None if absent)."""
    if module is None:
        return None
    for name, mod in model.named_modules():
        if mod is module:
            return name
    return None


__all__ = ["GGUFArch", "GGUF_ARCHS", "HParams", "gguf_arch", "hparams", "module_name_of", "qk_row_permutation",
           "tensor_name", "tied_embeddings"]
