"""End-to-end CLI behaviour: outputs, exit codes, nothing half-written."""

import json
from pathlib import Path

import pytest

from lowbit.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--quiet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_end_to_end_on_a_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "r.json"
    code, out, _ = run(["compare", "--model", "tiny-llama", "--variants", "rtn:w8ch,rtn:w2g32",
                        "--eval-tokens", "1024", "--window-tokens", "128", "--json", str(report_path),
                        "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert "rtn:w8ch" in out and "float (reference)" in out
    report = json.loads(report_path.read_text())
    assert report == json.loads((tmp_path / "o" / "report.json").read_text()) | {"created": report["created"]}
    table_rows = [line for line in (tmp_path / "o" / "table.txt").read_text().splitlines() if line.startswith("│ rtn:")]
    assert len(table_rows) == 2
    assert set(report) >= {"lowbit_version", "created", "machine", "model", "eval", "calib", "reference", "results"}
    assert report["eval"]["tokens"] == 1024 and report["eval"]["windows"] == 8
    w8, w2 = report["results"]
    # Per-channel fp16 scales: one per output row over all 14 linears (Σ out = 2048 per layer).
    assert w8["error"] is None and w8["bits_per_weight"] == pytest.approx(8 + 16 * 2048 / 589824)
    assert 0 < w8["kld_mean"] < w2["kld_mean"]
    assert w8["top1_agreement"] > w2["top1_agreement"]
    assert w8["size_bytes"] < report["model"]["float_bytes"]
    for key in ("ppl_ci", "delta_ppl_ci", "kld_ci", "top1_ci"):
        lo, hi = w2[key]
        assert lo <= hi


def test_a_failing_variant_is_recorded_and_the_run_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from lowbit.models import load_model
    from lowbit.models.loader import save_float_folder

    # One weight of 1e6: a 4-bit per-channel scale (1e6 / 7.5) overflows fp16,
    # an 8-bit one (1e6 / 127.5) does not.
    loaded = load_model("tiny-llama")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.down_proj.weight[0, 0] = 1e6
    save_float_folder(loaded.model, loaded.tokenizer, tmp_path / "m")
    code, out, _ = run(["compare", "--model", str(tmp_path / "m"), "--variants", "rtn:w4ch,rtn:w8ch",
                        "--eval-tokens", "256", "--window-tokens", "128", "--json", str(tmp_path / "r.json")],
                       capsys)
    assert code == 0
    failed, ok = json.loads((tmp_path / "r.json").read_text())["results"]
    assert "too large for fp16 scales" in failed["error"] and failed["kld_mean"] is None
    assert ok["error"] is None and ok["kld_mean"] is not None
    assert "error: weights too large" in out


def test_quantize_then_eval_against_the_recorded_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "q"
    code, out, _ = run(["quantize", "--model", "tiny-llama", "--variant", "rtn:w4g64", "--out", str(out_dir)], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["bits_per_weight"] == pytest.approx(4.25) and summary["quantized_linears"] == 14
    code, out, _ = run(["eval", "--model", str(out_dir), "--eval-tokens", "256", "--window-tokens", "128",
                        "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0
    row = json.loads((tmp_path / "e.json").read_text())["results"][0]
    assert row["variant"] == "rtn:w4g64" and row["method"] == "rtn"
    assert row["kld_mean"] > 0 and row["bits_per_weight"] == pytest.approx(4.25)


def test_eval_of_a_float_model_has_no_kld(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(["eval", "--model", "tiny-llama", "--eval-tokens", "256", "--window-tokens", "128",
                      "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0
    row = json.loads((tmp_path / "e.json").read_text())["results"][0]
    assert row["ppl"] > 1 and row["kld_mean"] is None


def test_inspect_lists_linears_and_divisible_groups(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["inspect", "tiny-llama", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["family"] == "llama" and d["params"] > 1_000_000
    down = next(lin for lin in d["linears"] if lin["name"].endswith("layers.0.mlp.down_proj"))
    assert down["shape"] == [256, 512] and down["groups_dividing_input"] == [32, 64, 128, 256]
    head = next(lin for lin in d["linears"] if lin["name"] == "lm_head")
    assert head["skipped_by_default"]
    code, out, _ = run(["inspect", "tiny-llama"], capsys)
    assert code == 0 and "mlp.down_proj" in out and "float size" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["compare", "--model", "/no/such/dir", "--variants", "rtn:w4g64"], "not found"),
    (["compare", "--model", "tiny-llama", "--variants", "rtn:w9g64"], "bits must be 2–8"),
    (["compare", "--model", "tiny-llama", "--variants", "rtn:w4g0"], "group size"),
    (["compare", "--model", "tiny-llama", "--variants", "foo:w4g64"], "unknown method 'foo'"),
    (["compare", "--model", "tiny-llama", "--variants", "rtn-w4g64"], "no ':'"),
    (["compare", "--model", "tiny-llama", "--eval", "/no/file.txt"], "not found"),
    (["quantize", "--model", "tiny-llama", "--variant", "rtn:w4g64", "--format", "nope", "--out", "x"],
     "unknown format 'nope'"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_too_short_eval_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "short.txt").write_text("too short")
    code, _, err = run(["compare", "--model", "tiny-llama", "--eval", str(tmp_path / "short.txt"),
                        "--json", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "fewer than one window" in err
    assert not (tmp_path / "r.json").exists()


def test_nan_weights_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from lowbit.models import load_model
    from lowbit.models.loader import save_float_folder

    loaded = load_model("tiny-llama")
    with torch.no_grad():
        loaded.model.model.layers[1].self_attn.q_proj.weight[0, 0] = float("nan")
    save_float_folder(loaded.model, loaded.tokenizer, tmp_path / "m")
    code, _, err = run(["quantize", "--model", str(tmp_path / "m"), "--variant", "rtn:w4g64",
                        "--out", str(tmp_path / "q")], capsys)
    assert code == 2 and "q_proj.weight" in err and "NaN" in err
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q*"))


def test_quantize_refuses_to_overwrite_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "q"
    assert run(["quantize", "--model", "tiny-llama", "--variant", "rtn:w8ch", "--out", str(out_dir)], capsys)[0] == 0
    code, _, err = run(["quantize", "--model", str(out_dir), "--variant", "rtn:w4g64", "--out", str(out_dir),
                        "--overwrite"], capsys)
    assert code == 2 and "overwrite the input" in err
    code, _, err = run(["quantize", "--model", "tiny-llama", "--variant", "rtn:w4g64", "--out", str(out_dir)], capsys)
    assert code == 2 and "already exists" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["compare", "--eval-tokens", "-5"])
    assert e.value.code == 2


def test_encoder_compare_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["compare", "--model", "tiny-bert", "--variants", "rtn:w8ch"], capsys)
    assert code == 2 and "causal language model" in err
