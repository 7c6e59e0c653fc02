"""W8A8: int8 weights per output channel *and* int8 activations at run time.

The weight grid is :class:`~lowbit.schemes.int_affine.IntScheme` ``w8ch``
(symmetric, ``s = absmax / 127.5``, fp16 scale per output row: the
compressed-tensors convention, so an exported ``int-quantized`` checkpoint
stores exactly these codes). What this family adds is the activation grid:

* ``w8a8`` — activations int8, **per token, dynamic, symmetric**:
  ``s_t = max|x_t| / 127`` computed at run time for every row, nothing stored
  (compressed-tensors' W8A8 preset, vLLM's ``scaled_int8_quant``);
* ``w8a8static`` — activations int8, **per tensor, static, symmetric**: one
  fp32 ``input_scale`` per linear, fixed from calibration and stored with the
  weight (SmoothQuant's O3 level). A method must supply it
  (:meth:`W8A8Scheme.with_input_scale`); RTN cannot.

Activation codes are clamped to the int8 range ``[-128, 127]`` (as vLLM's
kernels do). A row holding Inf/NaN gets a non-finite scale, so its outputs are
non-finite like the float model's would be, and other rows are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.schemes.int_affine import IntScheme

#: Largest activation code magnitude a per-token scale maps max|x| onto.
ACT_QMAX = 127
#: The int8 range activation codes are clamped to.
ACT_RANGE = (-128, 127)
_TINY = 1e-30  # keeps an all-zero row's scale finite (its codes are 0 anyway)

_WEIGHT_GRID = IntScheme(8, True, 0, "channel")


@dataclass(frozen=True)
class W8A8Scheme(Scheme):
    """int8 per-channel weights with int8 activations.

    Attributes:
        static: activations use one calibrated per-tensor scale (True) or a
            per-token scale computed at run time (False).
    """

    static: bool = False
    family = "wa"

    # --- naming -----------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> W8A8Scheme | None:
        """Parse ``w8a8`` / ``w8a8static`` (None if not this family's syntax)."""
        t = text.strip().lower()
        if t in ("w8a8", "w8a8dyn", "w8a8dynamic"):
            return cls(False)
        if t == "w8a8static":
            return cls(True)
        return None

    def spec(self) -> str:
        return "wa:w8a8static" if self.static else "wa:w8a8"

    @property
    def weight_bits(self) -> int:
        return 8

    @property
    def granularity(self) -> str:
        return "channel"

    @property
    def act_bits(self) -> int:
        """Bits of the activations at run time."""
        return 8

    @property
    def act_granularity(self) -> str:
        """``"token"`` (dynamic) or ``"tensor"`` (static)."""
        return "tensor" if self.static else "token"

    @property
    def needs_calibration(self) -> bool:
        """A static activation scale can only come from calibration data."""
        return self.static

    # --- weights ----------------------------------------------------------------

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        # int8 codes + fp16 scale per row, plus the fp32 input scale when static.
        return _WEIGHT_GRID.storage_bits(shape) + (32 if self.static else 0)

    def quantize(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedTensor:
        q = _WEIGHT_GRID.quantize(w)
        return QuantizedTensor(self.spec(), q.shape, q.codes, q.params, q.meta)

    def dequantize(self, q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return _WEIGHT_GRID.dequantize(q, dtype)

    def with_input_scale(self, q: QuantizedTensor, input_scale: float, name: str = "weight") -> QuantizedTensor:
        """``q`` with its static activation scale (fp32 ``[1]``) attached."""
        if not self.static:
            raise LowbitError(f"{self.spec()} has dynamic activations; '{name}' takes no input scale")
        if not (input_scale > 0 and input_scale < float("inf")):
            raise LowbitError(f"static input scale of '{name}' must be finite and > 0, got {input_scale}")
        params = {**q.params, "input_scale": torch.tensor([input_scale], dtype=torch.float32)}
        return QuantizedTensor(q.scheme, q.shape, q.codes, params, dict(q.meta))

    @staticmethod
    def int8_weight(q: QuantizedTensor) -> torch.Tensor:
        """Signed int8 codes ``[O, I]`` (the stored unsigned code minus 128)."""
        return (q.codes ^ 0x80).view(torch.int8)

    # --- activations ------------------------------------------------------------

    def act_scale(self, x: torch.Tensor, input_scale: torch.Tensor | None) -> torch.Tensor:
        """Scale per row of ``x`` ``[M, K]`` (fp32 ``[M, 1]``); non-finite for rows holding Inf/NaN."""
        amax = x.abs().amax(dim=-1, keepdim=True)
        if not self.static:
            return (amax / ACT_QMAX).clamp_(min=_TINY)
        if input_scale is None:
            raise LowbitError(f"{self.spec()} needs a calibrated input scale; quantize with smoothquant:w8a8static")
        # Same scale for every row, except that a non-finite row stays non-finite.
        return torch.where(torch.isfinite(amax), input_scale.to(x.dtype), amax)

    def quantize_act(self, x: torch.Tensor, input_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """int8 codes ``[M, K]`` and fp32 scales ``[M, 1]`` of activations ``x`` ``[M, K]``."""
        x = x.float()
        scale = self.act_scale(x, input_scale)
        q = torch.div(x, scale).round_().clamp_(*ACT_RANGE)
        # A NaN code (cast to an arbitrary int8) only occurs in a row whose scale is
        # already non-finite, so that row's outputs are non-finite whatever the code.
        return q.to(torch.int8), scale

    def fake_quant_act(self, x: torch.Tensor, input_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Activations rounded to the int8 grid and scaled back (float32)."""
        q, scale = self.quantize_act(x.reshape(-1, x.shape[-1]), input_scale)
        return (q.float() * scale).reshape(x.shape)
