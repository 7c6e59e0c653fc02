"""One quantized linear in bitsandbytes' serialization, both ways.

The layout transformers writes for a bitsandbytes model (bitsandbytes 0.50,
``Linear4bit._save_to_state_dict`` / ``QuantState.as_dict(packed=True)`` and
``Linear8bitLt``), keys relative to the module:

* 4-bit: ``weight`` uint8 ``[ceil(n/2), 1]`` (flattened codes, two per byte,
  the first in the high nibble; an odd count pads the code of 0.0),
  ``weight.absmax`` (float32, or uint8 under double quantization),
  ``weight.quant_map`` float32 [16], with double quantization
  ``weight.nested_absmax`` float32 and ``weight.nested_quant_map`` float32
  [256], and ``weight.quant_state.bitsandbytes__<nf4|fp4>``: the UTF-8 bytes
  of a JSON object (quant_type, blocksize, dtype, shape, and nested_blocksize,
  nested_dtype, nested_offset under double quantization).
* 8-bit: ``weight`` int8 ``[O, I]``, ``SCB`` float32 ``[O]`` (on the module,
  not on the weight) and ``weight_format`` uint8 scalar 0 (row-major).
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from lowbit.errors import LowbitError
from lowbit.packing import pack_bits, unpack_bits
from lowbit.schemes import get_scheme
from lowbit.schemes.base import QuantizedTensor
from lowbit.schemes.bnb import BLOCK_SIZES, Bnb4bitScheme, BnbInt8Scheme
from lowbit.schemes.bnb.codebooks import NESTED_BLOCKSIZE, dynamic_map, zero_code_4bit

QS_PREFIX = "weight.quant_state.bitsandbytes__"


def _swap_nibbles(b: torch.Tensor) -> torch.Tensor:
    # lowbit.packing puts the first code in the low nibble; bitsandbytes puts it in the high one.
    return (b << 4) | (b >> 4)


def pack_4bit(codes: torch.Tensor, quant_type: str) -> torch.Tensor:
    """bitsandbytes' ``weight`` tensor (uint8 ``[ceil(n/2), 1]``) from codes of any shape."""
    flat = codes.reshape(-1).to(torch.uint8).cpu()
    if flat.numel() % 2:
        flat = torch.cat([flat, torch.tensor([zero_code_4bit(quant_type)], dtype=torch.uint8)])
    return _swap_nibbles(pack_bits(flat, 4)).reshape(-1, 1)


