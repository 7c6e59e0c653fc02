"""The quality bar a variant must meet, and the pass test on a result row.

A variant passes only when the *pessimistic* end of its 95% interval meets the
bar: the upper bound for KLD and perplexity increase, the lower bound for
top-1 agreement. A point estimate under the bar with an interval over it is a
fail, because the eval set could not show that it passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lowbit.errors import LowbitError


@dataclass(frozen=True)
class Bar:
    """One quality bar.

    Attributes:
        metric: ``kld`` (mean KL divergence, nats/token), ``ppl`` (perplexity
            increase, percent of the float perplexity) or ``top1`` (agreement
            with the float model's most likely token, fraction 0–1).
        limit: the bar in those units.
    """

    metric: str
    limit: float

    def describe(self) -> str:
        """``KLD ≤ 0.05`` style phrase."""
        if self.metric == "kld":
            return f"KLD ≤ {self.limit:g}"
        if self.metric == "ppl":
            return f"perplexity increase ≤ {self.limit:g}%"
        return f"top-1 agreement ≥ {100 * self.limit:g}%"

    def flag(self) -> str:
        """The CLI flag that sets this bar."""
        return {"kld": f"--max-kld {self.limit:g}", "ppl": f"--max-ppl-increase {self.limit:g}",
                "top1": f"--min-top1 {self.limit:g}"}[self.metric]

    def bounds(self, row: dict[str, Any], ref_ppl: float | None) -> tuple[float, float, float] | None:
        """(estimate, pessimistic bound, optimistic bound) of the row in bar units, None when not measured."""
        if self.metric == "kld":
            if row.get("kld_mean") is None or not row.get("kld_ci"):
                return None
            return row["kld_mean"], row["kld_ci"][1], row["kld_ci"][0]
        if self.metric == "ppl":
            if row.get("delta_ppl") is None or not row.get("delta_ppl_ci") or not ref_ppl:
                return None
            pct = 100.0 / ref_ppl
            return row["delta_ppl"] * pct, row["delta_ppl_ci"][1] * pct, row["delta_ppl_ci"][0] * pct
        if row.get("top1_agreement") is None or not row.get("top1_ci"):
            return None
        return row["top1_agreement"], row["top1_ci"][0], row["top1_ci"][1]

    def passes(self, pessimistic: float) -> bool:
        """Whether the pessimistic bound meets the bar."""
        if not math.isfinite(pessimistic):
            return False
        return pessimistic >= self.limit if self.metric == "top1" else pessimistic <= self.limit

    def fails_surely(self, optimistic: float) -> bool:
        """Whether even the optimistic bound misses the bar."""
        return optimistic < self.limit if self.metric == "top1" else optimistic > self.limit

    def margin(self, pessimistic: float) -> float:
        """How far the pessimistic bound is past the bar (positive = missed by that much)."""
        return self.limit - pessimistic if self.metric == "top1" else pessimistic - self.limit

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"metric": self.metric, "limit": self.limit, "text": self.describe()}


def parse_percent(text: str, option: str) -> float:
    """``"5"`` or ``"5%"`` → 5.0; refuses negatives and non-numbers, naming ``option``."""
    raw = text.strip().rstrip("%")
    try:
        value = float(raw)
    except ValueError:
        raise LowbitError(f"{option} expects a number (percent), got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise LowbitError(f"{option} must be a non-negative percentage, got '{text}'")
    return value


def make_bar(max_kld: float | None = None, max_ppl_increase: str | float | None = None,
             min_top1: str | float | None = None) -> Bar | None:
    """The one bar given (None when none is), refusing two at once and out-of-range values."""
    given = [(k, v) for k, v in (("kld", max_kld), ("ppl", max_ppl_increase), ("top1", min_top1)) if v is not None]
    if len(given) > 1:
        raise LowbitError("give one quality bar: --max-kld, --max-ppl-increase or --min-top1, not several")
    if not given:
        return None
    metric, value = given[0]
    if metric == "kld":
        v = float(value)  # type: ignore[arg-type]
        if not math.isfinite(v) or v <= 0:
            raise LowbitError(f"--max-kld must be a positive number of nats per token, got {value}")
        return Bar("kld", v)
    if metric == "ppl":
        return Bar("ppl", parse_percent(str(value), "--max-ppl-increase"))
    text = str(value).strip()
    v = parse_percent(text, "--min-top1") / (100 if text.endswith("%") else 1)
    if not 0 < v <= 1:
        raise LowbitError(f"--min-top1 is a fraction in (0, 1] or a percentage like 90%, got '{value}'")
    return Bar("top1", v)
