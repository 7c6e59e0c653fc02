"""Reports: the HTML page, its plots, the Pareto frontier, and a real browser rendering it."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lowbit.cli import main
from lowbit.errors import LowbitError
from lowbit.report.html import load_run, write_report
from lowbit.report.plots import pareto

pytest.importorskip("matplotlib", reason="plots need the 'report' extra (matplotlib)")


def row(name: str, size: float, kld: float, bpw: float) -> dict:
    return {"variant": name, "size_bytes": size, "kld_mean": kld, "kld_ci": [kld * 0.9, kld * 1.1],
            "bits_per_weight": bpw, "tokens_per_s": 100.0, "runtime": "ref", "layer_error": {"a": kld, "b": kld}}


def test_pareto_keeps_only_undominated_variants() -> None:
    rows = [row("a", 1, 0.5, 2), row("b", 2, 0.1, 4), row("c", 3, 0.2, 6), row("d", 4, 0.01, 8)]
    assert [r["variant"] for r in pareto(rows)] == ["a", "b", "d"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    code = main(["--quiet", "compare", "--model", "tiny-llama", "--variants", "rtn:w8ch,rtn:w4g64,rtn:w3g64",
                 "--eval-tokens", "512", "--window-tokens", "64", "--out", str(out), "--report"])
    assert code == 0
    return out


def test_compare_report_writes_a_self_contained_page_and_plots(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    for name in ("size_vs_kld", "speed_vs_kld", "layer_error"):
        png = (run_dir / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        assert f'id="plot-{name}"' in html
    assert '<table id="results">' in html and html.count("<tr") == 5  # header, float, 3 variants
    assert "data:image/png;base64," in html and "http://" not in html and "<script" not in html
    assert "for KLD ≤ 0.05:" in html and "Pareto frontier" in html
    report = load_run(run_dir)
    assert report["detectability"]["pairs"] and report["results"][0]["layer_error"]


def test_report_refuses_a_folder_without_a_run(tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="no report.json"):
        write_report(tmp_path)
    (tmp_path / "report.json").write_text("[1]")
    with pytest.raises(LowbitError, match="not a lowbit report"):
        write_report(tmp_path)
    assert main(["--quiet", "compare", "--model", "tiny-llama", "--report"]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    url = (run_dir / "report.html").resolve().as_uri()
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert '<table id="results">' in dom and "rtn:w4g64" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*base, "--window-size=1280,1600", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 1600)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # text and plots, not a blank page
    # The plots are drawn: a good share of the page is neither white nor nearly so.
    assert sum(1 for p in img.getdata() if p < 200) > 0.01 * 1280 * 1600
    assert json.loads((run_dir / "report.json").read_text())["results"]
