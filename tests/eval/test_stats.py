import math

import pytest
import torch

from lowbit.eval.stats import clustered_mean, percentile, t975


def test_t_quantiles() -> None:
    assert t975(1) == pytest.approx(12.706)
    assert t975(30) == pytest.approx(2.042)
    assert t975(1000) == pytest.approx(1.96, abs=1e-3)
    assert t975(0) == math.inf


def test_clustered_ci_covers_the_true_mean_about_95_percent() -> None:
    # Windows share a random offset (correlated tokens), as real text does.
    g = torch.Generator().manual_seed(0)
    covered = 0
    trials = 400
    for _ in range(trials):
        offsets = torch.randn(20, 1, generator=g)
        values = offsets + 0.5 * torch.randn(20, 50, generator=g)
        ci = clustered_mean(values)
        covered += ci.lo <= 0.0 <= ci.hi
    assert 0.91 <= covered / trials <= 0.99


def test_per_token_intervals_would_be_too_narrow() -> None:
    g = torch.Generator().manual_seed(1)
    values = torch.randn(10, 1, generator=g) + 0.1 * torch.randn(10, 100, generator=g)
    clustered = clustered_mean(values)
    naive_se = float(values.std()) / math.sqrt(values.numel())
    assert clustered.se > 5 * naive_se


def test_single_window_has_no_finite_interval() -> None:
    ci = clustered_mean(torch.ones(1, 10))
    assert ci.mean == 1 and math.isinf(ci.hi)


def test_mde_scales_with_standard_error() -> None:
    ci = clustered_mean(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    assert ci.mde == pytest.approx((t975(3) + 0.841621) * ci.se)


def test_percentile_interpolates_linearly() -> None:
    assert percentile(torch.arange(11.0), 90) == pytest.approx(9.0)
    assert percentile(torch.tensor([0.0, 1.0]), 50) == pytest.approx(0.5)
