"""lowbit auto: passes only on the upper bound, pushes bits down, confirms on held-out text, caches."""

import json
from pathlib import Path

import pytest

from lowbit.advisor.auto import AutoOptions, run_auto, split_holdout, uniform_neighbours
from lowbit.advisor.bar import Bar
from lowbit.cli import main
from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError

SMALL = {"model": "tiny-llama", "eval_tokens": 512, "window_tokens": 64, "calib_samples": 4, "device": "cpu"}
LADDER = ["rtn:w8ch", "rtn:w6g64", "rtn:w4g64", "rtn:w3g64"]


def auto(bar: Bar, **kw: object) -> dict:
    return run_auto(AutoOptions(bar=bar, candidates=LADDER, mixed=False, **{**SMALL, **kw}))  # type: ignore[arg-type]


def test_search_returns_the_smallest_pass_confirmed_on_held_out_text() -> None:
    report = auto(Bar("kld", 0.05))
    a = report["auto"]
    # tiny-llama: w8ch ≈ 0.001, w6g64 ≈ 0.01, w4g64 ≈ 0.14 KLD.
    assert a["chosen"]["variant"] == "rtn:w6g64"
    held = a["chosen"]["holdout"]
    assert held["verdict"] == "pass" and held["kld_ci"][1] <= 0.05
    assert report["holdout"]["sha256"] != report["eval"]["sha256"]
    steps = {(p["variant"], p["action"]): p for p in a["path"]}
    assert steps[("rtn:w4g64", "evaluated")]["verdict"] == "fail"
    assert "fewer bits would only be worse" in steps[("rtn:w3g64", "skipped")]["reason"]
    assert steps[("rtn:w6g64", "confirm")]["verdict"] == "pass"
    # Clear cases stop at an interim look; never a pass without the upper bound under the bar.
    w8 = next(r for r in report["results"] if r["variant"] == "rtn:w8ch")
    assert w8["stopped_early"] and w8["windows_evaluated"] < w8["windows_total"]
    for r in report["results"]:
        assert (r["verdict"] == "pass") == (r["kld_ci"][1] <= 0.05)
    assert any(c["b"] == "rtn:w4g64" and c["distinguishable"] for c in a["comparisons"])
    assert report["recommendation"]["goal"] == "cpu-edge"
    # A second run reads every measurement from the cache.
    again = auto(Bar("kld", 0.05))
    assert all(r["cached"] for r in again["results"]) and again["auto"]["chosen"] == a["chosen"]


def test_an_unreachable_bar_returns_no_pass_and_the_closest(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.json"
    code = main(["--quiet", "auto", "--model", "tiny-llama", "--max-kld", "0.00001", "--candidates",
                 ",".join(LADDER), "--no-mixed", "--eval-tokens", "512", "--window-tokens", "64",
                 "--calib-samples", "4", "--json", str(out)])
    assert code == 1
    a = json.loads(out.read_text())["auto"]
    assert a["chosen"] is None
    assert a["closest"]["variant"] == "rtn:w8ch" and a["closest"]["missed_by"] > 0
    assert "no candidate meets KLD ≤ 1e-05" in capsys.readouterr().out


def test_a_spent_budget_stops_the_search_without_a_pass() -> None:
    a = auto(Bar("kld", 0.05), budget_minutes=1e-9)["auto"]
    assert a["stopped_by_budget"] and a["chosen"] is None
    assert all(p["action"] == "skipped" for p in a["path"])


def test_mixed_precision_at_the_size_of_w4g64_beats_it(tmp_path: Path) -> None:
    report = run_auto(AutoOptions(target_bpw=4.25, **SMALL))  # type: ignore[arg-type]
    mixed, rtn = report["results"]
    assert rtn["variant"] == "rtn:w4g64" and mixed["variant"].startswith("mixed:")
    assert mixed["bits_per_weight"] <= 4.25 + 1e-9
    assert mixed["kld_mean"] < rtn["kld_mean"]
    assert report["mixed"]["comparisons"][0]["diff"] < 0
    assert report["mixed"]["plan"]["layers"]


def test_inputs_are_checked_before_any_work() -> None:
    with pytest.raises(LowbitError, match="needs a quality bar"):
        run_auto(AutoOptions(**SMALL))  # type: ignore[arg-type]
    with pytest.raises(LowbitError, match="--target-bpw must lie"):
        run_auto(AutoOptions(target_bpw=1.0, **SMALL))  # type: ignore[arg-type]
    assert uniform_neighbours(4.25) == ["rtn:w4g64"]
    assert uniform_neighbours(4.6) == ["rtn:w5g64", "rtn:w4g64"]


def test_holdout_split_is_disjoint() -> None:
    import torch

    ts = TokenSet("x", torch.arange(64 * 10).reshape(10, 64), 3)
    search, held = split_holdout(ts, 6)
    assert search.windows.shape[0] == 6 and held is not None and held.windows.shape[0] == 4
    assert not set(search.windows.flatten().tolist()) & set(held.windows.flatten().tolist())
    search, held = split_holdout(ts, 20)
    assert held is not None and held.windows.shape[0] == 2
