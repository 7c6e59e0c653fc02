"""Printing ``lowbit hw``: the machine, then one support table per target."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_STYLE = {"accelerated": "green", "emulated": "yellow", "unsupported": "red"}


def _status(s: str) -> str:
    return f"[{_STYLE.get(s, 'white')}]{s}[/]"


def print_hw(report: dict[str, Any], sources: bool = False, console: Console | None = None) -> None:
    """Print :func:`lowbit.hardware.hw_report`'s result for a person."""
    console = console or Console(width=200)
    m = report["machine"]
    console.print(f"[bold]this machine[/bold]: {m['cpu']} · {m['arch']} · {m['cores']} cores · {m['ram_gb']} GiB RAM")
    isa = "  ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["isa"].items()) or "unknown"
    console.print(f"ISA: {isa}")
    cuda = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gb']} GiB)" for d in m["cuda"]) or "none"
    console.print(f"CUDA: {cuda} · Metal: {'yes' if m['metal'] else 'no'}")
    have = ", ".join(f"{k} {v}" for k, v in m["runtimes"].items() if v)
    absent = ", ".join(k for k, v in m["runtimes"].items() if not v)
    console.print(f"runtimes installed: {have}" + (f"; absent: {absent}" if absent else ""))
    g = report["int8_gemm_cpu"]
    console.print(f"int8 GEMM on this CPU: {g['kernel']} " + ("works" if g["available"] else f"unavailable: {g['reason']}"))
    console.print(f"targets here: {', '.join(report['targets_here'])}")
    for t in report["targets"]:
        title = f"support on {t['name']} ({t['summary']})" + (" — asked with --target" if t["asked"] else "")
        table = Table(title=title, title_justify="left", show_lines=False)
        for col in ("scheme", "best", "accelerated by", "emulated by", "unsupported by"):
            table.add_column(col)
        for s in t["support"]:
            by = {k: ", ".join(r["runtime"] for r in s["runtimes"] if r["status"] == k) or "–"
                  for k in ("accelerated", "emulated", "unsupported")}
            table.add_row(s["scheme"], _status(s["best"]), by["accelerated"], by["emulated"], by["unsupported"])
        console.print(table)
        if sources:
            for s in t["support"]:
                for r in s["runtimes"]:
                    note = f" ({r['note']})" if r["note"] else ""
                    console.print(f"  {s['scheme']} · {r['runtime']}: {r['status']}{note} — {r['source'] or '–'}")
