"""`lowbit report RUN_DIR`: one self-contained HTML page (inline CSS, plots as data URIs) and the PNGs.

Input is the ``report.json`` that ``compare --out``, ``auto --out`` (or any
``--json``) writes; outputs are ``RUN_DIR/report.html`` and ``RUN_DIR/plots/*.png``.
The page needs nothing but a browser: no script, no network.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from lowbit.errors import LowbitError
from lowbit.report.advice import advice_sections
from lowbit.report.plots import write_plots
from lowbit.report.table import cost_cell
from lowbit.utils.atomic import write_text_atomic

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:12.5px}table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f7;position:sticky;top:0}
tr.chosen td{background:#e8f5e9;font-weight:600}tr.error td{color:#b00020}
.advice{background:#f7f9fc;border-left:4px solid #1f77b4;padding:8px 14px;margin:8px 0}
.advice h3{font-size:15px;margin:4px 0}.advice li{margin:2px 0}.warn{color:#8a5a00}
img{max-width:100%;border:1px solid #eee;margin:6px 0}code{background:#f2f2f2;padding:1px 4px;border-radius:3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _ci(r: dict[str, Any], key: str, ci: str, fmt: str) -> str:
    if r.get(key) is None:
        return "–"
    c = r.get(ci)
    return f"{format(r[key], fmt)} [{format(c[0], fmt)}, {format(c[1], fmt)}]" if c else format(r[key], fmt)


def results_table(report: dict[str, Any], chosen: str | None) -> str:
    """The results as an HTML table with id ``results``."""
    cols = ("variant", "bpw", "size MB", "ppl [95% CI]", "Δppl [95% CI]", "KLD mean [95% CI]", "KLD MDE",
            "KLD p99", "top-1 %", "tok/s", "calib+quant s (peak MB)", "verdict", "note")
    out = ['<table id="results"><thead><tr>' + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead><tbody>"]
    ref, model = report.get("reference") or {}, report.get("model") or {}
    if ref:
        out.append(f"<tr><td>float (reference)</td><td>32</td><td>{_f((model.get('float_bytes') or 0) / 1e6, '.1f')}"
                   f"</td><td>{_f(ref.get('ppl'), '.3f')}</td><td></td><td></td><td></td><td></td><td></td>"
                   f"<td>{_f(ref.get('tokens_per_s'), '.0f')}</td><td></td><td></td><td></td></tr>")
    for r in report.get("results") or []:
        label = r["variant"] + (f" · calib {r['calib_set']} seed {r.get('calib_seed')}" if r.get("calib_set") else "")
        if r.get("error"):
            out.append(f'<tr class="error"><td>{_e(label)}</td>' + "<td></td>" * 11
                       + f"<td>error: {_e(r['error'])}</td></tr>")
            continue
        top1 = r.get("top1_agreement")
        cls = ' class="chosen"' if chosen and r["variant"] == chosen else ""
        out.append(
            f"<tr{cls}><td>{_e(label)}</td><td>{_f(r.get('bits_per_weight'), '.3f')}</td>"
            f"<td>{_f((r.get('size_bytes') or 0) / 1e6, '.1f')}</td><td>{_ci(r, 'ppl', 'ppl_ci', '.3f')}</td>"
            f"<td>{_ci(r, 'delta_ppl', 'delta_ppl_ci', '+.3f')}</td><td>{_ci(r, 'kld_mean', 'kld_ci', '.4f')}</td>"
            f"<td>{_f(r.get('kld_mde'), '.2g')}</td><td>{_f(r.get('kld_p99'), '.4f')}</td>"
            f"<td>{'–' if top1 is None else f'{100 * top1:.1f}'}</td><td>{_f(r.get('tokens_per_s'), '.0f')}</td>"
            f"<td>{_e(cost_cell(r))}</td><td>{_e(r.get('verdict') or '')}</td>"
            f"<td>{_e(r.get('note') or '')}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render(report: dict[str, Any], plots: dict[str, bytes]) -> str:
    """The whole page."""
    model, ev, machine = report.get("model") or {}, report.get("eval") or {}, report.get("machine") or {}
    chosen = ((report.get("auto") or {}).get("chosen") or {}).get("variant")
    title = f"lowbit report — {model.get('name', 'model')}"
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    meta = [f"command: <code>{_e(report.get('command', ''))}</code>", f"created {_e(report.get('created', ''))}",
            f"lowbit {_e(report.get('lowbit_version', ''))}"]
    if ev:
        meta.append(f"eval: {_e(ev.get('source'))}, {ev.get('tokens', 0):,} tokens in {ev.get('windows')} windows")
    if report.get("calib"):
        meta.append(f"calibration: {_e(report['calib'].get('source'))}")
    meta.append(f"machine: {_e(machine.get('cpu', '?'))}, {machine.get('cores', '?')} cores, "
                f"GPU {_e(machine.get('gpu') or 'none')}")
    parts.append('<p class="meta">' + "<br>".join(meta) + "</p>")
    parts.append("<h2>Recommendation</h2>")
    for head, lines in advice_sections(report):
        items = "".join(f"<li{' class=warn' if line.startswith(('conflict', 'the calibration')) else ''}>"
                        f"{_e(line)}</li>" for line in lines)
        parts.append(f'<div class="advice"><h3>{_e(head)}</h3><ul>{items}</ul></div>')
    if report.get("results"):
        parts.append('<h2>Results</h2><div style="overflow-x:auto">' + results_table(report, chosen) + "</div>")
        parts.append('<p class="meta">Intervals are 95%, window-clustered, paired per token against the float '
                     "model. KLD MDE: the smallest KLD this eval set detects (80% power, α = 0.05).</p>")
    captions = {"size_vs_kld": "Size vs KLD; the Pareto frontier is joined in blue.",
                "speed_vs_kld": "Measured throughput vs KLD (the runtime is named in the title).",
                "layer_error": "Relative weight error per quantized layer."}
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, data in plots.items():
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(f'<figure><img id="plot-{name}" alt="{_e(captions[name])}" src="{uri}">'
                         f"<figcaption class=meta>{_e(captions[name])}</figcaption></figure>")
    pairs = (report.get("detectability") or {}).get("pairs", []) + (report.get("detectability") or {}).get(
        "nll_pairs", [])
    if pairs:
        parts.append("<h2>Can this eval set tell them apart?</h2><ul>"
                     + "".join(f"<li>{_e(p['sentence'])}</li>" for p in pairs) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def load_run(run_dir: Path) -> dict[str, Any]:
    """``RUN_DIR/report.json`` (or RUN_DIR itself when it is a JSON file)."""
    path = run_dir if run_dir.is_file() else run_dir / "report.json"
    if not path.is_file():
        raise LowbitError(f"{run_dir} has no report.json; write one with lowbit compare --out DIR or lowbit auto "
                          "--out DIR")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LowbitError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(report, dict) or "results" not in report:
        raise LowbitError(f"{path} is not a lowbit report (no \"results\")")
    return report


def write_report(run_dir: Path) -> Path:
    """Write ``report.html`` and ``plots/*.png`` into the run folder; returns the HTML path."""
    run_dir = Path(run_dir)
    report = load_run(run_dir)
    folder = run_dir.parent if run_dir.is_file() else run_dir
    plots = write_plots(report, folder / "plots")
    out = folder / "report.html"
    write_text_atomic(out, render(report, plots))
    return out
