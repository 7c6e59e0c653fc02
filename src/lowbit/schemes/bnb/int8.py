"""LLM.int8()'s weight grid: int8 rows scaled by their absmax (bitsandbytes' CB / SCB).

Bit for bit as bitsandbytes' ``Int8Params`` (what transformers'
``load_in_8bit`` runs): the weight is first rounded to float16, then per output
row ``SCB = max |w16|`` (float32) and ``CB = round(w16 · (127 / SCB))`` (the
product in float32, rounding half to even). Dequantizing is
``CB · SCB · fp32(1/127)``, the library's ``int8_vectorwise_dequant``.

Only the weights live here; the activation side of LLM.int8() (per-token int8
and the float path for outlier columns) is a run-time matter:
:mod:`lowbit.runtime.llm_int8`.

Representation: ``codes`` int8 ``[O, I]`` (the CB matrix itself; packing is a
byte view), ``params["SCB"]`` float32 ``[O]``. A row of zeros stores SCB 0 and
codes 0 (bitsandbytes would divide by zero there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme

_FP16_MAX = 65504.0
#: float32(1/127): bitsandbytes multiplies by this constant instead of dividing by 127.
INV_127 = 7.874015718698502e-3


@dataclass(frozen=True)
class BnbInt8Scheme(Scheme):
    """Per-row absmax int8, codes in [-127, 127], one float32 scale (SCB) per output row."""

    family = "bnb"

    @classmethod
    def parse(cls, text: str) -> BnbInt8Scheme | None:
        """``int8`` (None if not this syntax)."""
        return cls() if text.strip().lower() == "int8" else None

    def spec(self) -> str:
        return "bnb:int8"

    @property
    def weight_bits(self) -> int:
        return 8

    @property
    def granularity(self) -> str:
        return "channel"

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        self.check_shape(shape)
        return math.prod(shape) * 8 + shape[0] * 32

    @staticmethod
    def _to_fp16(w: torch.Tensor) -> torch.Tensor:
        big = float(w.detach().abs().max()) if w.numel() else 0.0
        if big > _FP16_MAX:
            raise LowbitError(f"bnb:int8 rounds weights to float16 first (as bitsandbytes does), but a weight "
                              f"has |w| = {big:.4g} > 65504")
        return w.detach().to(torch.float16)

    @staticmethod
    def _codes(w16: torch.Tensor, scb: torch.Tensor) -> torch.Tensor:
        # float16 weights times a float32 factor compute in float32, as in int8_vectorwise_quant.
        factor = torch.where(scb == 0, torch.zeros_like(scb), 127.0 / scb.clamp(min=torch.finfo(torch.float32).tiny))
        return torch.round(w16 * factor.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)

    def quantize(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedTensor:
        shape = tuple(w.shape)
        self.check_shape(shape)
        w16 = self._to_fp16(w)
        scb = w16.abs().amax(dim=1).float()
        return QuantizedTensor(self.spec(), shape, self._codes(w16, scb).contiguous(), {"SCB": scb})

    def dequantize(self, q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (q.codes * q.params["SCB"].to(torch.float32).view(-1, 1) * INV_127).to(dtype)

    # int8 codes are stored as their own bytes (the file format's CB), not through the bit packer.
    def pack_codes(self, q: QuantizedTensor) -> torch.Tensor:
        return q.codes.contiguous().view(torch.uint8)

    def unpack_codes(self, packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if tuple(packed.shape) != tuple(shape):
            raise LowbitError(f"bnb:int8 codes have shape {list(packed.shape)}, expected {list(shape)}")
        return packed.contiguous().view(torch.int8)

    # --- column-wise interface (GPTQ): one group spans the whole row -------------

    def column_group_size(self, in_features: int) -> int:
        return in_features

    def fit(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"SCB": self._to_fp16(w).abs().amax(dim=1).float()}

    def quantize_with(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        scb = params["SCB"].to(torch.float32)
        codes = self._codes(self._to_fp16(w), scb)  # error feedback may push a value past SCB: clamped
        return codes, codes * scb.view(-1, 1) * INV_127

    def assemble(self, shape: tuple[int, ...], codes: torch.Tensor,
                 group_params: list[dict[str, torch.Tensor]]) -> QuantizedTensor:
        if len(group_params) != 1:
            raise LowbitError(f"bnb:int8 has one group per row, got {len(group_params)} groups")
        # Column-wise solvers may collect the codes in a uint8 buffer: reinterpret those bytes.
        codes = codes.view(torch.int8) if codes.dtype == torch.uint8 else codes.to(torch.int8)
        return QuantizedTensor(self.spec(), tuple(shape), codes.contiguous(),
                               {"SCB": group_params[0]["SCB"].to(torch.float32)})
