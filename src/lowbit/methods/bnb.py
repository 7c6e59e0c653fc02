"""bitsandbytes' methods: NF4/FP4 round-to-nearest and LLM.int8(). No calibration.

``bnb:nf4``, ``bnb:fp4`` (``-dq``, ``b<blocksize>``): every weight to its
nearest codebook entry in its block, exactly as ``quantize_4bit``. Activations
stay float (act_bits 16).

``bnb:int8[+t=6.0]``: LLM.int8(). Weights become int8 rows with a per-row
absmax (CB/SCB); at run time the activation columns holding any value with
|x| ≥ t go through a float matmul with the matching weight columns, all
other columns through int8 × int8 with per-token absmax scales. ``+t=0``
turns the decomposition off: plain vector-wise W8A8. The row reports
act_bits 8: the int8 path carries all but the outlier columns, whose share
on the evaluation set is reported as ``outlier_col_share``.

``+runtime=bitsandbytes`` runs the same codes through bitsandbytes' own
modules (Linear4bit / Linear8bitLt) instead of lowbit's reference path.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lowbit.errors import LowbitError
from lowbit.methods.base import Method, QuantContext
from lowbit.schemes.base import Scheme
from lowbit.schemes.bnb import Bnb4bitScheme, BnbInt8Scheme
from lowbit.utils.progress import track
from lowbit.variant import OptionSpec

#: bitsandbytes' and transformers' default ``llm_int8_threshold``.
DEFAULT_THRESHOLD = 6.0
RUNTIMES = ("reference", "bitsandbytes")


class BnbMethod(Method):
    """Round-to-nearest on bitsandbytes' grids, plus LLM.int8()'s run-time outlier split."""

    name = "bnb"
    summary = "bitsandbytes NF4/FP4 (QLoRA) and LLM.int8(), no calibration"
    options: ClassVar[dict[str, OptionSpec]] = {
        "t": OptionSpec("t", float, None, "LLM.int8() outlier threshold on |activation| (default 6.0; 0 = plain int8)"),
        "runtime": OptionSpec("runtime", str, "reference", "run with lowbit's reference path or bitsandbytes' kernels",
                              RUNTIMES),
    }

    def check_scheme(self, scheme: Scheme) -> None:
        if not isinstance(scheme, Bnb4bitScheme | BnbInt8Scheme):
            raise LowbitError(f"method bnb runs on bitsandbytes grids (nf4, fp4, nf4-dq, nf4b128, int8), "
                              f"not {scheme.spec()}; for other grids use rtn")

    def check_options(self, scheme: Scheme, options: dict[str, Any]) -> None:
        t = options.get("t")
        if t is None:
            return
        if not isinstance(scheme, BnbInt8Scheme):
            raise LowbitError(f"option 't' (outlier threshold) applies to bnb:int8 only, not {scheme.spec()}")
        if not t >= 0:  # also refuses NaN
            raise LowbitError(f"option 't' of bnb must be ≥ 0 (0 turns the outlier split off), got {t}")

    def act_bits(self, scheme: Scheme, options: dict[str, Any]) -> int:
        return 8 if isinstance(scheme, BnbInt8Scheme) else 16

    @staticmethod
    def threshold(options: dict[str, Any]) -> float:
        """The LLM.int8() threshold in effect."""
        t = options.get("t")
        return DEFAULT_THRESHOLD if t is None else float(t)

    def quantize(self, ctx: QuantContext) -> None:
        self.check_options(ctx.scheme, ctx.options)
        meta: dict[str, Any] = {}
        if isinstance(ctx.scheme, BnbInt8Scheme):
            meta = {"module": "llm_int8", "threshold": self.threshold(ctx.options)}
        if ctx.options.get("runtime") == "bitsandbytes":
            from lowbit.runtime.bnb_kernels import require_bitsandbytes

            require_bitsandbytes()
            meta = {**meta, "module": "bitsandbytes"}
        for name, lin in track(list(ctx.targets.items()), f"bnb: quantize linears to {ctx.scheme.spec()}"):
            try:
                q = ctx.scheme.quantize(lin.weight.detach().to(ctx.device))
            except LowbitError as e:
                raise LowbitError(f"tensor '{name}.weight': {e}") from None
            q.meta.update(meta)
            ctx.install(name, q)
