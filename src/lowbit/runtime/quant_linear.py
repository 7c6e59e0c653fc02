"""The reference runtime: a Linear that holds a :class:`QuantizedTensor`.

It computes with the dequantized weight, which is exact on any hardware and is
the yardstick every real kernel is checked against. Dequantizing costs about as
much as the matmul itself, so by default the float weight is cached after the
first call: evaluation then runs at float speed, and memory is the price
(``cache_weight=False`` trades it back).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from lowbit.schemes import get_scheme
from lowbit.schemes.base import QuantizedTensor, Scheme


class QuantLinear(nn.Module):
    """``y = x @ dequantize(q).T + bias``, with the representation kept as buffers."""

    def __init__(self, q: QuantizedTensor, bias: torch.Tensor | None, cache_weight: bool = True) -> None:
        super().__init__()
        self.scheme: Scheme = get_scheme(q.scheme)
        self.shape = tuple(q.shape)
        self.out_features, self.in_features = self.shape
        self.scheme_spec = q.scheme
        self.meta = dict(q.meta)
        self.register_buffer("codes", q.codes)
        self._param_names = sorted(q.params)
        for name in self._param_names:
            self.register_buffer(f"q_{name}", q.params[name])
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.cache_weight = cache_weight
        self._cached: torch.Tensor | None = None

    @property
    def quantized(self) -> QuantizedTensor:
        """The representation this module holds (tensors shared, not copied)."""
        params = {n: getattr(self, f"q_{n}") for n in self._param_names}
        return QuantizedTensor(self.scheme_spec, self.shape, self.codes, params, dict(self.meta))

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[out, in]`` this module computes with."""
        return self.scheme.dequantize(self.quantized, dtype)

    def weight_for(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The dequantized weight in ``dtype`` on ``device``, cached when ``cache_weight``."""
        w = self._cached
        if w is None or w.device != device or w.dtype != dtype:
            w = self.dequantized_weight(dtype).to(device)
            if self.cache_weight:
                self._cached = w
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight_for(x.dtype, x.device), self.bias)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # A device or dtype move invalidates the cached float weight.
        self._cached = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, scheme={self.scheme_spec}, bias={self.bias is not None}"


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def install_quantized(model: nn.Module, name: str, q: QuantizedTensor, cache_weight: bool = True) -> QuantLinear:
    """Replace the Linear ``name`` in ``model`` by a :class:`QuantLinear` holding ``q``."""
    old = model.get_submodule(name)
    if isinstance(old, nn.Embedding):  # GGUF stores token embeddings quantized too
        from lowbit.runtime.quant_embedding import QuantEmbedding

        new: QuantLinear = QuantEmbedding(q, old.padding_idx, cache_weight, old.weight.dtype)
    else:
        bias = getattr(old, "bias", None)
        device = q.codes.device
        new = QuantLinear(q, bias.to(device) if bias is not None else None, cache_weight)
    _set_module(model, name, new)
    if q.meta.get("tied_embedding"):  # an output head that is also the input embedding
        from lowbit.runtime.quant_embedding import tie_embedding

        tie_embedding(model, str(q.meta["tied_embedding"]), new)
    return new


def quantized_modules(model: nn.Module) -> Iterator[tuple[str, QuantLinear]]:
    """Every :class:`QuantLinear` in ``model`` with its qualified name."""
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear):
            yield name, mod


def storage_bytes(model: nn.Module) -> int:
    """Bytes of ``model`` as stored: packed codes + grid parameters of quantized
    linears, every other tensor at its dtype, tied tensors once."""
    total = 0
    seen: set[int] = set()
    owned: set[int] = set()
    for _, mod in quantized_modules(model):
        q = mod.quantized
        total += (mod.scheme.tensor_storage_bits(q) + 7) // 8
        for t in mod.state_dict().values():
            owned.add(t.data_ptr())
        if mod.bias is not None:
            total += mod.bias.numel() * mod.bias.element_size()
    for t in model.state_dict().values():
        ptr = t.data_ptr()
        if ptr in owned or ptr in seen:
            continue
        seen.add(ptr)
        total += t.numel() * t.element_size()
    return total
