"""`lowbit compare --quick` on the bundled SmolLM2-135M, end to end (~1–2 min)."""

import json
from pathlib import Path

import pytest

from lowbit.cli import main


@pytest.mark.slow
def test_compare_quick_on_the_bundled_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "quick.json"
    assert main(["--quiet", "compare", "--quick", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["model"]["name"] == "smollm2-135m"
    assert report["model"]["params"] == 134_515_008
    assert report["eval"]["tokens"] == 4096 and "python-docs" in report["eval"]["source"]
    assert "disjoint" in report["calib"]["source"]
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"rtn:w8ch", "rtn:w4g64", "rtn:w3g64"}
    assert all(r["error"] is None for r in rows.values())
    # Fewer bits, more divergence from the float model: the ordering must hold
    # with the confidence intervals separated.
    assert rows["rtn:w8ch"]["kld_ci"][1] < rows["rtn:w4g64"]["kld_ci"][0]
    assert rows["rtn:w4g64"]["kld_ci"][1] < rows["rtn:w3g64"]["kld_ci"][0]
    assert rows["rtn:w8ch"]["kld_mean"] < 0.02 and rows["rtn:w8ch"]["top1_agreement"] > 0.9
    assert rows["rtn:w4g64"]["bits_per_weight"] == pytest.approx(4.25)
    assert 2.5 < report["reference"]["ppl"] < 40
    assert "rtn:w3g64" in out