def unpack_4bit(weight: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` codes of a bitsandbytes 4-bit ``weight`` tensor (any storage dtype)."""
    raw = weight.detach().contiguous().cpu().view(torch.uint8).reshape(-1)
    if raw.numel() != math.ceil(n / 2):
        raise LowbitError(f"holds {raw.numel()} bytes, expected {math.ceil(n / 2)} for {n} 4-bit codes")
    return unpack_bits(_swap_nibbles(raw), 4, n)


def to_bnb(q: QuantizedTensor, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """The module's tensors in bitsandbytes' layout (keys relative to the module)."""
    scheme = get_scheme(q.scheme)
    if isinstance(scheme, BnbInt8Scheme):
        return {"weight": q.codes.to(torch.int8).contiguous().cpu(), "SCB": q.params["SCB"].float().contiguous().cpu(),
                "weight_format": torch.tensor(0, dtype=torch.uint8)}
    if not isinstance(scheme, Bnb4bitScheme):
        raise LowbitError(f"scheme {q.scheme} has no bitsandbytes layout; quantize with a bnb variant "
                          "(bnb:nf4, bnb:fp4, bnb:nf4-dq, bnb:int8)")
    state: dict[str, Any] = {"quant_type": scheme.quant_type, "blocksize": scheme.blocksize, "dtype": dtype,
                             "shape": list(q.shape)}
    out = {"weight": pack_4bit(q.codes, scheme.quant_type),
           "weight.absmax": q.params["absmax"].contiguous().cpu(),
           "weight.quant_map": scheme.table.clone()}
    if scheme.double_quant:
        out["weight.nested_absmax"] = q.params["nested_absmax"].float().contiguous().cpu()
        out["weight.nested_quant_map"] = dynamic_map().clone()
        state.update({"nested_blocksize": NESTED_BLOCKSIZE, "nested_dtype": "float32",
                      "nested_offset": float(q.params["nested_offset"])})
    blob = json.dumps(state).encode("utf-8")
    out[QS_PREFIX + scheme.quant_type] = torch.tensor(list(blob), dtype=torch.uint8)
    return out


def _need(tensors: dict[str, torch.Tensor], key: str, module: str, why: str) -> torch.Tensor:
    if key not in tensors:
        raise LowbitError(f"tensor '{module}.{key}' is missing ({why})")
    return tensors[key]


def from_bnb_4bit(module: str, tensors: dict[str, torch.Tensor]) -> QuantizedTensor:
    """A 4-bit module's :class:`QuantizedTensor` from its bitsandbytes tensors (keys relative to it)."""
    qs_keys = [k for k in tensors if k.startswith(QS_PREFIX)]
    if len(qs_keys) != 1:
        found = ", ".join(qs_keys) or "none"
        raise LowbitError(f"4-bit weight '{module}.weight' needs exactly one '{module}.{QS_PREFIX}<nf4|fp4>' "
                          f"tensor (its quant_state), found {found}")
    try:
        state = json.loads(bytes(tensors[qs_keys[0]].to(torch.uint8).tolist()).decode("utf-8"))
        qt, bs, shape = str(state["quant_type"]), int(state["blocksize"]), tuple(int(s) for s in state["shape"])
    except (ValueError, KeyError, TypeError) as e:
        raise LowbitError(f"tensor '{module}.{qs_keys[0]}' is not a bitsandbytes quant_state: {e}") from None
    if bs not in BLOCK_SIZES or qt not in ("nf4", "fp4") or len(shape) != 2:
        raise LowbitError(f"'{module}.{qs_keys[0]}': unsupported quant_state {state}")
    nested = "nested_offset" in state or "weight.nested_absmax" in tensors
    scheme = Bnb4bitScheme(qt, bs, nested)
    n = math.prod(shape)
    try:
        codes = unpack_4bit(_need(tensors, "weight", module, "the packed codes"), n).reshape(shape)
    except LowbitError as e:
        raise LowbitError(f"tensor '{module}.weight' {e}") from None
    qmap = _need(tensors, "weight.quant_map", module, "the 4-bit code table")
    if not torch.equal(qmap.float().cpu(), scheme.table):
        raise LowbitError(f"tensor '{module}.weight.quant_map' differs from bitsandbytes' {qt} table")
    absmax = _need(tensors, "weight.absmax", module, "the per-block scales").contiguous().cpu()
    if absmax.numel() != scheme.n_blocks(shape):
        raise LowbitError(f"tensor '{module}.weight.absmax' has {absmax.numel()} values, expected "
                          f"{scheme.n_blocks(shape)} blocks of {bs}")
    if not nested:
        return QuantizedTensor(scheme.spec(), shape, codes, {"absmax": absmax.float().reshape(-1)})
    nested_absmax = _need(tensors, "weight.nested_absmax", module, "double quantization's scales")
    nmap = _need(tensors, "weight.nested_quant_map", module, "double quantization's 8-bit table")
    if int(state.get("nested_blocksize", 0)) != NESTED_BLOCKSIZE or not torch.equal(nmap.float().cpu(), dynamic_map()):
        raise LowbitError(f"'{module}': only bitsandbytes' double quantization (dynamic 8-bit map, blocks of 256) "
                          "is supported")
    if absmax.dtype != torch.uint8 or "nested_offset" not in state:
        raise LowbitError(f"'{module}.weight.absmax' must be uint8 codes with a nested_offset in the quant_state")
    params = {"absmax": absmax.reshape(-1), "nested_absmax": nested_absmax.float().contiguous().cpu().reshape(-1),
              "nested_offset": torch.tensor(float(state["nested_offset"]), dtype=torch.float32)}
    return QuantizedTensor(scheme.spec(), shape, codes, params)


def from_bnb_int8(module: str, tensors: dict[str, torch.Tensor], threshold: float) -> QuantizedTensor:
    """An 8-bit module's :class:`QuantizedTensor` (run with LLM.int8() at ``threshold``)."""
    cb = _need(tensors, "weight", module, "the int8 codes")
    scb = _need(tensors, "SCB", module, "the per-row scales of a bitsandbytes 8-bit weight")
    if cb.dtype != torch.int8 or cb.dim() != 2 or scb.numel() != cb.shape[0]:
        raise LowbitError(f"'{module}': expected int8 weight [O, I] and SCB [O], got {cb.dtype} "
                          f"{list(cb.shape)} and {list(scb.shape)}")
    return QuantizedTensor("bnb:int8", tuple(cb.shape), cb.contiguous().cpu(), {"SCB": scb.float().contiguous().cpu()},
                           {"module": "llm_int8", "threshold": float(threshold)})
