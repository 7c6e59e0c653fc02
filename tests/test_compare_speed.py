import json
from pathlib import Path

from lowbit.cli import main
from lowbit.compare import CompareOptions, run_compare
from lowbit.report.schema import ROW_KEYS


def test_compare_rows_carry_speed_kernel_and_target(tmp_path: Path) -> None:
    opts = CompareOptions(model="tiny-llama", variants=["rtn:w8a8", "smoothquant:w8a8static"], eval_tokens=256,
                          calib_samples=2, window_tokens=128, target="apple-metal", use_cache=False,
                          speed_decode_steps=2, speed_repeats=1)
    report = run_compare(opts)
    ref = report["reference"]
    assert ref["prefill_tokens_per_s"] > 0 and ref["decode_tokens_per_s"] > 0 and ref["speed_runtime"]
    assert report["target"] == {"name": "apple-metal", "given": True, "summary": "Apple silicon GPU (M1+)"}
    for row in report["results"]:
        assert row["error"] is None, row["error"]
        assert set(ROW_KEYS) <= set(row)
        assert row["act_bits"] == 8
        assert row["runtime"].startswith("torch._int_mm")  # quality came from the int8 kernel
        names = [c["runtime"] for c in row["speed_candidates"]]
        assert len(names) == 2 and "reference" in names[1]
        assert row["speed_runtime"] in names and row["prefill_tokens_per_s"] > 0
        assert isinstance(row["slower_than_float"], bool)
        assert row["target_support"] == "unsupported" and row["no_accelerated_path"] is True


def test_cli_compare_no_speed_and_bad_target(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["--quiet", "compare", "--model", "tiny-llama", "--variants", "rtn:w8a8", "--eval-tokens", "128",
                 "--window-tokens", "64", "--no-speed", "--no-cache", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["prefill_tokens_per_s"] is None and row["target"] is not None
    assert main(["compare", "--model", "tiny-llama", "--target", "gpu-9000"]) == 2


def test_variants_of_one_grid_and_runtime_share_one_speed_measurement() -> None:
    opts = CompareOptions(model="tiny-llama", variants=["rtn:w4g32", "gptq:w4g32", "rtn:w3g32"], eval_tokens=256,
                          calib_samples=2, window_tokens=128, use_cache=False, speed_decode_steps=2, speed_repeats=1)
    rtn, gptq, w3 = run_compare(opts)["results"]
    assert rtn["speed_shared_with"] is None and w3["speed_shared_with"] is None
    assert gptq["speed_shared_with"] == "rtn:w4g32"
    assert gptq["speed_candidates"] == rtn["speed_candidates"]
    assert gptq["prefill_tokens_per_s"] == rtn["prefill_tokens_per_s"] > 0
    assert w3["prefill_tokens_per_s"] != rtn["prefill_tokens_per_s"]  # measured on its own
