"""Stateless codecs between lowbit's int representation and three checkpoint layouts.

Each codec turns one quantized linear (:class:`QuantizedTensor` on an
:class:`~lowbit.schemes.int_affine.IntScheme`) into the tensors its format
stores, and back, exactly (``shared/reference/methods-and-formats.md`` §5):

* ``gptq``: ``qweight`` int32 ``[I·b/32, O]`` (packed along the input, LSB
  first), ``qzeros`` int32 ``[n_g, O·b/32]`` (along the output; v1 stores
  ``z − 1``, v2 ``z``), ``scales`` fp16 ``[n_g, O]``, ``g_idx`` int32 ``[I]``.
  Symmetric grids are written as v1 (the widely loaded one); asymmetric ones
  as ``gptq_v2`` with true zeros, because v1's ``z − 1`` wraps at ``z = 0``
  and loaders that add 1 without masking then decode ``z = 2^b``.
* ``awq`` (AutoAWQ GEMM): ``qweight`` int32 ``[I, O/8]`` and ``qzeros`` int32
  ``[n_g, O/8]`` packed along the output with the interleave
  ``[0, 2, 4, 6, 1, 3, 5, 7]``, true zeros, ``scales`` fp16 ``[n_g, O]``;
  4-bit only, no ``g_idx``.
* ``compressed-tensors`` ``pack-quantized``: ``weight_packed`` int32
  ``[O, ⌈I·b/32⌉]`` (code = signed value + ``2^(b−1)``, i.e. lowbit's code),
  ``weight_scale`` in the model dtype ``[O, n_g]``, ``weight_zero_point``
  int32 ``[⌈O·b/32⌉, n_g]`` (asymmetric only), ``weight_shape`` ``[2]``.

Every format here sizes its scales as ``I / G``, so a partial last group
cannot be written: :meth:`IntCodec.check` refuses it before any work.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lowbit.errors import LowbitError
from lowbit.packing import pack_int32, unpack_int32
from lowbit.schemes import get_scheme
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.schemes.int_affine import IntScheme

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _natural_g_idx(i: int, g: int) -> torch.Tensor:
    return (torch.arange(i) // g).to(torch.int32)


class IntCodec:
    """Base: which int schemes a format can hold, and the shared geometry checks."""

    name: ClassVar[str] = ""
    quant_method: ClassVar[str] = ""
    #: Tensor whose presence marks a quantized module in a file.
    marker: ClassVar[str] = ""
    bits_allowed: ClassVar[tuple[int, ...]] = (2, 3, 4, 8)
    channel_ok: ClassVar[bool] = True
    g_idx_ok: ClassVar[bool] = False

    def check(self, scheme: Scheme, shapes: dict[str, tuple[int, ...]], g_idx: bool = False) -> None:
        """Raise :class:`LowbitError` if this format cannot hold ``scheme`` on these linears."""
        fmt = f"format {self.name}"
        if not isinstance(scheme, IntScheme):
            raise LowbitError(f"{fmt} stores integer grids; {scheme.spec()} is not one (use --format lowbit)")
        if scheme.bits not in self.bits_allowed:
            raise LowbitError(f"{fmt} stores {'/'.join(map(str, self.bits_allowed))}-bit codes, not "
                              f"{scheme.bits}-bit ({scheme.spec()})")
        if scheme.gran == "tensor" or (scheme.gran == "channel" and not self.channel_ok):
            kinds = "group or per-channel" if self.channel_ok else "group"
            raise LowbitError(f"{fmt} stores {kinds} scales; {scheme.spec()} is per-{scheme.gran}")
        if g_idx and not self.g_idx_ok:
            raise LowbitError(f"{fmt} cannot store act-order group indices (g_idx); add +static to the variant "
                              "(act-order with static groups keeps natural groups) or use --format gptq")
        for name, shape in shapes.items():
            o, i = shape
            if scheme.gran == "group" and i % scheme.group:
                raise LowbitError(f"{fmt} needs the group size to divide every input width: '{name}' has "
                                  f"{i} inputs, not a multiple of {scheme.group} (try g{_divisor_hint(i)})")
            self.check_shape(name, o, i, scheme)

    def check_shape(self, name: str, o: int, i: int, scheme: IntScheme) -> None:
        """Format-specific packing constraints."""

    def scheme_of(self, q: QuantizedTensor) -> IntScheme:
        """The int scheme of ``q`` (refusing anything else)."""
        s = get_scheme(q.scheme)
        if not isinstance(s, IntScheme):
            raise LowbitError(f"format {self.name} stores integer grids; tensor has scheme {q.scheme}")
        return s

    def zeros(self, q: QuantizedTensor, s: IntScheme) -> torch.Tensor:
        """Zero points ``[O, n_g]`` uint8 (the fixed ``2^(b−1)`` for symmetric grids)."""
        if s.symmetric:
            return torch.full_like(q.params["scale"], 1 << (s.bits - 1), dtype=torch.uint8)
        return q.params["zero"].to(torch.uint8)

    def build(self, bits: int, sym: bool, group: int, shape: tuple[int, int], codes: torch.Tensor,
              scale16: torch.Tensor, zero: torch.Tensor, g_idx: torch.Tensor | None) -> QuantizedTensor:
        """A representation from decoded parts (checking what the scheme implies)."""
        o, i = shape
        scheme = IntScheme(bits, sym, group if group > 0 else 0, "group" if group > 0 else "channel")
        params = {"scale": scale16.to(torch.float16).contiguous()}
        if sym:
            if not bool((zero == (1 << (bits - 1))).all()):
                raise LowbitError(f"format {self.name}: symmetric checkpoint with zero points other than "
                                  f"{1 << (bits - 1)}")
        else:
            params["zero"] = zero.to(torch.uint8).contiguous()
        if g_idx is not None and group > 0 and not torch.equal(g_idx.to(torch.int32), _natural_g_idx(i, group)):
            params["g_idx"] = g_idx.to(torch.int32).contiguous()
        return QuantizedTensor(scheme.spec(), (o, i), codes.to(torch.uint8).contiguous(), params)

    def encode(self, q: QuantizedTensor) -> dict[str, torch.Tensor]:
        """The format's tensors for one linear (names relative to the module)."""
        raise NotImplementedError

    def decode(self, t: dict[str, torch.Tensor], qc: dict[str, Any]) -> QuantizedTensor:
        """The representation of one linear from its tensors and ``quantization_config``."""
        raise NotImplementedError


