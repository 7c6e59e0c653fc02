"""NF4 / FP4 blockwise codebooks (QLoRA), optionally with double-quantized absmax.

The grid, bit for bit as ``bitsandbytes.functional.quantize_4bit`` on CPU:

* the weight ``[O, I]`` is flattened row-major and cut into blocks of
  ``blocksize`` values (blocks may cross rows; the last one may be short);
* each block stores its float32 absmax; values are scaled by ``1/absmax``
  (a float32 reciprocal, then a product; the short last block divides) and
  clamped to [-1, 1];
* each value takes the code of the nearest table entry (:mod:`.codebooks`);
* with double quantization (``-dq``) the absmax values are centred on their
  mean (``nested_offset``, float32) and stored as 8-bit codes of bitsandbytes'
  dynamic map in blocks of 256, each block with a float32 ``nested_absmax``.
  Codes are chosen with the float32 absmax first, as the library does, so the
  stored absmax differs from the one that chose them by the 8-bit rounding.

Dequantizing: ``table[code] · absmax[block]``, with
``absmax = dynamic_map[q] · nested_absmax[block/256] + nested_offset`` under
double quantization — the float32 operations bitsandbytes performs, in its order.

Representation (:class:`QuantizedTensor`): ``codes`` uint8 ``[O, I]`` (one
code per weight), ``params``: ``absmax`` float32 ``[nb]``, or under ``-dq``
``absmax`` uint8 ``[nb]``, ``nested_absmax`` float32 ``[ceil(nb/256)]`` and
``nested_offset`` float32 ``[]``. The code tables are constants of the scheme
(bitsandbytes files repeat them per tensor as ``quant_map`` /
``nested_quant_map``; they are not counted in bits per weight).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.schemes.bnb.codebooks import (
    NESTED_BLOCKSIZE,
    dequantize_blockwise_8bit,
    dynamic_map,
    nearest_4bit,
    quantize_blockwise_8bit,
    table_4bit,
)

#: Block sizes bitsandbytes' quantize_4bit accepts.
BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_BLOCKSIZE = 64
_SPEC = re.compile(r"^(?P<qt>nf4|fp4)(?:b(?P<bs>\d+))?(?P<dq>-dq)?$")
# bitsandbytes clamps absmax to this before taking its reciprocal (an all-zero block then scales to 0).
_ABSMAX_FLOOR = 1e-38


@dataclass(frozen=True)
class Bnb4bitScheme(Scheme):
    """NF4 or FP4 codes in flattened blocks with a float32 (or double-quantized) absmax each.

    Attributes:
        quant_type: ``"nf4"`` or ``"fp4"``.
        blocksize: weights per absmax (32 … 4096, powers of two), counted in the flattened tensor.
        double_quant: store the absmax values as 8-bit codes (QLoRA's double quantization).
    """

    quant_type: str = "nf4"
    blocksize: int = DEFAULT_BLOCKSIZE
    double_quant: bool = False
    family = "bnb"

    def __post_init__(self) -> None:
        if self.quant_type not in ("nf4", "fp4"):
            raise LowbitError(f"bnb scheme: quant type must be nf4 or fp4, got '{self.quant_type}'")
        if self.blocksize not in BLOCK_SIZES:
            raise LowbitError(f"bnb scheme: block size must be one of {', '.join(map(str, BLOCK_SIZES))} "
                              f"(bitsandbytes' own choices), got {self.blocksize}")

    @classmethod
    def parse(cls, text: str) -> Bnb4bitScheme | None:
        """``nf4``, ``fp4``, ``nf4-dq``, ``nf4b128``, ``fp4b256-dq`` (None if not this syntax)."""
        m = _SPEC.match(text.strip().lower())
        if not m:
            return None
        return cls(m["qt"], int(m["bs"]) if m["bs"] else DEFAULT_BLOCKSIZE, bool(m["dq"]))

    def spec(self) -> str:
        size = "" if self.blocksize == DEFAULT_BLOCKSIZE else f"b{self.blocksize}"
        return f"bnb:{self.quant_type}{size}{'-dq' if self.double_quant else ''}"

    @property
    def weight_bits(self) -> int:
        return 4

    @property
    def granularity(self) -> str:
        return "block"

    @property
    def group_size(self) -> int | None:
        return self.blocksize

    @property
    def table(self) -> torch.Tensor:
        """The 16 float32 code values, index order (bitsandbytes' ``quant_map``)."""
        return table_4bit(self.quant_type)

    # --- geometry -----------------------------------------------------------------

    def n_blocks(self, shape: tuple[int, ...]) -> int:
        """Absmax values stored for a tensor of ``shape``."""
        return math.ceil(math.prod(shape) / self.blocksize)

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        self.check_shape(shape)
        n = math.prod(shape)
        nb = self.n_blocks(shape)
        codes = 8 * math.ceil(n / 2)  # two codes per byte; an odd count pads one nibble
        if not self.double_quant:
            return codes + 32 * nb
        return codes + 8 * nb + 32 * math.ceil(nb / NESTED_BLOCKSIZE) + 32  # + nested_offset

    # --- quantize / dequantize ------------------------------------------------------

    def _scale_blocks(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 absmax per block and the values scaled to [-1, 1], as quantize_4bit computes them."""
        n = flat.numel()
        full = n - n % self.blocksize
        body = flat[:full].reshape(-1, self.blocksize)
        absmax = body.abs().amax(dim=-1) if full else flat.new_zeros(0)
        inv = 1.0 / absmax.clamp(min=_ABSMAX_FLOOR)
        # Under flush-to-zero the 1e-38 floor (a denormal) reads as 0; all-zero blocks must still scale to 0.
        inv = torch.where(absmax == 0, torch.zeros_like(inv), inv)
        scaled = torch.clamp(body * inv.unsqueeze(1), -1, 1).reshape(-1)
        if full < n:
            # The short last block divides, and stores its absmax floored at 1e-38 (the library's quirk).
            tail = flat[full:]
            am = tail.abs().amax().clamp(min=_ABSMAX_FLOOR)
            zero_tail = not bool(tail.abs().amax() > 0)
            t = torch.zeros_like(tail) if zero_tail else torch.clamp(tail / am, -1, 1)
            absmax = torch.cat([absmax, am.reshape(1)])
            scaled = torch.cat([scaled, t])
        return absmax, scaled

    def _pack_absmax(self, absmax: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.double_quant:
            return {"absmax": absmax}
        offset = absmax.mean()
        qabs, nested = quantize_blockwise_8bit(absmax - offset, dynamic_map())
        return {"absmax": qabs, "nested_absmax": nested, "nested_offset": offset.reshape(())}

    def absmax_values(self, q: QuantizedTensor) -> torch.Tensor:
        """float32 absmax per block as dequantization uses it (after undoing double quantization)."""
        if not self.double_quant:
            return q.params["absmax"].to(torch.float32)
        absmax = dequantize_blockwise_8bit(q.params["absmax"], q.params["nested_absmax"], dynamic_map())
        return absmax + q.params["nested_offset"].to(torch.float32)

    def quantize(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedTensor:
        shape = tuple(w.shape)
        self.check_shape(shape)
        absmax, scaled = self._scale_blocks(w.detach().reshape(-1).to(torch.float32))
        codes = nearest_4bit(scaled, self.quant_type).reshape(shape)
        return QuantizedTensor(self.spec(), shape, codes.contiguous(), self._pack_absmax(absmax))

    def dequantize(self, q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = q.numel
        scale = self.absmax_values(q).repeat_interleave(self.blocksize)[:n]
        values = self.table.to(q.codes.device)[q.codes.reshape(-1).long()]
        return (values * scale).reshape(q.shape).to(dtype)

    # --- column-wise interface (GPTQ): blocks coincide with groups of one row ------

    def column_group_size(self, in_features: int) -> int:
        if in_features % self.blocksize:
            raise LowbitError(
                f"{self.spec()}: column-wise methods need blocks that tile each row, but in_features "
                f"{in_features} is not a multiple of the block size {self.blocksize} (blocks would cross rows)"
            )
        return self.blocksize

    def fit(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"absmax": w.detach().to(torch.float32).abs().amax(dim=1, keepdim=True)}

    def quantize_with(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        absmax = params["absmax"].to(torch.float32)
        inv = torch.where(absmax == 0, torch.zeros_like(absmax), 1.0 / absmax.clamp(min=_ABSMAX_FLOOR))
        codes = nearest_4bit(torch.clamp(w.to(torch.float32) * inv, -1, 1), self.quant_type)
        return codes, self.table.to(w.device)[codes.long()] * absmax

    def assemble(self, shape: tuple[int, ...], codes: torch.Tensor,
                 group_params: list[dict[str, torch.Tensor]]) -> QuantizedTensor:
        # [O, n_groups] row-major is the flattened block order when blocks tile rows.
        absmax = torch.cat([p["absmax"] for p in group_params], dim=1).reshape(-1)
        return QuantizedTensor(self.spec(), tuple(shape), codes.to(torch.uint8).contiguous(), self._pack_absmax(absmax))

    def split_rows(self, q: QuantizedTensor, sizes: list[int]) -> list[QuantizedTensor]:
        """One representation per stacked matrix (GPTQ solves q/k/v stacked); rows must be whole blocks.

        Under double quantization each piece gets its own nested state, built
        from the stacked tensor's dequantized absmax (the only float absmax left),
        so a piece's absmax is rounded to 8 bits a second time.
        """
        rows, cols = q.shape
        per_row = self.column_group_size(cols) and cols // self.blocksize
        absmax = self.absmax_values(q).reshape(rows, per_row)
        out, start = [], 0
        for n in sizes:
            piece = absmax[start:start + n].reshape(-1)
            params = self._pack_absmax(piece) if self.double_quant else {"absmax": piece.contiguous()}
            out.append(QuantizedTensor(self.spec(), (n, cols), q.codes[start:start + n].contiguous(), params,
                                       dict(q.meta)))
            start += n
        return out
