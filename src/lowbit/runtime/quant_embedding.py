"""Quantized token embeddings for the reference runtime.

GGUF files store ``token_embd.weight`` quantized (llama.cpp looks rows up with
``get_rows``, which dequantizes them), and when a model ties its output head
to the embedding the one tensor serves both. Two modules reproduce that:

* :class:`QuantEmbedding`: an embedding table held as a
  :class:`~lowbit.schemes.base.QuantizedTensor` (untied models); it is a
  :class:`QuantLinear` so size accounting and the lowbit format treat it like
  any quantized layer.
* :class:`TiedQuantEmbedding`: the input embedding of a tied model whose head
  is a :class:`QuantLinear`; it owns no tensors and looks rows up in the
  head's dequantized weight, so the quantized matrix is stored (and counted)
  once, as in the GGUF file. Installing a head whose ``meta`` names
  ``tied_embedding`` puts it in place (see :func:`install_quantized`).
"""

from __future__ import annotations

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.runtime.quant_linear import QuantLinear, _set_module
from lowbit.schemes.base import QuantizedTensor


class QuantEmbedding(QuantLinear):
    """``embedding(ids) = dequantize(q)[ids]``; ``q`` is ``[vocab, hidden]``."""

    def __init__(self, q: QuantizedTensor, padding_idx: int | None = None, cache_weight: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(q, None, cache_weight)
        self.padding_idx = padding_idx
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = self.shape

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (read-only view for code that inspects ``.weight``)."""
        return self.weight_for(self.dtype, self.codes.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return nn.functional.embedding(ids, self.weight_for(self.dtype, ids.device), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, scheme={self.scheme_spec}"


class TiedQuantEmbedding(nn.Module):
    """Input embedding that reads the quantized output head's rows (tied weights)."""

    def __init__(self, head: QuantLinear, padding_idx: int | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        # A plain list keeps the head out of this module's children: its tensors
        # are registered (and saved, and counted) once, under the head's name.
        self._head = [head]
        self.padding_idx = padding_idx
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = head.shape

    @property
    def head(self) -> QuantLinear:
        """The quantized output head this embedding shares its matrix with."""
        return self._head[0]

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized shared matrix."""
        return self.head.weight_for(self.dtype, self.head.codes.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.head.weight_for(self.dtype, ids.device), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, tied to the quantized head ({self.head.scheme_spec})"


def tie_embedding(model: nn.Module, name: str, head: QuantLinear) -> TiedQuantEmbedding:
    """Replace the embedding ``name`` of ``model`` by one reading ``head``'s quantized matrix."""
    old = model.get_submodule(name)
    if not isinstance(old, nn.Embedding | TiedQuantEmbedding):
        raise LowbitError(f"'{name}' is a {type(old).__name__}, not the embedding the quantized head is tied to")
    if (old.num_embeddings, old.embedding_dim) != tuple(head.shape):
        raise LowbitError(f"embedding '{name}' is {old.num_embeddings}×{old.embedding_dim} but the head it is tied "
                          f"to is {head.shape[0]}×{head.shape[1]}")
    dtype = old.weight.dtype if isinstance(old, nn.Embedding) else old.dtype
    new = TiedQuantEmbedding(head, old.padding_idx, dtype)
    _set_module(model, name, new)
    return new


__all__ = ["QuantEmbedding", "TiedQuantEmbedding", "tie_embedding"]
