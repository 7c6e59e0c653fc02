"""The recommendation a report shows, with its reasons, from whatever the run measured.

An `auto` run has its own answer and path; a rule walk (`recommend`) its
steps; a plain `compare` gets the smallest variant that meets a few common KLD
bars at 95% confidence, the Pareto frontier, and what the eval set could not
tell apart.
"""

from __future__ import annotations

from typing import Any

from lowbit.report.plots import measured, pareto

#: KLD bars a compare report answers for (nats/token): near-lossless, llama.cpp Q4_K_M-like, loose.
COMMON_BARS = (0.01, 0.05, 0.1)


def _mb(r: dict[str, Any]) -> str:
    return f"{r['size_bytes'] / 1e6:.1f} MB, {r['bits_per_weight']:.3f} bpw"


def compare_advice(report: dict[str, Any]) -> list[str]:
    """Sentences for a compare report (see module docstring)."""
    rows = measured(report.get("results") or [])
    if not rows:
        return ["no variant was measured successfully, so there is nothing to recommend"]
    out = []
    for bar in COMMON_BARS:
        ok = [r for r in rows if r.get("kld_ci") and r["kld_ci"][1] <= bar]
        if ok:
            best = min(ok, key=lambda r: r["size_bytes"])
            out.append(f"for KLD ≤ {bar:g}: {best['variant']} ({_mb(best)}) — the smallest variant whose 95% upper "
                       f"bound ({best['kld_ci'][1]:.4g}) meets it")
        else:
            near = min(rows, key=lambda r: (r.get("kld_ci") or [0, float("inf")])[1])
            out.append(f"for KLD ≤ {bar:g}: none measured meets it; closest is {near['variant']} (upper bound "
                       f"{near['kld_ci'][1]:.4g})")
    front = pareto(rows)
    dominated = [r for r in rows if r not in front]
    line = "Pareto frontier (size vs KLD): " + ", ".join(r["variant"] for r in front)
    if dominated:
        line += f"; dominated (another variant is no larger and closer): {', '.join(r['variant'] for r in dominated)}"
    out.append(line)
    for p in (report.get("detectability") or {}).get("pairs", []):
        if not p["distinguishable"]:
            out.append(p["sentence"])
    return out


def _path_lines(path: list[dict[str, Any]]) -> list[str]:
    """One line per step, with skips for the same reason folded into one line."""
    lines: list[str] = []
    skipped: dict[str, list[str]] = {}
    for p in path:
        if p["action"] == "skipped" and "not available in this build" in p["reason"]:
            skipped.setdefault(p["reason"], []).append(p["variant"])
            continue
        lines.append(f"{p['step']}. {p['variant']}: {p['reason']}")
    return [f"skipped {', '.join(v)}: {why}" for why, v in skipped.items()] + lines


def advice_sections(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(heading, sentences) for every kind of answer the report holds."""
    sections: list[tuple[str, list[str]]] = []
    auto = report.get("auto")
    if auto:
        ch = auto.get("chosen")
        head = (f"lowbit auto chose {ch['variant']} ({ch['bits_per_weight']:.3f} bpw) for {auto['bar']['text']}"
                if ch else f"no candidate meets {auto['bar']['text']} at 95% confidence")
        lines = _path_lines(auto.get("path", []))
        if not ch and auto.get("closest"):
            lines.append(auto["closest"]["sentence"])
        if auto.get("accelerated_alternative"):
            lines.append(auto["accelerated_alternative"]["sentence"])
        sections.append((head, lines))
    mixed = report.get("mixed")
    if mixed:
        sections.append((f"mixed precision at {mixed['target_bpw']:g} bits per weight", list(mixed["summary"])))
    rec = report.get("recommendation")
    if rec:
        lines = [f"{s['number']}. {s['question']} {'yes' if s['answer'] else 'no'} — {s['reason']}"
                 for s in rec["steps"]]
        lines += [f"conflict: {c}" for c in rec.get("conflicts", [])]
        lines += [f"{v['variant']}: {v['bit_width']}; {v['hardware']}"
                  + ("" if v["available"] else f" ({v['unavailable_reason']})") for v in rec["variants"]]
        lines += [f"verify: {c}" for c in rec.get("verify", [])]
        sections.append(("the decision rule", lines))
    cc = report.get("calib_check")
    if cc:
        sections.append((f"calibration check of {cc['variant']}",
                         [p["sentence"] for p in cc["seed_pairs"] + cc["pairs"]] + cc["warnings"]))
    if not auto and not mixed and report.get("results"):
        sections.append(("what to ship, from this comparison", compare_advice(report)))
    return sections
