"""The method contract: given a scheme, choose the codes.

A method never packs bits and never writes files. It receives a
:class:`QuantContext` (the model, the linears to quantize, the scheme, its
typed options, the calibration windows) and installs one
:class:`~lowbit.runtime.QuantLinear` per target through ``ctx.install`` —
early, if later layers must see quantized predecessors (GPTQ, AWQ).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel
from lowbit.runtime.quant_linear import install_quantized
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.variant import OptionSpec

#: Options every method accepts.
COMMON_OPTIONS: dict[str, OptionSpec] = {
    "lm_head": OptionSpec("lm_head", bool, False, "also quantize the output head (left float by default)"),
}


@dataclass
class QuantContext:
    """Everything a method may use, and the record of what it installed."""

    loaded: LoadedModel
    targets: dict[str, nn.Linear]
    scheme: Scheme
    options: dict[str, Any]
    calib: TokenSet | None
    device: torch.device
    installed: dict[str, QuantizedTensor] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        """The model being quantized (modified in place)."""
        return self.loaded.model

    def install(self, name: str, q: QuantizedTensor) -> None:
        """Swap the Linear ``name`` for a QuantLinear holding ``q``."""
        install_quantized(self.model, name, q)
        self.installed[name] = q

    def require_calib(self, method: str) -> TokenSet:
        """The calibration windows, or a clear error when there are none."""
        if self.calib is None or self.calib.windows.numel() == 0:
            raise LowbitError(f"{method} needs calibration text, but the calibration set is empty; pass --calib")
        return self.calib


class Method(ABC):
    """A way of choosing codes on a scheme's grid."""

    #: Registered name, the part before ``:`` in a variant string.
    name: ClassVar[str] = ""
    #: One line for listings.
    summary: ClassVar[str] = ""
    #: Options beyond :data:`COMMON_OPTIONS`.
    options: ClassVar[dict[str, OptionSpec]] = {}
    #: Whether the method reads calibration data.
    needs_calibration: ClassVar[bool] = False

    def all_options(self) -> dict[str, OptionSpec]:
        """Method options plus the common ones."""
        return {**COMMON_OPTIONS, **self.options}

    def check_scheme(self, scheme: Scheme) -> None:
        """Raise :class:`LowbitError` if this method cannot use ``scheme``."""
        owner = getattr(scheme, "requires_method", None)
        if owner is not None and owner != self.name:
            raise LowbitError(f"scheme {scheme.spec()} can only be applied by method '{owner}', not {self.name}")

    def resolve_scheme(self, text: str) -> Scheme:
        """The scheme the scheme part of a variant names (methods may read it their own way)."""
        from lowbit.schemes import parse_scheme

        return parse_scheme(text)

    def uses_calibration(self, options: dict[str, Any]) -> bool:
        """Whether this variant reads calibration data (some methods only with some options)."""
        return self.needs_calibration

    def act_bits(self, scheme: Scheme, options: dict[str, Any]) -> int:
        """Bits of the activations at run time (16 = left float)."""
        return 16

    @abstractmethod
    def quantize(self, ctx: QuantContext) -> None:
        """Quantize every target in ``ctx`` and ``ctx.install`` the results."""
