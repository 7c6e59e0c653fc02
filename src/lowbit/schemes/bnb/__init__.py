"""The bitsandbytes family of grids: ``bnb:nf4``, ``bnb:fp4`` (``-dq``, ``b<blocksize>``) and ``bnb:int8``.

Specs: ``nf4`` / ``fp4`` with an optional block size (``nf4b128``; default 64)
and optional double quantization of the absmax values (``nf4-dq``), and
``int8`` (LLM.int8()'s per-row absmax int8 weights, CB/SCB). Each grid
reproduces bitsandbytes' CPU quantization byte for byte; see the modules.
"""

from __future__ import annotations

from lowbit.schemes.base import Scheme
from lowbit.schemes.bnb.fourbit import BLOCK_SIZES, DEFAULT_BLOCKSIZE, Bnb4bitScheme
from lowbit.schemes.bnb.int8 import BnbInt8Scheme


def parse_bnb(text: str) -> Scheme | None:
    """Parse the scheme part of a bnb spec (None when it is not this family's syntax)."""
    return BnbInt8Scheme.parse(text) or Bnb4bitScheme.parse(text)


__all__ = ["BLOCK_SIZES", "DEFAULT_BLOCKSIZE", "Bnb4bitScheme", "BnbInt8Scheme", "parse_bnb"]
