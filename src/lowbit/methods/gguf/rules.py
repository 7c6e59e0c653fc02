"""llama.cpp's per-tensor type choice for a file type (``src/llama-quant.cpp``).

A port of ``tensor_allows_quantization``, ``tensor_get_category``,
``llama_tensor_get_type_impl`` and ``tensor_type_fallback`` from the llama.cpp
vendored in llama-cpp-python 0.3.36 (commit 0c1e570), restricted to what can
occur here: the file types of :data:`~lowbit.schemes.gguf.mixture.FILE_TYPES`,
dense (non-MoE) models, no ``--pure`` / ``--tensor-type`` overrides.

The order matters: llama.cpp visits tensors sorted by layer, then by name
(``weight_name_comparer``), and the attn_v and ffn_down rules count how many
they have seen. :func:`plan_types` visits them the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lowbit.schemes.gguf.mixture import FileType, fallback_type
from lowbit.schemes.gguf.scheme import FLOAT_TYPES, block_size

_BLK = re.compile(r"^blk\.(\d+)\.")


def category(name: str) -> str:
    """``tensor_get_category``: a broad role from the GGUF tensor name (first match wins)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"),
                        ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                        ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                        ("ffn_down", "ffn_down")):
        if needle in name:
            return cat
    return "other"


def allows_quantization(name: str, ndim: int) -> bool:
    """``tensor_allows_quantization`` for the architectures lowbit exports (llama, gpt2)."""
    return (ndim >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and name not in ("position_embd.weight", "token_types.weight"))


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of layers, and every third in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def sort_key(name: str) -> tuple[int, str]:
    """``weight_name_comparer``: by ``blk.N`` (non-block tensors first), then by name."""
    m = _BLK.match(name)
    return (int(m.group(1)) if m else -1, name)


@dataclass(frozen=True)
class ModelFacts:
    """What the rules read about the model (``llama_hparams``)."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int

    @property
    def n_gqa(self) -> int:
        """Query heads per key/value head (integer, as ``n_gqa()``)."""
        return self.n_head // max(1, self.n_head_kv)

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B for Llama: 80 layers with grouped-query attention."""
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


@dataclass
class TypePlan:
    """The type of every 2-D tensor of the file, and which ones fell back."""

    types: dict[str, str] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)

    def describe_fallbacks(self, shapes: dict[str, tuple[int, int]]) -> list[str]:
        """One line per fallback, like llama-quantize's warning."""
        return [f"{n}: ncols {shapes[n][1]} not divisible by {block_size(self.targets[n])} "
                f"(required for {self.targets[n]}) -> {self.types[n]}" for n in self.fallbacks]


class _State:
    """``quantize_state_impl``: counters advanced as tensors are visited."""

    def __init__(self, names: list[str], facts: ModelFacts, has_imatrix: bool) -> None:
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.tied = "output" not in cats
        self.n_ffn_down = facts.n_layer
        self.i_attention_wv = 0
        self.i_ffn_down = 0
        self.has_imatrix = has_imatrix


def _impl(st: _State, facts: ModelFacts, ft: str, new: str, cat: str, ncols: int) -> str:
    """``llama_tensor_get_type_impl`` for the non-IQ1/2/3, non-MoE branches."""
    falcon = facts.arch == "falcon"
    if cat == "output" or (st.tied and cat == "token_embd"):
        if falcon or ncols % block_size(new):
            return "Q8_0"
        return new if new == "Q8_0" else "Q6_K"
    if cat == "token_embd":
        return new
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        i, n = st.i_attention_wv, st.n_attention_wv
        if ft == "Q2_K":
            new = "Q4_K" if facts.n_gqa >= 4 else "Q3_K"
        elif ft == "Q3_K_M":
            new = "Q5_K" if i < 2 else "Q4_K"
        elif ft == "Q3_K_L":
            new = "Q5_K"
        elif ft in ("IQ4_NL", "IQ4_XS") and facts.n_gqa >= 4:
            new = "Q5_K"
        elif ft in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
            new = "Q6_K"
        elif ft == "Q4_K_S" and i < 4:
            new = "Q5_K"
        if facts.is_70b and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
        st.i_attention_wv += 1
        return new
    if cat == "ffn_down":
        i, n = st.i_ffn_down, st.n_ffn_down
        if ft == "Q2_K":
            new = "Q3_K"
        elif ft == "Q3_K_M":
            new = "Q5_K" if i < n // 16 else ("Q4_K" if not falcon or use_more_bits(i, n) else "Q3_K")
        elif ft == "Q3_K_L":
            new = "Q4_K" if falcon else "Q5_K"
        elif ft == "Q4_K_M":
            if falcon:
                new = "Q6_K" if i < n // 16 else ("Q5_K" if use_more_bits(i, n) else "Q4_K")
            elif use_more_bits(i, n):
                new = "Q6_K"
        elif i < n // 8 and ft in ("IQ4_NL", "IQ4_XS") and not st.has_imatrix:
            new = "Q5_K"
        elif ft == "Q5_K_M" and use_more_bits(i, n):
            new = "Q6_K"
        elif ft == "Q4_K_S" and not falcon and i < n // 8:
            new = "Q5_K"
        elif ft in ("Q4_0", "Q5_0") and st.has_imatrix and i < n // 8:
            # llama.cpp's guard against "craziness in the first few ffn_down layers" with an imatrix
            new = "Q4_1" if ft == "Q4_0" else "Q5_1"
        st.i_ffn_down += 1
        return new
    if cat == "attn_output":
        if not falcon:
            new = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ft, new)
        elif ft == "Q3_K_L":
            new = "Q4_K"
    return new


def plan_types(ft: FileType, shapes: dict[str, tuple[int, int]], facts: ModelFacts, has_imatrix: bool,
               keep_float: frozenset[str] = frozenset()) -> TypePlan:
    """The ggml type llama-quantize gives each 2-D tensor for file type ``ft``.

    Args:
        ft: the file type.
        shapes: every 2-D tensor the file will hold, GGUF name → ``(rows, ncols)``
            (ncols = ne0, the row length blocks run along).
        facts: model hyperparameters the rules read.
        has_imatrix: whether an importance matrix is used (some rules depend on it).
        keep_float: tensors left unquantized by request (excluded from rules and fallback counts).
    Returns:
        The plan; tensors llama.cpp would not quantize (norms, position embeddings) are absent.
    """
    names = sorted(shapes, key=sort_key)
    st = _State(names, facts, has_imatrix)
    plan = TypePlan()
    quantized_default = ft.default not in FLOAT_TYPES
    for name in names:
        if name in keep_float or not allows_quantization(name, 2):
            continue
        ncols = shapes[name][1]
        if not quantized_default:
            plan.types[name] = plan.targets[name] = ft.default
            continue
        target = _impl(st, facts, ft.name, ft.default, category(name), ncols)
        chosen = fallback_type(target, ncols)
        plan.targets[name], plan.types[name] = target, chosen
        if chosen != target:
            plan.fallbacks.append(name)
    return plan


__all__ = ["ModelFacts", "TypePlan", "allows_quantization", "category", "plan_types", "sort_key", "use_more_bits"]
