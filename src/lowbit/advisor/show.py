"""Printing the advisor's answers for a person (stdout; progress stays on stderr)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from lowbit.utils.progress import stdout_console

_AXIS_LABEL = {"bit_width": "bit width", "quantized": "quantized", "granularity": "granularity",
               "calibration": "calibration", "hardware": "hardware"}


def print_recommendation(rec: dict[str, Any], console: Console | None = None) -> None:
    """Print a ``recommendation`` block (see :meth:`Recommendation.as_dict`)."""
    c = console or stdout_console()
    t = rec["target"]
    c.print(f"[bold]Decision rule[/bold] (top-down, first match wins) · target {t['name']} ({t['note']})"
            + (f" · bar: {rec['bar']['text']}" if rec.get("bar") else "")
            + (f" · model {rec['model']['name']}" if rec.get("model") else ""))
    for s in rec["steps"]:
        mark = "[green]yes[/green]" if s["answer"] else "no"
        c.print(f"  {s['number']}. {escape(s['question'])} {mark} — {escape(s['reason'])}.")
    for line in rec.get("conflicts", []):
        c.print(f"[yellow]conflict:[/yellow] {escape(line)}.")
    c.print("[bold]Recommended[/bold]:")
    for v in rec["variants"]:
        avail = "" if v["available"] else f"  [red]{escape(v['unavailable_reason'])}[/red]"
        c.print(f"  [bold]{v['variant']}[/bold]{avail}")
        for key in ("bit_width", "quantized", "granularity", "calibration", "hardware"):
            c.print(f"      {_AXIS_LABEL[key]:<12} {escape(str(v[key]))}")
    for line in rec.get("notes", []):
        c.print(f"note: {escape(line)}.")
    c.print("[bold]Verify on your data[/bold]:")
    for cmd in rec.get("verify", []):
        c.print(f"  {escape(cmd)}", soft_wrap=True)


def print_auto(report: dict[str, Any], console: Console | None = None) -> None:
    """Print `lowbit auto`'s results: the table, the path, the answer."""
    from lowbit.report.table import print_table

    c = console or stdout_console()
    if report.get("results"):
        print_table(report, c)
    mixed = report.get("mixed")
    if mixed:
        for line in mixed["summary"]:
            c.print(escape(line))
        return
    a = report["auto"]
    c.print(f"[bold]Search path[/bold] (bar {a['bar']['text']}, target {a['target']['name']}, goal {a['goal']}):")
    for p in a["path"]:
        c.print(f"  {p['step']:>2}. {p['action']:<15} {p['variant']:<28} {escape(p['reason'])}")
    if a["stopped_by_budget"]:
        c.print(f"[yellow]stopped: the budget of {a['budget_minutes']:g} minutes was spent[/yellow]")
    ch = a.get("chosen")
    if ch:
        held = ch.get("holdout") or {}
        c.print(f"[bold green]chosen: {ch['variant']}[/bold green] ({ch['bits_per_weight']:.3f} bpw, "
                f"{ch['hardware']} on {a['target']['name']})"
                + (f"; held-out KLD {held['kld_mean']:.4g} [{held['kld_ci'][0]:.4g}, {held['kld_ci'][1]:.4g}]"
                   if held.get("kld_ci") else ""))
        if a.get("accelerated_alternative"):
            c.print(f"note: {escape(a['accelerated_alternative']['sentence'])}")
        for p in a.get("comparisons", []):
            c.print(f"  {escape(p['sentence'])}")
    else:
        close = a.get("closest")
        c.print(f"[bold red]no candidate meets {a['bar']['text']} at 95% confidence[/bold red]"
                + (f"; {escape(close['sentence'])}" if close else ""))


def print_calib_check(report: dict[str, Any], console: Console | None = None) -> None:
    """Print `lowbit calib-check`: per run, per set (with pre-quantization scores), pairs, warnings."""
    from rich.table import Table

    c = console or stdout_console()
    cc = report["calib_check"]
    ev = report["eval"]
    if report["results"]:
        t = Table(title=f"{cc['variant']} · eval {ev['tokens']:,} tokens ({ev['source']})", title_justify="left")
        for col in ("calibration", "seed", "KLD mean [95% CI]", "Δppl [95% CI]", "top-1 %"):
            t.add_column(col)
        for r in report["results"]:
            name = r.get("calib_set") or f"baseline {r['variant']}"
            t.add_row(escape(str(name)), "" if r.get("calib_seed") is None else str(r["calib_seed"]),
                      f"{r['kld_mean']:.4f} [{r['kld_ci'][0]:.4f}, {r['kld_ci'][1]:.4f}]",
                      f"{r['delta_ppl']:+.3f} [{r['delta_ppl_ci'][0]:+.3f}, {r['delta_ppl_ci'][1]:+.3f}]",
                      f"{100 * r['top1_agreement']:.1f}")
        c.print(t)
    t = Table(title="calibration sets (scored before quantizing; distances to the eval text)", title_justify="left")
    for col in ("calibration", "windows", "token JSD (bits)", "16-gram overlap", "activation distance",
                "KLD mean", "seed spread"):
        t.add_column(col)
    for s in cc["sets"]:
        sc = s["score"]
        t.add_row(escape(s["spec"]), str(s["windows"]), f"{sc['token_jsd']:.3f}", f"{sc['ngram_overlap']:.1%}",
                  f"{sc['act_distance']:.3f}", "–" if s.get("kld_mean") is None else f"{s['kld_mean']:.4f}",
                  "–" if s.get("seed_spread") is None else f"{s['seed_spread']:.4f}")
    c.print(t)
    for p in cc["seed_pairs"] + cc["pairs"]:
        c.print(f"  {escape(p['sentence'])}")
    for w in cc["warnings"]:
        c.print(f"[yellow]warning:[/yellow] {escape(w)}")
