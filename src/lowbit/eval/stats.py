"""Confidence intervals from paired, clustered per-token statistics.

Tokens of one window are not independent (they share context), so treating
16k tokens as 16k samples would give intervals far too narrow. Every interval
here treats the *window* as the sampling unit: the estimate is the mean over
tokens, its variance the cluster-robust (ratio-estimator) variance over
windows, and the critical value Student's t with ``windows - 1`` degrees of
freedom. Differences between two models are computed per token first
(paired), which removes the shared difficulty of the text from the variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Student's t 0.975 quantiles for 1..30 degrees of freedom; beyond 30 the
# normal value is within 1.5% and is used.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
Z975 = 1.959964
#: z for 80% power, used by the minimum detectable effect.
Z80 = 0.841621


def t975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        return math.inf
    return _T975[dof - 1] if dof <= len(_T975) else Z975


@dataclass(frozen=True)
class MeanCI:
    """A mean over tokens with its clustered standard error and 95% interval."""

    mean: float
    se: float
    lo: float
    hi: float
    clusters: int

    @property
    def mde(self) -> float:
        """Smallest true difference of this mean from zero detected with 80% power at α = 0.05."""
        return (t975(self.clusters - 1) + Z80) * self.se


def clustered_mean(values: torch.Tensor) -> MeanCI:
    """Mean of ``values`` ``[windows, tokens]`` with a window-clustered 95% CI."""
    v = values.double()
    n_w, n_t = v.shape
    mean = float(v.mean())
    if n_w < 2:
        return MeanCI(mean, math.inf, -math.inf, math.inf, n_w)
    # Equal-size clusters: the ratio estimator's variance reduces to the
    # variance of window means divided by the number of windows.
    window_means = v.mean(dim=1)
    se = float(window_means.std(unbiased=True)) / math.sqrt(n_w)
    half = t975(n_w - 1) * se
    return MeanCI(mean, se, mean - half, mean + half, n_w)


def percentile(values: torch.Tensor, q: float) -> float:
    """``q``-th percentile (0–100) with linear interpolation, as llama.cpp reports KLD."""
    return float(torch.quantile(values.double().reshape(-1), q / 100.0))
