"""W8A8 at run time: activations quantized to int8 on every call.

Two paths compute the same thing, and both stay available:

* **int8** — activations quantized per row, then a real int8 × int8 → int32
  GEMM (``torch._int_mm``; on CPU it is oneDNN's s8s8s32 GEMM, which uses
  AVX512-VNNI / AMX-INT8 where the CPU has them), the activation and weight
  scales applied to the int32 result outside the kernel;
* **reference** — the same activation codes scaled back to float, times the
  dequantized weight in fp32 (the yardstick; exact on any hardware).

Integer accumulation is exact, so the paths differ only by fp32 rounding of
the reference's sum (relative ~1e-6). A kernel missing or failing at run time
makes that module fall back to the reference path, records why, and never
raises: :func:`w8a8_runtime_name` reports it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import QuantLinear, register_module
from lowbit.runtime.speed import Runnable, SpeedRuntime, TorchCausalLM, register_speed_provider, torch_runtime
from lowbit.schemes.base import QuantizedTensor
from lowbit.schemes.w8a8 import W8A8Scheme
from lowbit.utils.progress import warn

INT8 = "int8"
REFERENCE = "reference"

REFERENCE_KERNEL = "lowbit-reference W8A8 (int8 fake-quant activations × dequantized weights, fp32 matmul)"


def int8_kernel_name(device: torch.device | str = "cpu") -> str:
    """Human name of the int8 GEMM ``torch._int_mm`` runs on ``device``."""
    if torch.device(device).type == "cuda":
        return "torch._int_mm (cuBLASLt int8 GEMM)"
    backend = "oneDNN s8s8s32 GEMM" if torch.backends.mkldnn.is_available() else "ATen int8 GEMM"
    return f"torch._int_mm ({backend})"


@functools.cache
def _probe(device_type: str) -> str | None:
    """None when ``torch._int_mm`` runs exactly on ``device_type``, else why not."""
    if not hasattr(torch, "_int_mm"):
        return f"torch {torch.__version__} has no torch._int_mm"
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randint(-128, 128, (32, 64), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (64, 32), generator=g, dtype=torch.int8)
        got = torch._int_mm(a.to(device_type), b.to(device_type)).cpu()
    except (RuntimeError, NotImplementedError, TypeError) as e:
        return f"torch._int_mm unavailable on {device_type}: {str(e).splitlines()[0]}"
    if not torch.equal(got.long(), a.long() @ b.long()):
        return f"torch._int_mm on {device_type} gave inexact results"
    return None


def int8_kernel_status(device: torch.device | str = "cpu") -> str | None:
    """None when the int8 GEMM is usable on ``device``; otherwise the reason it is not."""
    return _probe(torch.device(device).type)


class W8A8Linear(QuantLinear):
    """A W8A8 linear: int8 per-channel weights, int8 activations quantized on every call.

    Attributes:
        prefer_int8: run the int8 GEMM when it is available (else the reference path).
        fallback_reason: why this module runs the reference path despite
            ``prefer_int8`` (None while the int8 path works).
    """

    def __init__(self, q: QuantizedTensor, bias: torch.Tensor | None, cache_weight: bool = True) -> None:
        super().__init__(q, bias, cache_weight)
        scheme = self.scheme
        assert isinstance(scheme, W8A8Scheme)
        self.w8a8: W8A8Scheme = scheme
        self.prefer_int8 = True
        self.fallback_reason: str | None = None
        self._wt: torch.Tensor | None = None  # int8 [in, out], a transposed view of [out, in]
        self._ws: torch.Tensor | None = None  # fp32 [1, out]

    @property
    def input_scale(self) -> torch.Tensor | None:
        """Static per-tensor activation scale (fp32 ``[1]``), or None when dynamic."""
        return getattr(self, "q_input_scale", None)

    @property
    def active_path(self) -> str:
        """``"int8"`` or ``"reference"``: the path the next call takes."""
        return INT8 if self.prefer_int8 and self.fallback_reason is None else REFERENCE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        y = None
        if self.active_path == INT8:
            reason = int8_kernel_status(x.device)
            if reason is None:
                try:
                    y = self._forward_int8(x2)
                except (RuntimeError, NotImplementedError) as e:
                    reason = f"torch._int_mm failed on shape {list(x2.shape)}×{list(self.shape)}: {str(e).splitlines()[0]}"
            if reason is not None:
                self.fallback_reason = reason
                warn(f"int8 kernel not used ({reason}); running the W8A8 reference path")
        if y is None:
            y = self._forward_reference(x2)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _forward_int8(self, x2: torch.Tensor) -> torch.Tensor:
        if self._wt is None or self._wt.device != x2.device or self._ws is None:
            q = self.quantized
            self._wt = W8A8Scheme.int8_weight(q).to(x2.device).contiguous().t()
            self._ws = q.params["scale"].float().reshape(1, -1).to(x2.device)
        qx, sx = self.w8a8.quantize_act(x2, self.input_scale)
        rows = qx.shape[0]
        if x2.device.type == "cuda" and rows <= 16:
            # cuBLASLt's int8 GEMM wants more than 16 rows; zero rows cost nothing to drop.
            qx = torch.cat([qx, qx.new_zeros(17 - rows, qx.shape[1])])
        acc = torch._int_mm(qx, self._wt)[:rows]
        # Few, fused ops: at one token per call (decode) their overhead is what costs.
        if self.bias is None:
            return (acc * sx).mul_(self._ws)
        return torch.addcmul(self.bias.float(), acc * sx, self._ws)

    def _forward_reference(self, x2: torch.Tensor) -> torch.Tensor:
        xf = self.w8a8.fake_quant_act(x2, self.input_scale)
        bias = self.bias.float() if self.bias is not None else None
        return nn.functional.linear(xf, self.weight_for(xf.dtype, xf.device), bias)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._wt = self._ws = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, path={self.active_path}"


register_module("wa", W8A8Linear)


def w8a8_modules(model: nn.Module) -> Iterator[tuple[str, W8A8Linear]]:
    """Every :class:`W8A8Linear` in ``model`` with its qualified name."""
    for name, mod in model.named_modules():
        if isinstance(mod, W8A8Linear):
            yield name, mod


def set_w8a8_path(model: nn.Module, path: str) -> int:
    """Make every W8A8 module of ``model`` prefer ``"int8"`` or ``"reference"``; returns how many."""
    if path not in (INT8, REFERENCE):
        raise ValueError(f"W8A8 path must be '{INT8}' or '{REFERENCE}', got '{path}'")
    n = 0
    for _, mod in w8a8_modules(model):
        mod.prefer_int8 = path == INT8
        n += 1
    return n


def w8a8_runtime_name(model: nn.Module) -> str | None:
    """The kernel W8A8 modules of ``model`` ran with (None if it has none), fallbacks said plainly."""
    mods = [m for _, m in w8a8_modules(model)]
    if not mods:
        return None
    if not any(m.prefer_int8 for m in mods):
        return REFERENCE_KERNEL
    device = next(iter(mods[0].buffers())).device
    fell = [m.fallback_reason for m in mods if m.fallback_reason]
    if not fell:
        return int8_kernel_name(device)
    if len(fell) == len(mods):
        return f"{REFERENCE_KERNEL}; int8 kernel missing: {fell[0]}"
    return (f"{int8_kernel_name(device)}; {len(fell)} of {len(mods)} linears fell back to the reference path "
            f"({fell[0]})")


@register_speed_provider
def w8a8_speed_runtimes(loaded: LoadedModel) -> list[SpeedRuntime]:
    """Both W8A8 paths of a model holding W8A8 linears (the int8 one errors when its kernel is missing)."""
    model = loaded.model
    mods = [m for _, m in w8a8_modules(model)]
    if not mods:
        return []
    device = next(iter(mods[0].buffers())).device

    def build_int8() -> Runnable:
        reason = int8_kernel_status(device)
        if reason is not None:
            raise LowbitError(reason)
        set_w8a8_path(model, INT8)
        return TorchCausalLM(model)

    return [SpeedRuntime(int8_kernel_name(device), build_int8, lambda: w8a8_runtime_name(model) or ""),
            torch_runtime(model, REFERENCE_KERNEL, lambda: set_w8a8_path(model, REFERENCE) and None)]
