"""Bits per layer under a bits-per-weight budget, and the plan file that records them.

Minimise the predicted KLD ``Σ_l cost_l(b_l)`` (sensitivities add to second
order) subject to ``Σ_l storage_bits_l(b_l) ≤ B · Σ_l weights_l``, where
storage counts every fp16 scale, exactly as bits per weight is reported. The
solver is the classic greedy for this multiple-choice knapsack: start every
layer at its fewest bits and repeatedly take the upgrade (to any wider option)
that buys the most predicted KLD per stored bit, while it fits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.advisor.sensitivity import Sensitivity, with_bits
from lowbit.errors import LowbitError
from lowbit.schemes import parse_scheme
from lowbit.schemes.int_affine import IntScheme
from lowbit.utils.atomic import write_text_atomic
from lowbit.utils.hashing import sha256_json

PLAN_FORMAT = "lowbit-mixed-plan"
PLAN_VERSION = 1


@dataclass
class Plan:
    """Which grid each linear gets.

    Attributes:
        base: the grid of any layer the plan does not name (canonical spec).
        layers: qualified linear name → canonical scheme spec.
        target_bpw: the budget asked for (bits per weight), None for a hand-made plan.
        bpw: the bits per weight the plan stores, scales included.
        predicted_kld: sum of the per-layer sensitivities chosen (nats/token).
        info: provenance (sensitivity method, tokens, calibration hash).
    """

    base: str
    layers: dict[str, str]
    target_bpw: float | None = None
    bpw: float | None = None
    predicted_kld: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (what :func:`save_plan` writes)."""
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "base": self.base, "target_bpw": self.target_bpw,
                "bpw": self.bpw, "predicted_kld": self.predicted_kld, "info": self.info, "layers": self.layers}

    @property
    def sha256(self) -> str:
        """Content hash of the layer assignment (cache keys)."""
        return sha256_json([self.base, self.layers])

    def bits_histogram(self) -> dict[int, int]:
        """Code width → number of layers."""
        out: dict[int, int] = {}
        for spec in self.layers.values():
            b = parse_scheme(spec).weight_bits
            out[b] = out.get(b, 0) + 1
        return dict(sorted(out.items()))


def allocate(sens: Sensitivity, target_bpw: float) -> Plan:
    """The plan minimising predicted KLD at ``target_bpw`` bits per weight (module docstring)."""
    layers = sorted(sens.cost)
    if not layers:
        raise LowbitError("no layers to allocate bits to")
    options: dict[str, list[tuple[int, int, float]]] = {}
    for n in layers:
        shape = sens.shapes[n]
        opts = sorted((b, with_bits(sens.base, b).storage_bits(shape), c) for b, c in sens.cost[n].items())
        # More bits never hurt on average; a noisy estimate saying otherwise is clipped.
        clipped, best = [], float("inf")
        for b, bits, c in opts:
            best = min(best, c)
            clipped.append((b, bits, best))
        options[n] = clipped
    weights = sum(sens.shapes[n][0] * sens.shapes[n][1] for n in layers)
    budget = target_bpw * weights
    idx = dict.fromkeys(layers, 0)
    used = sum(options[n][0][1] for n in layers)
    if used > budget + 1e-9:
        raise LowbitError(f"--target-bpw {target_bpw:g} is below the smallest plan these bit widths allow "
                          f"({used / weights:.3f} bits per weight, every layer at {options[layers[0]][0][0]} bits)")
    while True:
        best_gain, pick = 0.0, None
        for n in layers:
            i = idx[n]
            b0, s0, c0 = options[n][i]
            for j in range(i + 1, len(options[n])):
                b1, s1, c1 = options[n][j]
                extra = s1 - s0
                if used + extra > budget + 1e-9 or extra <= 0:
                    continue
                gain = (c0 - c1) / extra
                if gain > best_gain:
                    best_gain, pick = gain, (n, j, extra)
        if pick is None:
            break
        n, j, extra = pick
        idx[n] = j
        used += extra
    chosen = {n: with_bits(sens.base, options[n][idx[n]][0]).spec() for n in layers}
    predicted = sum(options[n][idx[n]][2] for n in layers)
    return Plan(sens.base.spec(), chosen, target_bpw, used / weights, predicted,
                {"sensitivity": sens.method, "tokens": sens.tokens, "seconds": sens.seconds})


def save_plan(plan: Plan, path: Path) -> Path:
    """Write ``plan`` as JSON, atomically."""
    write_text_atomic(Path(path), json.dumps(plan.as_dict(), indent=2) + "\n")
    return Path(path)


def load_plan(path: str | Path) -> Plan:
    """Read a plan file, validating every scheme it names."""
    p = Path(path).expanduser()
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LowbitError(f"mixed-precision plan {p} not found") from None
    except json.JSONDecodeError as e:
        raise LowbitError(f"mixed-precision plan {p} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT or not isinstance(d.get("layers"), dict):
        raise LowbitError(f"{p} is not a lowbit mixed-precision plan (expected \"format\": \"{PLAN_FORMAT}\" "
                          "and a \"layers\" object)")
    for name, spec in d["layers"].items():
        scheme = parse_scheme(str(spec))
        if not isinstance(scheme, IntScheme):
            raise LowbitError(f"{p}: layer '{name}' names scheme {spec}; mixed precision uses int grids")
    return Plan(str(d.get("base", "int:w4g64")), {k: str(v) for k, v in d["layers"].items()}, d.get("target_bpw"),
                d.get("bpw"), d.get("predicted_kld"), dict(d.get("info") or {}))
