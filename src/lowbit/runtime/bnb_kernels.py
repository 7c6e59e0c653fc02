"""bnb variants run by bitsandbytes' own modules (``+runtime=bitsandbytes``).

The quantized linear keeps lowbit's representation (for sizes and saving)
and hands the forward pass to a ``bitsandbytes.nn.Linear4bit`` or
``Linear8bitLt`` built from exactly the same bytes, the way transformers
builds them when it loads a bitsandbytes checkpoint. bitsandbytes is
imported only when such a module is built.

Which kernel runs is named per module (``runtime_name``). In `lowbit compare`,
:func:`bnb_speed_fields` times bnb rows with both lowbit's path and
bitsandbytes' kernels (``speeds`` in the JSON). On CPU with
AVX512-BF16, Linear4bit repacks the weight and runs
``gemv_4bit_inference_cpu_<type>_bf16`` (bf16 activations and scales), so its
logits differ from the float32 reference by bf16 rounding; elsewhere it
dequantizes (``dequantize_4bit``) and calls a float matmul. Linear8bitLt on
CPU rounds activations to float16, quantizes them per token
(``int8_vectorwise_quant``) and multiplies with ``torch._int_mm`` (AVX-512)
or a float32 matmul.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lowbit.errors import LowbitError, MissingExtraError
from lowbit.runtime.quant_linear import QuantLinear, register_module_type
from lowbit.schemes.base import QuantizedTensor
from lowbit.schemes.bnb import Bnb4bitScheme, BnbInt8Scheme


def require_bitsandbytes() -> Any:
    """The bitsandbytes module, or a clear error naming the extra to install."""
    try:
        import bitsandbytes
    except ImportError:
        raise MissingExtraError("bitsandbytes", "bnb", "running bnb variants with bitsandbytes' kernels") from None
    return bitsandbytes


def _cpu_flags() -> tuple[bool, bool, bool]:
    """(AVX512-BF16 4-bit kernel, kernels-community gemm, AVX-512 torch._int_mm) as bitsandbytes decides them."""
    from bitsandbytes.backends.cpu import ops as cpu_ops
    from bitsandbytes.functional import has_avx512bf16

    return (bool(has_avx512bf16()), getattr(cpu_ops, "gemm_4bit_forward_kernel", None) is not None,
            bool(getattr(cpu_ops, "_has_avx512", False)))


def _build_4bit(q: QuantizedTensor, scheme: Bnb4bitScheme, bias: torch.Tensor | None,
                device: torch.device) -> tuple[torch.nn.Module, str]:
    bnb = require_bitsandbytes()
    from bitsandbytes.nn import Linear4bit, Params4bit

    from lowbit.formats.bnb_layout import to_bnb

    out_f, in_f = q.shape
    if device.type == "cpu" and in_f % scheme.blocksize:
        # bitsandbytes 0.50's AVX-512 dequantize_4bit indexes absmax per row and its bf16 repacking
        # reshapes absmax to [O, I/blocksize]: blocks that cross rows come out wrong or crash.
        raise LowbitError(f"bitsandbytes' CPU kernels need in_features ({in_f}) to be a multiple of the block "
                          f"size ({scheme.blocksize}); run {scheme.spec()} with the reference runtime instead")
    tensors = to_bnb(q)
    lin = Linear4bit(in_f, out_f, bias=bias is not None, compute_dtype=torch.float32,
                     compress_statistics=scheme.double_quant, quant_type=scheme.quant_type, device="meta")
    lin.weight = Params4bit.from_prequantized(tensors.pop("weight"), tensors, requires_grad=False,
                                              device=device, module=lin)
    if bias is not None:
        lin.bias = torch.nn.Parameter(bias.detach().to(device, torch.float32).clone(), requires_grad=False)
    version = bnb.__version__
    if device.type != "cpu":
        return lin.eval(), f"bitsandbytes {version} Linear4bit ({device.type} gemm_4bit)"
    bf16, kernels_hub, _ = _cpu_flags()
    packable = out_f % 32 == 0 and in_f % 2 == 0
    if bf16 and packable:
        kernel = "kernels-community gemm_4bit_forward" if kernels_hub else f"gemv_4bit_inference_cpu_{scheme.quant_type}_bf16"
        return lin.eval(), f"bitsandbytes {version} Linear4bit (CPU {kernel}: bf16 activations and scales)"
    lin.support_avx512bf16_for_cpu = False
    return lin.eval(), f"bitsandbytes {version} Linear4bit (CPU dequantize_4bit + torch float32 matmul)"


def _build_int8(q: QuantizedTensor, bias: torch.Tensor | None, device: torch.device) -> tuple[torch.nn.Module, str]:
    bnb = require_bitsandbytes()
    from bitsandbytes.nn import Int8Params, Linear8bitLt

    out_f, in_f = q.shape
    threshold = float(q.meta.get("threshold", 6.0))
    lin = Linear8bitLt(in_f, out_f, bias=bias is not None, has_fp16_weights=False, threshold=threshold, device="meta")
    cb = q.codes.to(device=device, dtype=torch.int8).contiguous()
    lin.weight = Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb,
                            SCB=q.params["SCB"].to(device, torch.float32).contiguous())
    if bias is not None:
        lin.bias = torch.nn.Parameter(bias.detach().to(device, torch.float32).clone(), requires_grad=False)
    version = bnb.__version__
    if device.type != "cpu":
        return lin.eval(), f"bitsandbytes {version} Linear8bitLt ({device.type}, threshold {threshold:g})"
    gemm = "torch._int_mm" if _cpu_flags()[2] else "float32 matmul"
    return lin.eval(), (f"bitsandbytes {version} Linear8bitLt (CPU: fp16 activations, int8_vectorwise_quant, "
                        f"{gemm} int8 GEMM, threshold {threshold:g})")


class _QuietCast(logging.Filter):
    """Drops Linear8bitLt's per-call 'inputs will be cast to float16' warning (it fires on every forward)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be cast from" not in record.getMessage()


