"""The in-memory representation of a quantized tensor, and the scheme contract.

A *scheme* is a grid: which values a weight may take and how the grid's
parameters are stored. It knows neither how codes are chosen (a method's job)
nor how they land on disk (a format's job). Between the three sits
:class:`QuantizedTensor`: codes + grid parameters + scheme spec + shape.

Lifecycle vocabulary, used everywhere: prepared → calibrated → quantized → packed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from lowbit.errors import LowbitError
from lowbit.utils.tensors import count_nonfinite


@dataclass
class QuantizedTensor:
    """A quantized weight, independent of any file format.

    Attributes:
        scheme: canonical scheme spec that produced it (e.g. ``"int:w4g64"``);
            :func:`lowbit.schemes.get_scheme` rebuilds the scheme from it.
        shape: the original float tensor's shape, ``[out_features, in_features]``.
        codes: unpacked integer codes, uint8, one per weight (or raw block bytes
            for block formats that define their own layout).
        params: grid parameters by name (e.g. ``scale`` fp16 ``[O, n_groups]``,
            ``zero`` uint8 ``[O, n_groups]``).
        meta: JSON-serialisable extras (e.g. a GPTQ act-order permutation's origin).
    """

    scheme: str
    shape: tuple[int, ...]
    codes: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        """Number of weights represented."""
        return math.prod(self.shape)

    def to(self, device: torch.device | str) -> QuantizedTensor:
        """A copy with every tensor on ``device``."""
        return QuantizedTensor(
            self.scheme,
            self.shape,
            self.codes.to(device),
            {k: v.to(device) for k, v in self.params.items()},
            dict(self.meta),
        )


def check_finite(name: str, w: torch.Tensor) -> None:
    """Refuse NaN/Inf weights with a message naming the tensor."""
    bad = count_nonfinite(w)
    if bad:
        raise LowbitError(f"tensor '{name}' has {bad} NaN/Inf values; refusing to quantize it")


class Scheme(ABC):
    """A quantization grid. Subclasses are small frozen dataclasses.

    Methods that work group by group (GPTQ) use :meth:`column_group_size`,
    :meth:`fit` (or :meth:`fit_static`), :meth:`column_grid`,
    :meth:`quantize_with` and :meth:`assemble`; everything else uses
    :meth:`quantize` / :meth:`dequantize`.
    """

    #: Family name used as the prefix of the canonical spec, e.g. ``"int"``.
    family: str = ""
    #: Whether :meth:`dequantize` honours a ``g_idx`` parameter (int32 ``[I]``:
    #: the group of each input column), as GPTQ's act-order produces.
    supports_g_idx: ClassVar[bool] = False

    @abstractmethod
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"int:w4g64"``; parses back to an equal scheme."""

    @property
    @abstractmethod
    def weight_bits(self) -> int:
        """Bits of one code (before any scales are counted)."""

    @property
    @abstractmethod
    def granularity(self) -> str:
        """``"tensor"``, ``"channel"``, ``"group"`` or ``"block"``."""

    @property
    def group_size(self) -> int | None:
        """Inputs sharing one set of grid parameters (None when not grouped)."""
        return None

    def check_shape(self, shape: tuple[int, ...], name: str = "weight") -> None:
        """Raise :class:`LowbitError` if this scheme cannot represent ``shape``."""
        if len(shape) != 2:
            raise LowbitError(f"tensor '{name}' has shape {list(shape)}; schemes quantize 2-D weights [out, in]")

    @abstractmethod
    def quantize(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedTensor:
        """Nearest-grid quantization of a float weight ``[O, I]``.

        ``importance`` (``[I]``, e.g. mean squared input activation) weights the
        fitting error per input column where the scheme's fitting uses it.
        """

    @abstractmethod
    def dequantize(self, q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Float weight ``[O, I]`` that ``q`` represents."""

    @abstractmethod
    def storage_bits(self, shape: tuple[int, ...]) -> int:
        """Exact bits stored for a tensor of ``shape``: codes + every scale, zero and index."""

    def tensor_storage_bits(self, q: QuantizedTensor) -> int:
        """Exact bits stored for ``q``: :meth:`storage_bits`, plus its per-column
        group index (``g_idx``, int32 as every format stores it) when it has one."""
        bits = self.storage_bits(q.shape)
        if "g_idx" in q.params:
            bits += 32 * q.params["g_idx"].numel()
        return bits

    def bits_per_weight(self, shape: tuple[int, ...]) -> float:
        """:meth:`storage_bits` divided by the number of weights."""
        return self.storage_bits(shape) / math.prod(shape)

    # --- storage of codes (formats call these; one packing module for all) ------

    def pack_codes(self, q: QuantizedTensor) -> torch.Tensor:
        """Codes as packed bytes along the last axis (uint8), for writing to a file."""
        from lowbit.packing import pack_bits

        return pack_bits(q.codes, self.weight_bits)

    def unpack_codes(self, packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`pack_codes` for a tensor of ``shape``."""
        from lowbit.packing import unpack_bits

        return unpack_bits(packed, self.weight_bits, shape[-1])

    # --- group-wise interface used by error-feedback methods (GPTQ) -------------

    def column_group_size(self, in_features: int) -> int:
        """Columns sharing one set of grid parameters, for column-by-column methods."""
        raise LowbitError(f"scheme {self.spec()} does not support column-wise methods")

    def fit(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Grid parameters for the columns ``w`` ``[O, g]`` (one group)."""
        raise LowbitError(f"scheme {self.spec()} does not support column-wise methods")

    def quantize_with(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and dequantized values of columns ``w`` on the grid ``params``."""
        raise LowbitError(f"scheme {self.spec()} does not support column-wise methods")

    def quantize_column_(self, w: torch.Tensor, grid: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        """One column ``w`` ``[O]`` (float32) on ``grid`` (from :meth:`column_grid`): writes its codes
        into ``codes`` ``[O]`` and returns its dequantized values ``[O]`` (float32).

        GPTQ's hot loop calls this once per column; a scheme may override it with
        a leaner equivalent of :meth:`quantize_with` (same values, fewer temporaries).
        """
        c, q = self.quantize_with(w.unsqueeze(1), grid)
        codes.copy_(c[:, 0])
        return q[:, 0].float()

    @property
    def needs_static_groups(self) -> bool:
        """Whether every group's grid must be fitted up front from the original weights
        (GPTQ's static groups), because it cannot be fitted from one group's
        compensated columns alone (a GGUF k-quant's sub-scales hang off a super-block scale)."""
        return False

    def fit_static(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
        """Grid parameters of every column group of ``w`` ``[O, I]``, fitted up front, in group order.

        ``importance`` (``[I]``) weights the fit where the scheme's fitting uses
        it; the default fits group by group with :meth:`fit`, which takes none.
        """
        if importance is not None:
            raise LowbitError(f"scheme {self.spec()} does not weight its column-wise fits by importance")
        g = self.column_group_size(w.shape[1])
        return [self.fit(w[:, s:s + g]) for s in range(0, w.shape[1], g)]

    @property
    def column_grid_varies(self) -> bool:
        """Whether :meth:`column_grid` differs between columns of one group (then it is asked per column)."""
        return False

    def column_grid(self, params: dict[str, torch.Tensor], column: int) -> dict[str, torch.Tensor]:
        """The parameters :meth:`quantize_with` needs for column ``column`` (0-based, inside its group).

        The default grid is the same for every column of a group; grids that vary
        inside a group (a k-quant's sub-blocks) return that column's slice.
        """
        return params

    def assemble(
        self, shape: tuple[int, ...], codes: torch.Tensor, group_params: list[dict[str, torch.Tensor]]
    ) -> QuantizedTensor:
        """Build the representation from codes ``[O, I]`` and per-group parameters, in group order."""
        raise LowbitError(f"scheme {self.spec()} does not support column-wise methods")

    def split_rows(self, q: QuantizedTensor, sizes: list[int]) -> list[QuantizedTensor]:
        """Split a representation of stacked matrices (rows ``sizes``) back into one per matrix.

        The default suits parameters with one leading entry per row (channel
        and group grids); ``g_idx`` is shared, because stacked matrices share
        their inputs. Grids with other layouts override it.
        """
        out = []
        start = 0
        for n in sizes:
            params = {k: v.clone() if k == "g_idx" else v[start:start + n].contiguous() for k, v in q.params.items()}
            out.append(QuantizedTensor(q.scheme, (n, *q.shape[1:]), q.codes[start:start + n].contiguous(), params,
                                       dict(q.meta)))
            start += n
        return out
