"""Detectability: can this evaluation set tell two models apart at all?

Every comparison lowbit prints (compare, auto, calib-check) goes through
:func:`paired_difference`: per-token differences of the same tokens under two
models, a window-clustered 95% interval of their mean, and the *minimum
detectable difference* — the smallest true difference the set detects with 80%
power at α = 0.05 (two-sided), ``(t₀.₉₇₅ + z₀.₈) · se``. When the interval
contains 0 the two are called *not distinguishable*, and the number of tokens
that would detect the observed difference is estimated from ``se ∝ 1/√windows``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import torch

from lowbit.eval.stats import clustered_mean

#: Per-token metrics a comparison may use, and how to read their difference.
METRIC_UNITS = {"kld": "KLD (nats/token)", "nll": "NLL (nats/token, = Δ ln ppl)"}


@dataclass(frozen=True)
class PairedDifference:
    """``mean(a − b)`` over the same tokens, with what the set can detect.

    Attributes:
        a, b: names of the two models (``b`` may be ``"float"``).
        metric: ``"kld"`` or ``"nll"``.
        tokens: evaluation tokens in the comparison (windows × window_tokens, as the report counts them).
        window_tokens: tokens per window (the window is the sampling unit).
        diff: mean per-token difference ``a − b`` (metric units).
        ci: its 95% interval (window-clustered, Student's t).
        mde: minimum detectable difference (80% power, α = 0.05), metric units.
        distinguishable: the interval excludes 0.
        tokens_needed: evaluation tokens that would detect ``|diff|`` (None when
            already distinguishable or when the difference is exactly 0).
    """

    a: str
    b: str
    metric: str
    tokens: int
    window_tokens: int
    diff: float
    ci: tuple[float, float]
    mde: float
    distinguishable: bool
    tokens_needed: int | None

    def sentence(self) -> str:
        """One line a person reads: the difference, or why it is not evidence."""
        what = {"kld": "KLD", "nll": "ln ppl"}.get(self.metric, self.metric)
        if self.diff == 0 and self.mde == 0:
            return f"{self.a} vs {self.b}: identical on all {self.tokens:,} tokens (the same model)"
        if self.distinguishable:
            return (f"{self.a} vs {self.b}: {what} differs by {self.diff:+.4g} "
                    f"[{self.ci[0]:+.4g}, {self.ci[1]:+.4g}]; this eval set of {self.tokens:,} tokens "
                    f"detects differences of {self.mde:.3g} or more")
        need = (f"~{self.tokens_needed:,} tokens would be needed" if self.tokens_needed
                else "no difference was measured at all")
        return (f"{self.a} vs {self.b}: not distinguishable on this eval set of {self.tokens:,} tokens "
                f"({what} {self.diff:+.3g}, minimum detectable {self.mde:.3g}); {need}")

    def as_dict(self) -> dict[str, Any]:
        """JSON form (with the sentence)."""
        d = asdict(self)
        d["ci"] = list(self.ci)
        d["sentence"] = self.sentence()
        return d


def tokens_to_detect(diff: float, mde: float, windows: int, window_tokens: int) -> int | None:
    """Evaluation tokens at which ``|diff|`` becomes the minimum detectable difference.

    The standard error shrinks as ``1/√windows``, so ``windows · (mde/|diff|)²``
    windows are needed; at least two windows, whole windows only.
    """
    if diff == 0 or not math.isfinite(diff) or not math.isfinite(mde):
        return None
    need_windows = max(2, math.ceil(windows * (mde / abs(diff)) ** 2))
    return need_windows * window_tokens


def paired_difference(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, metric: str = "kld",
                      ) -> PairedDifference:
    """Compare per-token values ``a`` and ``b`` ``[windows, tokens]`` of the same tokens.

    ``b`` may be a zero tensor (comparison against the float model for KLD).
    """
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same tokens: {tuple(a.shape)} vs {tuple(b.shape)}")
    m = clustered_mean(a.double() - b.double())
    distinguishable = m.lo > 0 or m.hi < 0
    windows, per_window = a.shape
    needed = None if distinguishable else tokens_to_detect(m.mean, m.mde, windows, per_window + 1)
    return PairedDifference(name_a, name_b, metric, windows * (per_window + 1), per_window + 1, m.mean,
                            (m.lo, m.hi), m.mde, distinguishable, needed)


def detectable_from_zero(values: torch.Tensor) -> float:
    """Minimum detectable mean of ``values`` (e.g. a KLD against the float model)."""
    return clustered_mean(values).mde


def compare_all(per_token: dict[str, dict[str, torch.Tensor]], order: list[str], metric: str = "kld",
                max_all_pairs: int = 6) -> list[PairedDifference]:
    """Pairwise comparisons of models in ``order`` on ``metric``.

    Every pair when there are at most ``max_all_pairs`` models, otherwise each
    model against the next in ``order`` (callers sort by size), which is the
    comparison a user choosing between neighbours needs.

    Args:
        per_token: model name → {metric → tensor ``[windows, tokens]``}.
        order: model names, e.g. largest bits per weight first.
    """
    names = [n for n in order if n in per_token and metric in per_token[n]]
    pairs = list(combinations(names, 2)) if len(names) <= max_all_pairs else list(zip(names, names[1:]))
    return [paired_difference(per_token[x][metric], per_token[y][metric], x, y, metric) for x, y in pairs]
