"""`lowbit qat` end to end on tiny-llama: data split, curve, checkpoints, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowbit.cli import main
from lowbit.models import load_model

BASE = ["--quiet", "qat", "--model", "tiny-llama", "--window-tokens", "64", "--eval-tokens", "256"]


def test_qat_command_trains_evaluates_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, js = tmp_path / "out", tmp_path / "qat.json"
    rc = main([*BASE, "--variant", "qat:w3g64+steps=4+lr=1e-3", "--out", str(out), "--json", str(js),
               "--eval-every", "2", "--curve-tokens", "128", "--checkpoint-every", "2"])
    assert rc == 0
    summary = json.loads(js.read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["out"] == str(out) and "curve" not in printed
    assert [c["step"] for c in summary["curve"]] == [0, 2, 4]
    assert summary["curve"][1]["tokens"] == 128 and summary["after"]["tokens"] == 256
    assert summary["before"]["kld_mean"] > 0 and summary["recovery"]["kld_start"] == summary["before"]["kld_mean"]
    assert summary["steps"] == 4 and summary["tokens_seen"] == 4 * 64
    assert "eval part" in summary["eval"]["source"] and "disjoint from eval" in summary["train"]["source"]
    assert summary["memory_estimate_bytes"]["total"] > summary["memory_estimate_bytes"]["adam"] > 0
    loaded = load_model(str(out))
    assert loaded.variant == "qat:w3g64+steps=4+lr=1e-3" and loaded.base == "tiny-llama"
    ckpt = json.loads((tmp_path / "out.qat-checkpoint" / "state.json").read_text())
    assert ckpt["log"]["step"] == 4 and ckpt["variant"] == "qat:w3g64+steps=4+lr=1e-3"


def test_resume_continues_and_a_different_variant_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = [*BASE, "--variant", "qat:w3g64+steps=2", "--out", str(tmp_path / "a"),
             "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(first) == 0
    assert main([*BASE, "--variant", "qat:w3g64+steps=2", "--out", str(tmp_path / "b"),
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*BASE, "--variant", "qat:w4g64+steps=2", "--out", str(tmp_path / "c"),
                 "--checkpoint-dir", str(tmp_path / "ck"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "scheme: checkpoint 'int:w3g64', now 'int:w4g64'" in err
    js = tmp_path / "d.json"
    assert main([*BASE, "--variant", "qat:w3g64+steps=3", "--out", str(tmp_path / "d"),
                 "--checkpoint-dir", str(tmp_path / "ck"), "--resume", "--json", str(js)]) == 0
    summary = json.loads(js.read_text())
    assert summary["steps"] == 3 and len(summary["losses"]) == 3
    assert summary["recovery"] is not None  # the start's per-token KLD came back from the checkpoint


def test_training_text_shorter_than_one_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.txt"
    short.write_text("just a few words", encoding="utf-8")
    rc = main([*BASE, "--variant", "qat:w3g64+steps=1", "--train", str(short), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fewer tokens than one window of 64" in err and "short.txt" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("variant, message", [("rtn:w3g64", "trains qat:"), ("qat:w3g64+lr=-1", "lr must be positive"),
                                              ("qat:w3g64+steps=0", "steps must be")])
def test_bad_variants_fail_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str,
                                          message: str) -> None:
    assert main([*BASE, "--variant", variant, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
