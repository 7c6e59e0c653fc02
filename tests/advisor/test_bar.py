"""Quality bars: parsing, and the pass test on the pessimistic end of the interval."""

import pytest

from lowbit.advisor.bar import Bar, make_bar
from lowbit.errors import LowbitError


def test_one_bar_is_parsed_in_its_units() -> None:
    assert make_bar(0.05) == Bar("kld", 0.05)
    assert make_bar(max_ppl_increase="3%") == Bar("ppl", 3.0)
    assert make_bar(max_ppl_increase="2.5") == Bar("ppl", 2.5)
    assert make_bar(min_top1="90%") == Bar("top1", 0.9)
    assert make_bar(min_top1="0.95") == Bar("top1", 0.95)
    assert make_bar() is None


@pytest.mark.parametrize("kwargs, match", [
    ({"max_kld": 0.05, "min_top1": "0.9"}, "give one quality bar"),
    ({"max_kld": -1.0}, "--max-kld must be a positive"),
    ({"max_ppl_increase": "lots"}, "--max-ppl-increase expects a number"),
    ({"min_top1": "1.5"}, "--min-top1 is a fraction"),
    ({"min_top1": "abc"}, "--min-top1 expects a number"),
])
def test_bad_bars_name_the_flag(kwargs: dict, match: str) -> None:
    with pytest.raises(LowbitError, match=match):
        make_bar(**kwargs)


def test_a_variant_passes_only_on_its_pessimistic_bound() -> None:
    bar = Bar("kld", 0.05)
    row = {"kld_mean": 0.045, "kld_ci": [0.040, 0.052]}
    est, pess, opt = bar.bounds(row, None)
    assert (est, pess, opt) == (0.045, 0.052, 0.040)
    assert not bar.passes(pess) and not bar.fails_surely(opt)
    assert bar.margin(pess) == pytest.approx(0.002)
    top1 = Bar("top1", 0.9)
    est, pess, opt = top1.bounds({"top1_agreement": 0.93, "top1_ci": [0.91, 0.95]}, None)
    assert top1.passes(pess) and pess == 0.91
    ppl = Bar("ppl", 5.0)
    # Δppl bounds become percent of the float perplexity (20): +0.8 → 4%, +1.2 → 6%.
    est, pess, _ = ppl.bounds({"delta_ppl": 1.0, "delta_ppl_ci": [0.8, 1.2]}, 20.0)
    assert est == pytest.approx(5.0) and pess == pytest.approx(6.0) and not ppl.passes(pess)
    assert bar.bounds({"kld_mean": None}, None) is None
