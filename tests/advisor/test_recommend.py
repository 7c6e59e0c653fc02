"""The decision rule: first match wins, one reason per step, five axes, availability, conflicts."""

import json
from pathlib import Path

import pytest

from lowbit.advisor.bar import Bar
from lowbit.advisor.modelinfo import model_facts
from lowbit.advisor.recommend import AXES, walk
from lowbit.advisor.rules import GOALS, QUESTIONS
from lowbit.cli import main
from lowbit.errors import LowbitError
from lowbit.methods import METHODS

EXPECTED = {"experiment": ["bnb:int8"], "gpu-serving": ["gptq:w4g64", "awq:w4g64"],
            "cpu-edge": ["gguf:Q4_K_M", "gguf:Q5_K_M"], "accuracy": ["qat:w8ch", "qat:w4g64"],
            "latency": ["smoothquant:w8a8", "rtn:w8a8"]}


@pytest.mark.parametrize("goal", GOALS)
def test_each_goal_stops_at_its_question_with_a_reason_per_step(goal: str) -> None:
    target = "cuda-sm80" if goal == "gpu-serving" else "cpu-x86-avx2"
    rec = walk(goal, target, Bar("kld", 0.05))
    n = [q.goal for q in QUESTIONS].index(goal) + 1
    assert len(rec.steps) == n
    assert [s.answer for s in rec.steps] == [False] * (n - 1) + [True]
    assert all(s.reason and "{" not in s.reason for s in rec.steps)
    assert [v.variant for v in rec.variants] == EXPECTED[goal]
    for v in rec.variants:
        assert set(AXES) <= set(v.axes) and all(v.axes[a] for a in AXES)
        method = v.variant.split(":")[0]
        # Named as the seed says even when this build lacks the method, and said plainly.
        if method not in METHODS:
            assert not v.available and v.unavailable_reason.startswith("not available in this build")
    assert rec.verify[0].startswith(f"lowbit compare --model MODEL --variants {','.join(EXPECTED[goal])}")
    assert f"--goal {goal} --max-kld 0.05" in rec.verify[1]


def test_an_installed_variant_gets_exact_axes_from_its_scheme() -> None:
    facts = model_facts("tiny-llama")
    from lowbit.advisor.recommend import advise, resolve_target

    a = advise("rtn:w4g64", resolve_target("cuda-sm80"), facts)
    assert a.available and a.bits_per_weight == pytest.approx(4.25)
    assert a.axes["granularity"] == "groups of 64 inputs"
    assert "activations stay 16-bit" in a.axes["quantized"]
    assert a.axes["calibration"].startswith("none; quantizing takes")
    assert a.hw_status == "accelerated" and "cuda-sm80" in a.axes["hardware"]


def test_tight_bars_move_the_cpu_answer_up_the_k_quant_ladder() -> None:
    assert [v.variant for v in walk("cpu-edge", "cpu-x86-avx2", Bar("kld", 0.006)).variants] == \
        ["gguf:Q6_K", "gguf:Q8_0"]
    assert [v.variant for v in walk("cpu-edge", "cpu-x86-avx2", Bar("ppl", 1.0)).variants] == \
        ["gguf:Q5_K_M", "gguf:Q6_K"]


def test_latency_on_a_target_without_int8_kernels_proposes_the_nearest_alternative() -> None:
    rec = walk("latency", "cuda-sm70")
    assert rec.conflicts and "has no int8 weight+activation kernel" in rec.conflicts[0]
    assert [v.variant for v in rec.variants] == ["rtn:w8ch"]
    assert rec.variants[0].hw_status == "accelerated"


def test_gpu_serving_on_a_cpu_target_is_a_conflict_with_the_cpu_answer() -> None:
    rec = walk("gpu-serving", "cpu-x86-avx2")
    assert "is not one" in rec.conflicts[0]
    assert [v.variant for v in rec.variants] == ["gguf:Q4_K_M", "gguf:Q5_K_M"]


def test_bad_goal_and_target_are_refused() -> None:
    with pytest.raises(LowbitError, match="unknown --goal"):
        walk("fast")
    with pytest.raises(LowbitError, match="--target"):
        walk("latency", "tpu-v5")


def test_cli_writes_json_and_needs_a_goal_without_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    assert main(["--quiet", "recommend", "--target", "cpu-x86-avx2"]) == 2
    assert "--goal is required" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main(["--quiet", "recommend", "--goal", "cpu-edge", "--max-kld", "0.05", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3. Will it run on a CPU" in text and "gguf:Q4_K_M" in text and "lowbit auto" in text
    doc = json.loads(out.read_text())
    assert {"lowbit_version", "machine", "results", "recommendation"} <= set(doc)
    assert doc["recommendation"]["variants"][0]["variant"] == "gguf:Q4_K_M"


def test_interactive_walk_asks_until_the_first_yes(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["n", "no", "y", "cpu-arm-neon", "0.02"])
    asked: list[str] = []

    def fake_input(prompt: str = "") -> str:
        asked.append(prompt)
        return next(answers)

    monkeypatch.setattr("lowbit.advisor.cli._interactive", lambda: True)
    monkeypatch.setattr("builtins.input", fake_input)
    assert main(["--quiet", "recommend"]) == 0
    assert asked[0].startswith("1/5 Are you just experimenting") and asked[2].startswith("3/5")
    out = capsys.readouterr().out
    assert "target cpu-arm-neon" in out and "KLD ≤ 0.02" in out
