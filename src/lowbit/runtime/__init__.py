"""How a quantized model runs: the dequantize-then-matmul reference path, and
real low-bit kernels where the hardware has them (int8 GEMM for W8A8)."""

from lowbit.runtime.quant_linear import QuantLinear, install_quantized, quantized_modules
from lowbit.runtime.w8a8 import W8A8Linear  # registers the W8A8 runtime module
from lowbit.runtime import llm_int8  # noqa: F401  (registers the LLM.int8() module type)
from lowbit.runtime import bnb_kernels  # noqa: F401  (registers bitsandbytes' kernels; imports no bitsandbytes)

__all__ = ["QuantLinear", "W8A8Linear", "install_quantized", "quantized_modules"]
