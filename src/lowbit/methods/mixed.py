"""Mixed precision: a bit width per linear, round-to-nearest on int grids.

``mixed:w4g64+bpw=4.5`` measures per-layer sensitivity on the calibration
text and allocates bits to meet 4.5 bits per weight (scales included);
``mixed:w4g64+plan=FILE`` applies a saved plan (see
:mod:`lowbit.advisor.allocate`); with neither, every layer gets the scheme
part (``w4g64``), i.e. plain RTN. The scheme part fixes the group size and
symmetry every layer shares. Each quantized tensor records its own grid, so
the lowbit format saves and reloads a mixture as it does any variant.
"""

from __future__ import annotations

import time
from typing import Any

from lowbit.errors import LowbitError
from lowbit.methods.base import Method, QuantContext
from lowbit.schemes import parse_scheme
from lowbit.schemes.base import Scheme
from lowbit.schemes.int_affine import IntScheme
from lowbit.utils.progress import info, track
from lowbit.variant import OptionSpec


def parse_bits(text: str) -> tuple[int, ...]:
    """``"2348"`` → (2, 3, 4, 8): one digit per allowed code width (2–8)."""
    try:
        bits = tuple(sorted({int(c) for c in text.strip()}))
    except ValueError:
        raise LowbitError(f"mixed: option bits takes digits 2–8, e.g. bits=2345678, got '{text}'") from None
    if not bits or any(not 2 <= b <= 8 for b in bits):
        raise LowbitError(f"mixed: option bits takes digits 2–8, e.g. bits=2345678, got '{text}'")
    return bits


class Mixed(Method):
    """Per-layer bit widths chosen by sensitivity (or read from a plan), RTN on each layer's grid."""

    name = "mixed"
    summary = "mixed precision: bits per layer from KLD sensitivity under a bits-per-weight budget"
    needs_calibration = True
    options = {
        "bpw": OptionSpec("bpw", float, 0.0, "bits-per-weight budget (scales included); 0: no allocation"),
        "plan": OptionSpec("plan", str, "", "a plan file written by lowbit auto --target-bpw (overrides bpw)"),
        "bits": OptionSpec("bits", str, "2345678", "allowed code widths, one digit each"),
        "sens": OptionSpec("sens", str, "fisher", "sensitivity estimate", ("fisher", "kld")),
        "sens_windows": OptionSpec("sens_windows", int, 8, "calibration windows the sensitivity is measured on"),
    }

    def check_scheme(self, scheme: Scheme) -> None:
        if not isinstance(scheme, IntScheme):
            raise LowbitError(f"mixed precision allocates int grids; scheme {scheme.spec()} is not one "
                              "(use e.g. mixed:w4g64+bpw=4.5)")

    def quantize(self, ctx: QuantContext) -> None:
        from lowbit.advisor.allocate import Plan, allocate, load_plan

        base = ctx.scheme
        assert isinstance(base, IntScheme)
        opts = ctx.options
        if opts["plan"]:
            plan = load_plan(opts["plan"])
            unknown = sorted(set(plan.layers) - set(ctx.targets))
            if unknown:
                raise LowbitError(f"plan {opts['plan']} names layers this model does not have: {unknown[:3]}")
        elif opts["bpw"]:
            start = time.perf_counter()
            sens = layer_sensitivity(ctx, base, parse_bits(opts["bits"]), opts["sens"], opts["sens_windows"])
            plan = allocate(sens, float(opts["bpw"]))
            plan.info["calib_sha256"] = ctx.calib.sha256 if ctx.calib is not None else None
            # Measured here: a sensitivity table read from the cache costs (almost) nothing.
            ctx.stats["calib_seconds"] = time.perf_counter() - start
            ctx.stats["sensitivity"] = sens.cost
            info(f"mixed: {plan.bpw:.3f} bits per weight, layers per width {plan.bits_histogram()}, "
                 f"predicted KLD {plan.predicted_kld:.4g}")
        else:
            plan = Plan(base.spec(), {})
        ctx.stats["plan"] = plan.as_dict()
        for name, lin in track(list(ctx.targets.items()), "mixed: quantize linears"):
            scheme = parse_scheme(plan.layers.get(name, base.spec()))
            scheme.check_shape(tuple(lin.weight.shape), name)
            ctx.install(name, scheme.quantize(lin.weight.detach().to(ctx.device)))

    def act_bits(self, scheme: Scheme, options: dict[str, Any]) -> int:
        return 16


def layer_sensitivity(ctx: QuantContext, base: IntScheme, bits: tuple[int, ...], how: str, windows: int) -> Any:
    """Per-layer sensitivity of the model in ``ctx`` (still float) on its calibration windows.

    Cached by model weights, calibration tokens and settings, so searching over
    several budgets (lowbit auto) measures it once.
    """
    import json

    from lowbit.advisor.cache import sensitivity_key
    from lowbit.advisor.sensitivity import Sensitivity, fisher_sensitivity, kld_sensitivity
    from lowbit.utils.atomic import write_text_atomic
    from lowbit.utils.hashing import model_fingerprint

    calib = ctx.require_calib("mixed precision (+bpw)")
    path = sensitivity_key(model_fingerprint(ctx.model), calib.sha256, base.spec(), bits, how, windows)
    if path.is_file():
        try:
            return Sensitivity.from_json(json.loads(path.read_text(encoding="utf-8")), base)
        except (ValueError, KeyError):
            pass  # a damaged cache entry is recomputed
    fn = fisher_sensitivity if how == "fisher" else kld_sensitivity
    sens = fn(ctx.model, ctx.targets, calib, base, bits, windows)
    write_text_atomic(path, json.dumps(sens.to_json()))
    return sens
