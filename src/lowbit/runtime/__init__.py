"""How a quantized model runs: the dequantize-then-matmul reference path, and
real low-bit kernels where the hardware has them (added by later issues)."""

from lowbit.runtime.quant_linear import QuantLinear, install_quantized, quantized_modules
from lowbit.runtime import llm_int8  # noqa: F401  (registers the LLM.int8() module type)
from lowbit.runtime import bnb_kernels  # noqa: F401  (registers bitsandbytes' kernels; imports no bitsandbytes)

__all__ = ["QuantLinear", "install_quantized", "quantized_modules"]
