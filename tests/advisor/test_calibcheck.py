"""lowbit calib-check: scores before quantizing, spread across seeds, paired differences, warnings."""

import json
from pathlib import Path

import pytest
import torch

from lowbit.advisor.calibcheck import IN_DISTRIBUTION, CalibOptions, run_calib_check
from lowbit.advisor.calibscore import ngram_overlap, token_jsd
from lowbit.cli import main

SMALL = {"model": "tiny-llama", "eval_tokens": 512, "window_tokens": 64, "calib_samples": 4, "device": "cpu"}


def test_token_jsd_and_ngram_overlap_on_known_inputs() -> None:
    a = torch.arange(0, 100).reshape(2, 50)
    assert token_jsd(a, a, 300) == pytest.approx(0.0)
    assert token_jsd(a, a + 100, 300) == pytest.approx(1.0)
    assert ngram_overlap(a, a, 16) == 1.0 and ngram_overlap(a, a + 100, 16) == 0.0
    half = torch.cat([a[:1], a[1:] + 100])
    assert ngram_overlap(half, a, 16) == pytest.approx(0.5)


@pytest.fixture
def code_file(tmp_path: Path) -> Path:
    """A few standard-library modules: Python code, unlike the English eval prose."""
    import bisect
    import string
    import textwrap

    path = tmp_path / "code.txt"
    path.write_text("\n\n".join(Path(m.__file__).read_text() for m in (bisect, string, textwrap)))
    return path


def test_calibration_sets_are_compared_on_the_same_tokens(code_file: Path) -> None:
    report = run_calib_check(CalibOptions(variant="mixed:w4g64+bpw=4.5+sens_windows=1",
                                          calibs=[str(code_file)], eval="builtin:python-docs", seeds=2,
                                          **{**SMALL, "calib_samples": 16}))  # type: ignore[arg-type]
    cc = report["calib_check"]
    specs = [s["spec"] for s in cc["sets"]]
    assert specs == [str(code_file), IN_DISTRIBUTION]
    code, own = cc["sets"]
    # Code is farther from English prose than the eval source's own disjoint part, before quantizing.
    assert code["score"]["token_jsd"] > own["score"]["token_jsd"]
    assert code["score"]["act_distance"] > own["score"]["act_distance"]
    runs = [r for r in report["results"] if r.get("calib_set")]
    assert len(runs) == 4 and {r["calib_seed"] for r in runs} == {0, 1}
    assert len({r["calib_sha256"] for r in runs}) == 4
    assert cc["baseline"]["variant"] == "rtn:w4g64"
    pair = cc["pairs"][0]
    assert {"diff", "ci", "mde", "distinguishable", "beyond_seed_noise", "matters", "sentence"} <= set(pair)
    assert code["seed_spread"] == pytest.approx(max(code["kld_by_seed"]) - min(code["kld_by_seed"]))
    assert len(cc["seed_pairs"]) == 2


def test_overlap_and_calibration_free_methods_are_warned_about(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from lowbit.advisor.calibcheck import build_sets
    from lowbit.models import load_model

    # A calibration file that copies the eval text with a little edit: not an exact document
    # match (that is dropped and warned about when the sets are built), but the same text.
    tok = load_model("tiny-llama").tokenizer
    opts = CalibOptions(variant="rtn:w4g64", calibs=[], eval="builtin:python-docs", seeds=1, **SMALL)  # type: ignore[arg-type]
    ev, _, _ = build_sets(tok, opts)
    copied = tmp_path / "copied.txt"
    copied.write_text("Note. " + tok.decode(ev.windows.flatten().tolist()), encoding="utf-8")
    out = tmp_path / "cc.json"
    code = main(["--quiet", "calib-check", "--model", "tiny-llama", "--variant", "rtn:w4g64", "--calib",
                 str(copied), "--eval", "builtin:python-docs", "--eval-tokens", "512", "--window-tokens", "64",
                 "--calib-samples", "4", "--seeds", "1", "--json", str(out)])
    assert code == 0
    cc = json.loads(out.read_text())["calib_check"]
    assert any("reads no calibration text" in w for w in cc["warnings"])
    assert any("16-token sequences" in w for w in cc["warnings"])
    assert cc["sets"][0]["score"]["overlaps_eval"]
    assert "warning:" in capsys.readouterr().out


def test_score_only_quantizes_nothing(code_file: Path) -> None:
    report = run_calib_check(CalibOptions(variant="rtn:w4g64", calibs=[str(code_file)],
                                          eval="builtin:python-docs", score_only=True, **SMALL))  # type: ignore[arg-type]
    assert report["results"] == [] and report["calib_check"]["sets"][0]["score"]["token_jsd"] > 0
