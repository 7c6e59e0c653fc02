import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.models import load_model
from lowbit.runtime.speed import (
    SpeedResult,
    SpeedRuntime,
    TorchCausalLM,
    fastest,
    measure,
    measure_runtimes,
    speed_fields,
    speed_prompt,
)


class Counting:
    """A runnable that records what the measurement asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def reset(self) -> None:
        self.calls.append("reset")

    def prefill(self, ids: torch.Tensor) -> None:
        self.calls.append(f"prefill{ids.shape[1]}")

    def decode(self) -> None:
        self.calls.append("decode")


def test_measure_drives_prefill_then_decode_steps() -> None:
    r = Counting()
    res = measure(r, torch.zeros(1, 7, dtype=torch.long), decode_steps=3, repeats=2, name="fake")
    assert r.calls.count("prefill7") == 3 and r.calls.count("decode") == 9  # warm-up + 2 repeats
    assert res.prefill_tokens == 7 and res.decode_steps == 3 and res.prefill_tokens_per_s > 0
    with pytest.raises(LowbitError, match=r"\[1, T\]"):
        measure(r, torch.zeros(7, dtype=torch.long))


def test_slower_than_float_flag_and_fastest_choice() -> None:
    f = SpeedResult("fp32", 1000.0, 50.0, 512, 16, 3)
    fast = SpeedResult("int8", 2500.0, 60.0, 512, 16, 3)
    slow = SpeedResult("ref", 900.0, 20.0, 512, 16, 3)
    broken = SpeedResult("gone", error="RuntimeError: no kernel")
    assert fastest([slow, broken, fast]) is fast and fastest([broken]) is None
    row = speed_fields(fast, [fast, slow, broken], f)
    assert row["prefill_speedup"] == pytest.approx(2.5) and row["slower_than_float"] is False
    assert row["speed_runtime"] == "int8" and len(row["speed_candidates"]) == 3
    assert speed_fields(slow, [slow], f)["slower_than_float"] is True
    # within the noise margin of float: not flagged
    assert speed_fields(SpeedResult("x", 970.0, 49.0, 512, 16, 3), [], f)["slower_than_float"] is False


def test_a_runtime_that_fails_to_build_is_recorded_not_raised() -> None:
    def boom():  # type: ignore[no-untyped-def]
        raise LowbitError("kernel missing here")

    res = measure_runtimes([SpeedRuntime("broken", boom)], torch.zeros(1, 4, dtype=torch.long), 1, 1)
    assert res[0].error is not None and "kernel missing" in res[0].error and res[0].prefill_tokens_per_s is None


def test_torch_runnable_uses_the_kv_cache() -> None:
    loaded = load_model("tiny-llama")
    run = TorchCausalLM(loaded.model)
    prompt = speed_prompt(torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0)), 24)
    assert prompt.shape == (1, 24)
    run.prefill(prompt)
    assert run._cache is not None and run._cache.get_seq_length() == 24
    run.decode()
    run.decode()
    assert run._cache.get_seq_length() == 26
    res = measure(run, prompt, decode_steps=2, repeats=1)
    assert res.decode_tokens_per_s and res.decode_tokens_per_s > 0
