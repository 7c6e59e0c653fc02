"""How a quantized model runs: the dequantize-then-matmul reference path, and
real low-bit kernels where the hardware has them (added by later issues)."""

from lowbit.runtime.quant_linear import QuantLinear, install_quantized, quantized_modules

__all__ = ["QuantLinear", "install_quantized", "quantized_modules"]