def _divisor_hint(i: int) -> int:
    return next(g for g in (128, 64, 32, 16, 8) if i % g == 0) if i % 8 == 0 else i


class GPTQCodec(IntCodec):
    """GPTQ checkpoint (AutoGPTQ v1 for symmetric grids, v2 for asymmetric ones)."""

    name = "gptq"
    quant_method = "gptq"
    marker = "qweight"
    g_idx_ok = True

    def check_shape(self, name: str, o: int, i: int, scheme: IntScheme) -> None:
        per = 32 // scheme.bits if 32 % scheme.bits == 0 else 32
        if i % per or o % per:
            raise LowbitError(f"format gptq packs {scheme.bits}-bit codes {per} to a word along both axes: "
                              f"'{name}' is {o}×{i}")

    def encode(self, q: QuantizedTensor) -> dict[str, torch.Tensor]:
        s = self.scheme_of(q)
        o, i = q.shape
        z = self.zeros(q, s).t().contiguous()  # [n_g, O]
        stored = (z.to(torch.int16) - 1) & s.qmax if s.symmetric else z  # v1: z − 1
        g = s.column_group_size(i)
        g_idx = q.params.get("g_idx", _natural_g_idx(i, g))
        return {
            "qweight": pack_int32(q.codes, s.bits).t().contiguous(),  # [I·b/32, O]
            "qzeros": pack_int32(stored.to(torch.uint8), s.bits),
            "scales": q.params["scale"].t().contiguous().to(torch.float16),
            "g_idx": g_idx.to(torch.int32).contiguous(),
        }

    def decode(self, t: dict[str, torch.Tensor], qc: dict[str, Any]) -> QuantizedTensor:
        bits, group = int(qc["bits"]), int(qc.get("group_size", -1))
        sym = bool(qc.get("sym", True))
        v2 = qc.get("checkpoint_format", qc.get("format", "gptq")) == "gptq_v2"
        o = t["scales"].shape[1]
        i = t["g_idx"].numel()
        codes = unpack_int32(t["qweight"].t().contiguous(), bits, i)
        stored = unpack_int32(t["qzeros"], bits, o).t()  # [O, n_g]
        zero = stored if v2 else (stored.to(torch.int16) + 1) & ((1 << bits) - 1)
        return self.build(bits, sym, group, (o, i), codes, t["scales"].t(), zero, t["g_idx"])

    def config(self, qs: list[QuantizedTensor], scheme: IntScheme, head_quantized: bool) -> dict[str, Any]:
        """``quantization_config`` for a file holding ``qs``."""
        meta = next((q.meta for q in qs if q.meta.get("method") == "gptq"), {})
        fmt = "gptq" if scheme.symmetric else "gptq_v2"
        return {
            "quant_method": "gptq", "bits": scheme.bits, "group_size": scheme.group_size or -1,
            "desc_act": any("g_idx" in q.params for q in qs), "sym": scheme.symmetric,
            "static_groups": bool(meta.get("static_groups", False)), "true_sequential": True,
            "damp_percent": float(meta.get("damp", 0.01)), "checkpoint_format": fmt, "format": fmt,
            "lm_head": head_quantized, "pack_dtype": "int32",
        }


