"""LLM.int8() at run time: per-token int8 activations, outlier columns in float.

For an input ``X [tokens, in]`` and int8 weights ``CB [out, in]`` with row
scales ``SCB`` (:class:`lowbit.schemes.bnb.BnbInt8Scheme`), as bitsandbytes'
``Linear8bitLt`` computes it on CPU:

1. ``X`` is rounded to float16. With threshold ``t > 0``, every input column
   holding a value with ``|x| ≥ t`` in any token of the call is an *outlier
   column*; the outlier values are left out of the per-token absmax.
2. Per token: ``s = max |x|`` over the non-outlier values (float32) and
   ``XQ = round(x16 · 127/s)`` as int8, outlier columns set to 0.
3. ``Y = (XQ · CBᵀ) · (s ⊗ SCB) · 6.200124e-05`` with an exact int32
   accumulation, plus ``X[:, outliers] · Ŵ[:, outliers]ᵀ`` in the input's
   precision, where ``Ŵ = CB · SCB · fp32(1/127)``.

6.200124e-05 is bitsandbytes' constant for 1/127² (it is 1.8e-5 relatively
larger than 1/16129 = 6.2000124e-05); lowbit uses it too, so that its outputs
equal bitsandbytes' bit for bit (tested through transformers). Switching to
the exact value moves a tiny model's logits by ~1.5% relative, because every
following layer re-rounds its activations to int8.

The outlier set is decided per call (one evaluation batch: a 512-token window
on CPU), as in bitsandbytes. The int8 products are summed exactly (as
``torch._int_mm`` does; bitsandbytes' fallback without AVX-512 sums them in
float32, exact only while partial sums stay below 2**24). A token whose
non-outlier values are all zero gets scale 0 and codes 0 (bitsandbytes
divides by zero there).
"""

from __future__ import annotations

import torch

from lowbit.runtime.quant_linear import QuantLinear, register_module_type
from lowbit.schemes.base import QuantizedTensor
from lowbit.schemes.bnb.int8 import INV_127

#: bitsandbytes' rescale constant for 1/127² (int8_mm_dequant), kept for bit-exact outputs.
BNB_INV_127_SQ = 6.200124e-05
#: Columns per float32 GEMM chunk: 1024 · 127 · 127 < 2**24, so each chunk's sums are exact integers.
_EXACT_CHUNK = 1024


def int8_matmul_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for float32 tensors holding int8 values, summed exactly, rounded once to float32.

    That is what bitsandbytes computes (an int32 GEMM, whose result its rescale
    converts to float32), using float32 GEMMs of at most 1,024 columns, each exact.
    """
    k = a.shape[1]
    if k <= _EXACT_CHUNK:
        return a @ b.T
    acc = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for s in range(0, k, _EXACT_CHUNK):
        acc += a[:, s : s + _EXACT_CHUNK] @ b[:, s : s + _EXACT_CHUNK].T
    return acc.to(torch.float32)


def quantize_activations(x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int8 codes (as float32) ``[M, K]``, per-token float32 scales ``[M]`` and outlier columns of ``x`` ``[M, K]``.

    bitsandbytes works on float16 activations; every step here is exact on their
    float32 copies (float16 arithmetic is slow on CPUs), including the comparison
    with the threshold, which torch makes in float16.
    """
    x16 = x.to(torch.float16).to(torch.float32)
    mag = x16.abs()
    cols = torch.empty(0, dtype=torch.long, device=x.device)
    if threshold > 0:
        outliers = mag >= float(torch.tensor(threshold, dtype=torch.float16))
        cols = outliers.any(dim=0).nonzero().view(-1)
        if cols.numel():
            # Outlier values leave the token's absmax; their codes are zeroed with their columns below.
            mag = mag.masked_fill(outliers, 0)
    scale = mag.amax(dim=1)
    factor = torch.where(scale == 0, torch.zeros_like(scale), 127.0 / scale.clamp(min=torch.finfo(torch.float32).tiny))
    codes = torch.round(x16 * factor.unsqueeze(1))
    if cols.numel():
        codes[:, cols] = 0
    return codes, scale, cols


class LLMInt8Linear(QuantLinear):
    """A bnb:int8 linear computing LLM.int8()'s mixed-precision decomposition (module name ``llm_int8``)."""

    runtime_name = ("lowbit-reference LLM.int8() (fp16→per-token int8 activations, exact int8×int8 via "
                    "fp32 GEMM, outlier columns in float)")

    def __init__(self, q: QuantizedTensor, bias: torch.Tensor | None, cache_weight: bool = True) -> None:
        super().__init__(q, bias, cache_weight)
        self.threshold = float(q.meta.get("threshold", 6.0))
        self._cb_float: torch.Tensor | None = None
        self.calls = 0
        self.outlier_cols = 0

    def _codes_float(self, device: torch.device) -> torch.Tensor:
        cb = self._cb_float
        if cb is None or cb.device != device:
            cb = self.codes.to(device=device, dtype=torch.float32)
            if self.cache_weight:
                self._cb_float = cb
        return cb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        a = x.reshape(-1, self.in_features)
        scb = self.q_SCB.to(torch.float32)
        codes, scale, cols = quantize_activations(a, self.threshold)
        acc = int8_matmul_exact(codes, self._codes_float(a.device))  # float32 copy of the int32 GEMM
        out = acc * (scale.unsqueeze(1) * scb.unsqueeze(0)) * BNB_INV_127_SQ
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)  # before the outlier part: bitsandbytes' order of float sums
        out = out.to(x.dtype)
        if cols.numel():
            w_cols = (self.codes[:, cols] * scb.view(-1, 1) * INV_127).to(x.dtype)
            out = out.addmm(a[:, cols], w_cols.T)
        self.calls += 1
        self.outlier_cols += int(cols.numel())
        return out.reshape(*lead, self.out_features)

    def run_stats(self) -> dict[str, float]:
        return {"int8_calls": float(self.calls), "outlier_cols": float(self.outlier_cols),
                "input_cols": float(self.calls * self.in_features)}

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._cb_float = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", threshold={self.threshold}"


register_module_type("llm_int8", LLMInt8Linear)