class BnbKernelLinear(QuantLinear):
    """A bnb-scheme linear whose forward runs bitsandbytes' module (module name ``bitsandbytes``)."""

    def __init__(self, q: QuantizedTensor, bias: torch.Tensor | None, cache_weight: bool = True) -> None:
        super().__init__(q, bias, cache_weight)
        device = q.codes.device
        if isinstance(self.scheme, Bnb4bitScheme):
            inner, name = _build_4bit(q, self.scheme, bias, device)
        elif isinstance(self.scheme, BnbInt8Scheme):
            inner, name = _build_int8(q, bias, device)
            logging.getLogger("bitsandbytes.autograd._functions").addFilter(_QuietCast())
        else:
            raise LowbitError(f"bitsandbytes' kernels run bnb schemes only, not {q.scheme}")
        # Kept out of the module tree: its tensors duplicate the buffers and must not be saved twice.
        self.__dict__["_inner"] = inner
        self.runtime_name = name
        self.calls = 0
        self.outlier_cols = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.__dict__["_inner"]
        out = inner(x)
        state = getattr(inner, "state", None)
        if state is not None:
            idx = getattr(state, "idx", None)
            self.calls += 1
            self.outlier_cols += int(idx.numel()) if idx is not None else 0
        return out

    def run_stats(self) -> dict[str, float]:
        if not isinstance(self.scheme, BnbInt8Scheme):
            return {}
        return {"int8_calls": float(self.calls), "outlier_cols": float(self.outlier_cols),
                "input_cols": float(self.calls * self.in_features)}

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, recurse)
        if self.codes.device.type != "meta":
            # bitsandbytes modules hold their own copies: rebuild them where the buffers went.
            q = self.quantized
            bias = self.bias
            if isinstance(self.scheme, Bnb4bitScheme):
                inner, _ = _build_4bit(q, self.scheme, bias, self.codes.device)
            else:
                inner, _ = _build_int8(q, bias, self.codes.device)
            self.__dict__["_inner"] = inner
        return result


register_module_type("bitsandbytes", BnbKernelLinear)


def _forward_tokens_per_s(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Tokens per second of one forward over ``ids`` ``[1, T]``, after a short warm-up call."""
    import time

    from lowbit.utils.tensors import flush_denormal

    with torch.inference_mode(), flush_denormal():
        model(input_ids=ids[:, :16], use_cache=False)  # first call: caches, bitsandbytes' bf16 repacking
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        return ids.numel() / (time.perf_counter() - start)


def bnb_speed_fields(loaded: Any, eval_set: Any, row: dict[str, Any]) -> dict[str, Any]:
    """``{"speeds": [...]}`` for a compare row of a bnb variant: lowbit's path and bitsandbytes' kernels.

    Both are timed the same way — one forward over the first evaluation window
    after a 16-token warm-up — so the two figures compare. Empty for other
    variants, without bitsandbytes, and with ``LOWBIT_BNB_SPEED=0``. Call it
    last: it swaps the model's linears for bitsandbytes modules in place.
    """
    import os

    from lowbit.runtime.quant_linear import _set_module, quantized_modules, runtime_name

    mods = [(n, m) for n, m in quantized_modules(loaded.model) if isinstance(m.scheme, Bnb4bitScheme | BnbInt8Scheme)]
    if not mods or os.environ.get("LOWBIT_BNB_SPEED", "1") == "0":
        return {}
    try:
        require_bitsandbytes()
    except MissingExtraError:
        return {}
    ids = eval_set.windows[:1].to(mods[0][1].codes.device)
    speeds: list[dict[str, Any]] = []
    try:
        for phase in ("lowbit", "bitsandbytes"):
            if phase == "bitsandbytes" and not all(isinstance(m, BnbKernelLinear) for _, m in mods):
                for name, mod in mods:
                    q = mod.quantized
                    q.meta = {**q.meta, "module": "bitsandbytes"}
                    _set_module(loaded.model, name, BnbKernelLinear(q, mod.bias))
            elif phase == "lowbit" and isinstance(mods[0][1], BnbKernelLinear):
                continue  # a +runtime=bitsandbytes row has no lowbit path to time
            speeds.append({"runtime": runtime_name(loaded.model),
                           "tokens_per_s": _forward_tokens_per_s(loaded.model, ids),
                           "tokens": int(ids.numel()), "threads": torch.get_num_threads()})
    except Exception as e:  # noqa: BLE001 - a speed figure must not lose the variant's accuracy results
        speeds.append({"runtime": "bitsandbytes", "error": f"{type(e).__name__}: {e}"})
    return {"speeds": speeds}
