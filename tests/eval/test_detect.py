"""Detectability: paired differences, minimum detectable difference, tokens needed."""

import math

import pytest
import torch

from lowbit.eval.detect import compare_all, paired_difference, tokens_to_detect
from lowbit.eval.stats import Z80, clustered_mean, t975


def windows(mean: float, sd: float, n: int = 20, t: int = 63, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Per-window offsets make the window the sampling unit, as in real text.
    return mean + sd * torch.randn(n, 1, generator=g) + 0.1 * torch.randn(n, t, generator=g)


def test_a_clear_difference_is_distinguishable_with_the_clustered_mde() -> None:
    base = windows(0.1, 0.01)
    p = paired_difference(base + 0.05, base, "w4", "w8")
    assert p.distinguishable and p.tokens_needed is None
    assert p.diff == pytest.approx(0.05, abs=1e-6)
    se = clustered_mean((base + 0.05) - base).se
    assert p.mde == pytest.approx((t975(19) + Z80) * se)
    assert p.tokens == 20 * 64 and p.window_tokens == 64
    assert "differs by +0.05" in p.sentence()


def test_an_undetectable_difference_says_how_many_tokens_would_be_needed() -> None:
    a, b = windows(0.1, 0.02, seed=1), windows(0.1, 0.02, seed=2)
    p = paired_difference(a, b, "w4", "w8")
    assert not p.distinguishable
    assert p.tokens_needed == tokens_to_detect(p.diff, p.mde, 20, 64)
    # se ∝ 1/√windows: at the predicted size the observed difference is the MDE.
    assert p.tokens_needed >= 64 * 20 * (p.mde / abs(p.diff)) ** 2 - 64
    s = p.sentence()
    assert s.startswith("w4 vs w8: not distinguishable on this eval set of 1,280 tokens")
    assert "tokens would be needed" in s


def test_tokens_to_detect_scales_with_the_square_of_the_mde_ratio() -> None:
    assert tokens_to_detect(0.01, 0.02, 10, 512) == 40 * 512
    assert tokens_to_detect(0.0, 0.02, 10, 512) is None
    assert tokens_to_detect(math.nan, 0.02, 10, 512) is None


def test_identical_models_are_named_as_such() -> None:
    a = windows(0.1, 0.02)
    p = paired_difference(a, a.clone(), "seed 0", "seed 1")
    assert not p.distinguishable and "identical on all" in p.sentence()


def test_compare_all_pairs_every_model_or_neighbours() -> None:
    per = {f"v{i}": {"kld": windows(0.01 * i, 0.01, seed=i)} for i in range(8)}
    assert len(compare_all(per, [f"v{i}" for i in range(4)])) == 6
    assert [(p.a, p.b) for p in compare_all(per, list(per))] == [(f"v{i}", f"v{i + 1}") for i in range(7)]
    with pytest.raises(ValueError, match="same tokens"):
        paired_difference(windows(0, 1, n=3), windows(0, 1, n=4), "a", "b")
