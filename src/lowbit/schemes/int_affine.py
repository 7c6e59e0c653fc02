"""Integer affine grids: 2–8 bits, symmetric or asymmetric, per tensor / channel / group.

Conventions follow the checkpoints that serving runtimes load (GPTQ v1 and
compressed-tensors), so a lowbit code is the code those files store:

* symmetric: ``s = absmax / ((2**b - 1) / 2)``, zero point ``2**(b-1)``,
  ``q = clamp(round(w/s) + 2**(b-1), 0, 2**b - 1)``, ``ŵ = s·(q - 2**(b-1))``;
* asymmetric: range widened to include 0, ``s = (max - min) / (2**b - 1)``,
  ``z = clamp(round(-min/s), 0, 2**b - 1)``, ``q = clamp(round(w/s) + z)``,
  ``ŵ = s·(q - z)``.

Scales are stored fp16 and codes are chosen with the *stored* (fp16-rounded)
scale, so dequantizing a file reproduces the fake-quantized weight exactly.
Groups run along the input dimension; a group size that does not divide the
row leaves a partial last group (as GPTQ and compressed-tensors do).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme

_FP16_MAX = 65504.0
_FP16_TINY = 2.0**-24  # smallest positive fp16 (subnormal)

_SPEC = re.compile(r"^w(?P<bits>\d+)(?:(?:g(?P<group>-?\d+))|(?P<ch>ch)|(?P<t>t))(?P<sym>sym|asym)?$")


@dataclass(frozen=True)
class IntScheme(Scheme):
    """Affine integer grid.

    Attributes:
        bits: code width in bits, 2–8.
        symmetric: zero point fixed at ``2**(bits-1)`` (True) or fitted per group (False).
        group: inputs per group (``granularity == "group"``); ignored otherwise.
        gran: ``"tensor"``, ``"channel"`` or ``"group"``.
    """

    bits: int = 4
    symmetric: bool = True
    group: int = 0
    gran: str = "group"
    family = "int"
    supports_g_idx = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise LowbitError(f"int scheme: bits must be 2–8, got {self.bits}")
        if self.gran not in ("tensor", "channel", "group"):
            raise LowbitError(f"int scheme: granularity must be tensor/channel/group, got {self.gran}")
        if self.gran == "group" and self.group <= 0:
            raise LowbitError(f"int scheme: group size must be a positive integer, got {self.group}")

    # --- naming -----------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> IntScheme | None:
        """Parse ``w4g64``, ``w8ch``, ``w8t``, ``w4g128asym`` (None if not this family's syntax)."""
        m = _SPEC.match(text.lower())
        if not m:
            return None
        bits = int(m["bits"])
        sym = m["sym"] != "asym"
        if m["ch"]:
            return cls(bits, sym, 0, "channel")
        if m["t"]:
            return cls(bits, sym, 0, "tensor")
        return cls(bits, sym, int(m["group"]), "group")

    def spec(self) -> str:
        gran = {"tensor": "t", "channel": "ch"}.get(self.gran, f"g{self.group}")
        return f"int:w{self.bits}{gran}{'' if self.symmetric else 'asym'}"

    @property
    def weight_bits(self) -> int:
        return self.bits

    @property
    def granularity(self) -> str:
        return self.gran

    @property
    def group_size(self) -> int | None:
        return self.group if self.gran == "group" else None

    @property
    def qmax(self) -> int:
        """Largest code, ``2**bits - 1``."""
        return (1 << self.bits) - 1

    # --- geometry ---------------------------------------------------------------

    def _group_len(self, in_features: int) -> int:
        return self.group if self.gran == "group" else in_features

    def _n_param_entries(self, shape: tuple[int, ...]) -> int:
        o, i = shape
        if self.gran == "tensor":
            return 1
        return o * math.ceil(i / self._group_len(i))

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        self.check_shape(shape)
        n = self._n_param_entries(shape)
        zero_bits = 0 if self.symmetric else self.bits
        return math.prod(shape) * self.bits + n * (16 + zero_bits)

    # --- grid fitting -----------------------------------------------------------

    def _fit_groups(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale (fp16) and integer zero for ``w`` ``[O, n_g, G]``, one per group."""
        w = w.float()
        if self.symmetric:
            amax = w.abs().amax(dim=-1)
            scale = amax / (self.qmax / 2)
            degenerate = amax == 0
        else:
            xmin = w.amin(dim=-1).clamp(max=0)
            xmax = w.amax(dim=-1).clamp(min=0)
            scale = (xmax - xmin) / self.qmax
            degenerate = xmax == xmin
        if bool((scale > _FP16_MAX).any()):
            raise LowbitError(f"weights too large for fp16 scales (max |w| {float(w.abs().max()):.3g})")
        # An all-zero group is exact on any grid; scale 1 keeps the code math finite.
        scale16 = torch.where(degenerate, torch.ones_like(scale), scale.clamp(min=_FP16_TINY)).half()
        if self.symmetric:
            zero = torch.full_like(scale, float(1 << (self.bits - 1)))
        else:
            zero = torch.round(-xmin / scale16.float()).clamp(0, self.qmax)
        return scale16, zero.to(torch.uint8)

    def _encode(self, w: torch.Tensor, scale16: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        q = torch.round(w.float() / scale16.float().unsqueeze(-1)) + zero.float().unsqueeze(-1)
        return q.clamp_(0, self.qmax).to(torch.uint8)

    def _grouped(self, w: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``w`` ``[O, I]`` as ``[O', n_g, G]`` (zero-padded; per-tensor → one group)."""
        o, i = w.shape
        if self.gran == "tensor":
            return w.reshape(1, 1, o * i), 0
        g = self._group_len(i)
        pad = (-i) % g
        if pad:
            w = torch.nn.functional.pad(w, (0, pad))
        return w.reshape(o, -1, g), pad

    # --- Scheme API -------------------------------------------------------------

    def quantize(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedTensor:
        self.check_shape(tuple(w.shape))
        shape = tuple(w.shape)
        grouped, pad = self._grouped(w.detach())
        scale, zero = self._fit_groups(grouped)
        codes = self._encode(grouped, scale, zero)
        codes = codes.reshape(shape[0], -1)[:, : shape[1]] if self.gran != "tensor" else codes.reshape(shape)
        params = {"scale": scale}
        if not self.symmetric:
            params["zero"] = zero
        return QuantizedTensor(self.spec(), shape, codes.contiguous(), params)

    def _expand(self, p: torch.Tensor, shape: tuple[int, ...], g_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-group parameter ``[O, n_g]`` broadcast to ``[O, I]`` (column c uses group ``g_idx[c]`` if given)."""
        o, i = shape
        if self.gran == "tensor":
            return p.reshape(1, 1).expand(o, i)
        if g_idx is not None:
            return p[:, g_idx.long()]
        g = self._group_len(i)
        return p.repeat_interleave(g, dim=1)[:, :i]

    def dequantize(self, q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        g_idx = q.params.get("g_idx")
        scale = self._expand(q.params["scale"].float(), q.shape, g_idx)
        if self.symmetric:
            zero = float(1 << (self.bits - 1))
            return ((q.codes.float() - zero) * scale).to(dtype)
        zero_t = self._expand(q.params["zero"].float(), q.shape, g_idx)
        return ((q.codes.float() - zero_t) * scale).to(dtype)

    # --- column-wise interface (GPTQ) -------------------------------------------

    def column_group_size(self, in_features: int) -> int:
        return self._group_len(in_features)

    def fit(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.gran == "tensor":
            scale, zero = self._fit_groups(w.reshape(1, 1, -1))
        else:
            scale, zero = self._fit_groups(w.unsqueeze(1))
        return {"scale": scale, "zero": zero}

    def column_grid(self, params: dict[str, torch.Tensor], column: int) -> dict[str, torch.Tensor]:
        # Asked once per group: converting here spares two casts per column in quantize_with.
        return {"scale": params["scale"].float(), "zero": params["zero"].float()}

    def quantize_with(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        scale, zero = params["scale"].float(), params["zero"].float()
        if self.gran == "tensor":
            scale, zero = scale.reshape(1, 1), zero.reshape(1, 1)
        codes = torch.clamp(torch.round(w.float() / scale) + zero, 0, self.qmax)
        return codes.to(torch.uint8), (codes - zero) * scale

    def quantize_column_(self, w: torch.Tensor, grid: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        # quantize_with's arithmetic, op for op (so bit-identical), in one buffer.
        scale, zero = grid["scale"].reshape(-1), grid["zero"].reshape(-1)
        buf = torch.div(w, scale).round_().add_(zero).clamp_(0, self.qmax)
        codes.copy_(buf)
        return buf.sub_(zero).mul_(scale)

    def assemble(
        self, shape: tuple[int, ...], codes: torch.Tensor, group_params: list[dict[str, torch.Tensor]]
    ) -> QuantizedTensor:
        params = {"scale": torch.cat([p["scale"] for p in group_params], dim=1)}
        if not self.symmetric:
            params["zero"] = torch.cat([p["zero"] for p in group_params], dim=1)
        return QuantizedTensor(self.spec(), tuple(shape), codes.to(torch.uint8).contiguous(), params)
