"""Bit allocation under a bits-per-weight budget, and plan files."""

import json
from pathlib import Path

import pytest

from lowbit.advisor.allocate import allocate, load_plan, save_plan
from lowbit.advisor.sensitivity import Sensitivity
from lowbit.errors import LowbitError
from lowbit.schemes import parse_scheme

BASE = parse_scheme("w4g64")


def sens(weights: dict[str, float], shape: tuple[int, int] = (64, 256)) -> Sensitivity:
    # Quantization error energy falls 4× per added bit; a layer's weight scales its KLD.
    cost = {n: {b: w * 4.0 ** (-b) for b in (2, 3, 4, 5, 6, 8)} for n, w in weights.items()}
    return Sensitivity(cost, dict.fromkeys(weights, shape), BASE, "fisher", 100)


def test_the_budget_is_met_and_sensitive_layers_get_more_bits() -> None:
    s = sens({"a": 100.0, "b": 1.0, "c": 1.0, "d": 0.01})
    plan = allocate(s, 4.25)
    assert plan.bpw <= 4.25 + 1e-9 and plan.bpw > 4.0
    bits = {n: parse_scheme(v).weight_bits for n, v in plan.layers.items()}
    assert bits["a"] > bits["b"] >= bits["d"]
    uniform = sum(c[4] for c in s.cost.values())
    assert plan.predicted_kld < uniform
    assert plan.bits_histogram() and sum(plan.bits_histogram().values()) == 4


def test_equal_layers_at_a_uniform_budget_get_the_uniform_plan() -> None:
    plan = allocate(sens({"a": 1.0, "b": 1.0}), 5.25)
    assert set(plan.layers.values()) == {"int:w5g64"} and plan.bpw == pytest.approx(5.25)


def test_a_budget_below_every_layer_at_the_fewest_bits_is_refused() -> None:
    with pytest.raises(LowbitError, match="below the smallest plan"):
        allocate(sens({"a": 1.0}), 2.0)


def test_plans_round_trip_and_bad_files_are_named(tmp_path: Path) -> None:
    plan = allocate(sens({"a": 3.0, "b": 1.0}), 4.75)
    path = save_plan(plan, tmp_path / "plan.json")
    again = load_plan(path)
    assert again.layers == plan.layers and again.sha256 == plan.sha256 and again.bpw == plan.bpw
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(LowbitError, match="not valid JSON"):
        load_plan(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"layers": {}}))
    with pytest.raises(LowbitError, match="not a lowbit mixed-precision plan"):
        load_plan(tmp_path / "other.json")
    with pytest.raises(LowbitError, match="not found"):
        load_plan(tmp_path / "missing.json")
