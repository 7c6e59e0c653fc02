"""The terminal table `lowbit compare` prints: one row per variant plus the float reference."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from lowbit.runtime.speed import SLOWER_MARGIN
from lowbit.utils.progress import stdout_console


def _ci(row: dict[str, Any], key: str, fmt: str, ci_key: str | None = None) -> str:
    v, ci = row.get(key), row.get(ci_key or f"{key}_ci")
    if v is None:
        return "–"
    if not ci:
        return format(v, fmt)
    return f"{format(v, fmt)} [{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _speed(v: Any, ratio: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.0f}" + (f" ({ratio:.2f}×)" if ratio is not None else "")


def runtime_legend(report: dict[str, Any]) -> dict[str, int]:
    """Each distinct speed runtime of the report → its footnote number."""
    names = [(report.get("reference") or {}).get("speed_runtime")] + [r.get("speed_runtime") for r in report["results"]]
    return {n: i + 1 for i, n in enumerate(dict.fromkeys(n for n in names if n))}


def _speeds(row: dict[str, Any], legend: dict[str, int]) -> str:
    """``prefill | decode`` tokens/s with their ratios to fp32, and the runtime's footnote number."""
    if row.get("prefill_tokens_per_s") is None and row.get("decode_tokens_per_s") is None:
        return "–"
    rt = f" \\[{legend[row['speed_runtime']]}]" if row.get("speed_runtime") in legend else ""
    if row.get("speed_shared_with"):  # same grid and kernel: measured once, on that row
        rt += f" = {row['speed_shared_with']}"
    return (f"{_speed(row.get('prefill_tokens_per_s'), row.get('prefill_speedup'))} | "
            f"{_speed(row.get('decode_tokens_per_s'), row.get('decode_speedup'))}{rt}")


def cost_cell(row: dict[str, Any], rss: bool = True) -> str:
    """Calibration cost: ``calib + quant`` seconds (quant alone when nothing calibrated), and peak RSS."""
    quant, calib, peak = row.get("quant_seconds"), row.get("calib_seconds"), row.get("peak_rss_mb")
    if quant is None:
        return "–"
    text = f"{calib:.1f}+{quant:.1f}" if calib else f"{quant:.1f}"
    return text + (f" ({peak:.0f})" if rss and peak is not None else "")


def flags(row: dict[str, Any], target: str | None) -> list[str]:
    """Speed/deployment warnings of a row, as the table shows them."""
    out = []
    if row.get("slower_than_float"):
        out.append("[bold red]SLOWER than fp32 here[/bold red]")
    if row.get("no_accelerated_path"):
        out.append(f"[yellow]no accelerated path on {row.get('target') or target}[/yellow]")
    return out


def results_table(report: dict[str, Any]) -> Table:
    """A rich Table of the report's rows."""
    model = report["model"]
    ev = report["eval"]
    table = Table(title=f"{model['name']} · eval {ev['tokens']} tokens ({ev['source']})", title_justify="left")
    for col, justify in (("variant", "left"), ("bpw", "right"), ("size MB", "right"), ("ppl [95% CI]", "right"),
                         ("Δppl [95% CI]", "right"), ("KLD mean [95% CI]", "right"), ("KLD p99", "right"),
                         ("top-1 %", "right"), ("tok/s", "right"), ("prefill | decode tok/s (×fp32) [rt]", "right"),
                         ("calib+quant s", "right"), ("note", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    ref = report.get("reference")
    legend = runtime_legend(report)
    if ref:
        table.add_row("float (reference)", "32", _num(model["float_bytes"] / 1e6, ".1f"), _num(ref["ppl"], ".3f"),
                      "", "", "", "", _num(ref["tokens_per_s"], ".0f"), _speeds(ref, legend), "", "")
    target = (report.get("target") or {}).get("name")
    for r in report["results"]:
        if r.get("error"):
            table.add_row(r["variant"], *[""] * 10, f"[red]error: {r['error']}[/red]")
            continue
        top1 = r.get("top1_agreement")
        table.add_row(
            r["variant"], _num(r["bits_per_weight"], ".3f"), _num((r["size_bytes"] or 0) / 1e6, ".1f"),
            _ci(r, "ppl", ".3f"), _ci(r, "delta_ppl", "+.3f"), _ci(r, "kld_mean", ".4f", "kld_ci"),
            _num(r.get("kld_p99"), ".4f"), "–" if top1 is None else f"{100 * top1:.1f}",
            _num(r.get("tokens_per_s"), ".0f"), _speeds(r, legend), cost_cell(r, rss=False), "; ".join([*flags(r, target), *([r["note"]] if r.get("note") else [])]),
        )
    return table


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the results table (stdout by default) and the detectability footnote."""
    console = console or stdout_console()
    console.print(results_table(report))
    mdes = [r["delta_ppl_mde"] for r in report["results"] if r.get("delta_ppl_mde") is not None]
    if mdes:
        console.print(f"This eval set detects a Δppl of about {min(mdes):.3f}–{max(mdes):.3f} or more "
                      "(80% power, α = 0.05, paired per window); smaller differences are not evidence either way.")
    for name, i in runtime_legend(report).items():
        console.print(f"rt [{i}]: {name}", markup=False)
    target = (report.get("target") or {}).get("name")
    # Counts only: the rows themselves carry the flags (and tests count rows by variant name).
    slow = sum(1 for r in report["results"] if r.get("slower_than_float"))
    if slow:
        console.print(f"[bold red]FLAGGED[/bold red]: {slow} variant(s) slower than fp32 on this machine (prefill or "
                      f"decode below {SLOWER_MARGIN:.0%} of fp32 with the fastest runtime here; see the note column)")
    stuck = sum(1 for r in report["results"] if r.get("no_accelerated_path"))
    if stuck and target:
        console.print(f"[yellow]{stuck} variant(s) have no accelerated path on {target}[/yellow] "
                      f"(lowbit hw --target {target})")
    print_detectability(report, console)


def print_detectability(report: dict[str, Any], console: Console) -> None:
    """One line per paired comparison between variants (see :mod:`lowbit.eval.detect`)."""
    block = report.get("detectability") or {}
    pairs = (block.get("pairs") or []) + (block.get("nll_pairs") or [])
    if not pairs:
        return
    console.print("Paired comparisons (per token, same eval tokens, 95% CI; detectable = 80% power, α = 0.05):")
    for p in pairs:
        style = "" if p["distinguishable"] else "[yellow]"
        console.print(f"  {style}{p['sentence']}{'[/yellow]' if style else ''}", highlight=False)