def _interleave(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last axis so that slot ``8c + k`` holds channel ``8c + AWQ_ORDER[k]``."""
    lead, n = x.shape[:-1], x.shape[-1]
    return x.reshape(*lead, n // 8, 8)[..., list(AWQ_ORDER)].reshape(*lead, n)


def _deinterleave(x: torch.Tensor) -> torch.Tensor:
    lead, n = x.shape[:-1], x.shape[-1]
    out = torch.empty_like(x.reshape(*lead, n // 8, 8))
    out[..., list(AWQ_ORDER)] = x.reshape(*lead, n // 8, 8)
    return out.reshape(*lead, n)


class AWQCodec(IntCodec):
    """AutoAWQ GEMM checkpoint (4-bit, true zero points, interleaved along the output)."""

    name = "awq"
    quant_method = "awq"
    marker = "qweight"
    bits_allowed = (4,)
    channel_ok = False

    def check_shape(self, name: str, o: int, i: int, scheme: IntScheme) -> None:
        if o % 8:
            raise LowbitError(f"format awq packs 8 output channels per word: '{name}' has {o} outputs")

    def encode(self, q: QuantizedTensor) -> dict[str, torch.Tensor]:
        s = self.scheme_of(q)
        if "g_idx" in q.params:
            raise LowbitError("format awq cannot store act-order group indices (g_idx)")
        return {
            "qweight": pack_int32(_interleave(q.codes.t().contiguous()), 4),
            "qzeros": pack_int32(_interleave(self.zeros(q, s).t().contiguous()), 4),
            "scales": q.params["scale"].t().contiguous().to(torch.float16),
        }

    def decode(self, t: dict[str, torch.Tensor], qc: dict[str, Any]) -> QuantizedTensor:
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        group = int(qc.get("group_size", qc.get("q_group_size", 128)))
        if bits != 4 or not qc.get("zero_point", True) or str(qc.get("version", "gemm")).lower() != "gemm":
            raise LowbitError(f"format awq: only 4-bit GEMM checkpoints with zero points are read, got {qc}")
        i, o = t["qweight"].shape[0], t["scales"].shape[1]
        codes = _deinterleave(unpack_int32(t["qweight"], 4, o)).t()
        zero = _deinterleave(unpack_int32(t["qzeros"], 4, o)).t()
        # AWQ files carry no symmetry flag; a grid whose zeros are all 8 is lowbit's symmetric grid.
        sym = bool((zero == 8).all())
        return self.build(4, sym, group, (o, i), codes, t["scales"].t(), zero, None)

    def config(self, qs: list[QuantizedTensor], scheme: IntScheme, head_quantized: bool) -> dict[str, Any]:
        """``quantization_config`` for a file holding ``qs``."""
        return {"quant_method": "awq", "bits": 4, "group_size": scheme.group_size, "zero_point": True,
                "version": "gemm", "modules_to_not_convert": None}


class CompressedTensorsCodec(IntCodec):
    """compressed-tensors ``pack-quantized`` (what vLLM loads for int4/int8 weight-only)."""

    name = "compressed-tensors"
    quant_method = "compressed-tensors"
    marker = "weight_packed"
    bits_allowed = (2, 3, 4, 5, 6, 7, 8)

    def encode(self, q: QuantizedTensor) -> dict[str, torch.Tensor]:
        s = self.scheme_of(q)
        if "g_idx" in q.params:
            raise LowbitError("format compressed-tensors (0.20+) no longer stores act-order group indices")
        out = {
            "weight_packed": pack_int32(q.codes, s.bits),
            # Stored in float32 (the model dtype): fp16 scale × integer is then exact.
            "weight_scale": q.params["scale"].float().contiguous(),
            "weight_shape": torch.tensor(list(q.shape), dtype=torch.int64),
        }
        if not s.symmetric:
            out["weight_zero_point"] = pack_int32(q.params["zero"].t().contiguous(), s.bits).t().contiguous()
        return out

    def decode(self, t: dict[str, torch.Tensor], qc: dict[str, Any]) -> QuantizedTensor:
        w = weights_args(qc)
        bits, sym = int(w["num_bits"]), bool(w.get("symmetric", True))
        group = int(w.get("group_size") or -1) if w.get("strategy") == "group" else -1
        o, i = (int(x) for x in t["weight_shape"].tolist())
        codes = unpack_int32(t["weight_packed"], bits, i)
        scale = t["weight_scale"]
        if scale.to(torch.float16).float().ne(scale.float()).any():
            raise LowbitError("format compressed-tensors: scales not representable in fp16 are not read yet")
        zero = (unpack_int32(t["weight_zero_point"].t().contiguous(), bits, o).t() if not sym
                else torch.full(scale.shape, 1 << (bits - 1), dtype=torch.uint8))
        return self.build(bits, sym, group, (o, i), codes, scale.to(torch.float16), zero, None)

    def config(self, qs: list[QuantizedTensor], scheme: IntScheme, head_quantized: bool) -> dict[str, Any]:
        """``quantization_config`` for a file holding ``qs``."""
        act_static = any(q.meta.get("act_order") and q.meta.get("static_groups") for q in qs)
        weights = {
            "num_bits": scheme.bits, "type": "int", "symmetric": scheme.symmetric,
            "strategy": "group" if scheme.gran == "group" else "channel",
            "group_size": scheme.group_size, "dynamic": False,
            "actorder": "weight" if act_static else None, "observer": "minmax", "block_structure": None,
        }
        return {
            "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "ignore": [] if head_quantized else ["lm_head"], "kv_cache_scheme": None,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                          "output_activations": None, "format": "pack-quantized"}},
        }


def weights_args(qc: dict[str, Any]) -> dict[str, Any]:
    """The (single) weight quantization args of a compressed-tensors config."""
    groups = qc.get("config_groups") or {}
    if len(groups) != 1:
        raise LowbitError(f"format compressed-tensors: expected one config group, found {len(groups)}")
    w = next(iter(groups.values())).get("weights")
    if not w or w.get("type", "int") != "int" or qc.get("format") != "pack-quantized":
        raise LowbitError("format compressed-tensors: only int pack-quantized weights are read")
    return dict(w)


CODECS: dict[str, IntCodec] = {c.name: c for c in (GPTQCodec(), AWQCodec(), CompressedTensorsCodec())}
BY_METHOD: dict[str, IntCodec] = {c.quant_method: c for c in CODECS.values()}
