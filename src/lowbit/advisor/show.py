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
