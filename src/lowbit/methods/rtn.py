"""Round-to-nearest: every weight to its nearest grid point. No calibration."""

from __future__ import annotations

from lowbit.methods.base import Method, QuantContext
from lowbit.utils.progress import track


class RTN(Method):
    """Round-to-nearest on any scheme; the baseline every other method must beat."""

    name = "rtn"
    summary = "round-to-nearest, no calibration"

    def quantize(self, ctx: QuantContext) -> None:
        for name, lin in track(list(ctx.targets.items()), "rtn: quantize linears"):
            w = lin.weight.detach().to(ctx.device)
            ctx.install(name, ctx.scheme.quantize(w))
