"""`lowbit auto`: the accuracy-aware search.

Start conservative, measure, and push the bit width down only while candidates
pass. Candidates (from the rule's ladder for the goal, filtered by what this
build has and what runs on the target) are measured largest first; a candidate
passes only when the pessimistic end of its 95% interval meets the bar. Each
method's ladder stops at its first failure (fewer bits would only be worse).
Between the smallest passing size and the largest failing one below it, mixed
precision is tried by bisection on the bits-per-weight budget. The winner —
smallest, then fastest on the target — is confirmed on held-out text it was not
chosen on; a winner that fails there is replaced by the next-smallest pass.
"""

from __future__ import annotations

import math

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from lowbit.advisor.bar import Bar
from lowbit.advisor.candidates import Cand, build_candidates, goal_for_target, make_candidate
from lowbit.advisor.hw import ACCELERATED, STATUS_RANK
from lowbit.advisor.measure import Bench, best_decode_speed, measure
from lowbit.errors import LowbitError
from lowbit.eval.detect import paired_difference
from lowbit.eval.metrics import TokenMetrics
from lowbit.utils.progress import info, warn

#: Bisection steps of mixed precision between a passing and a failing size.
MIXED_STEPS = 2
#: Smallest bpw gap worth a mixed-precision try.
MIXED_MIN_GAP = 0.3
#: Passing candidates tried on held-out text before giving up.
MAX_CONFIRM = 3


@dataclass
class Search:
    """State of one search: the measured rows, the path, the clock."""

    bench: Bench
    bar: Bar
    budget_s: float | None
    start: float = field(default_factory=time.monotonic)
    path: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, TokenMetrics] = field(default_factory=dict)
    passed: list[tuple[Cand, dict[str, Any]]] = field(default_factory=list)
    failed: list[tuple[Cand, dict[str, Any]]] = field(default_factory=list)
    #: Same-size candidates not measured because one passed: tried if that one fails on held-out text.
    deferred: list[Cand] = field(default_factory=list)
    out_of_budget: bool = False

    def elapsed(self) -> float:
        """Seconds since the search began."""
        return time.monotonic() - self.start

    def over_budget(self) -> bool:
        """Whether the time budget is spent (checked before each new measurement)."""
        if self.budget_s is not None and self.elapsed() > self.budget_s:
            self.out_of_budget = True
        return self.out_of_budget

    def note(self, c: Cand, action: str, reason: str, row: dict[str, Any] | None = None,
             verdict: str | None = None) -> None:
        """Append one step to the path (and say it on stderr)."""
        entry: dict[str, Any] = {"step": len(self.path) + 1, "variant": c.text, "action": action,
                                 "verdict": verdict, "reason": reason,
                                 "bits_per_weight": row.get("bits_per_weight") if row else c.bpw,
                                 "hardware": c.hw.status, "elapsed_s": round(self.elapsed(), 1)}
        if row:
            for k in ("kld_mean", "kld_ci", "delta_ppl", "delta_ppl_ci", "top1_agreement", "top1_ci",
                      "windows_evaluated", "windows_total", "stopped_early", "cached"):
                entry[k] = row.get(k)
        self.path.append(entry)
        info(f"auto [{entry['step']}] {c.text}: {reason}")

    def judge(self, c: Cand, action: str = "evaluated") -> str:
        """Measure ``c`` on the search set and record pass/fail/error."""
        ts = self.bench.data.eval
        try:
            row, m = measure(self.bench, c.variant, ts, self.bar, early=True)
        except LowbitError as e:
            self.note(c, action, f"error: {e}", verdict="error")
            return "error"
        except Exception as e:  # noqa: BLE001 - one broken candidate must not end the search
            traceback.print_exc()
            self.note(c, action, f"error: {type(e).__name__}: {e}", verdict="error")
            return "error"
        row["target_support"] = c.hw.status
        self.rows.append(row)
        self.metrics[c.text] = m
        est, pess, _ = self.bar.bounds(row, self.bench.reference(ts).ppl) or (float("nan"),) * 3
        ok = self.bar.passes(pess)
        row["verdict"] = "pass" if ok else "fail"
        side = "upper" if self.bar.metric != "top1" else "lower"
        how = (f"{row['windows_evaluated']} of {row['windows_total']} windows"
               + (", stopped early" if row["stopped_early"] else "") + (", cached" if row["cached"] else ""))
        reason = (f"{'passes' if ok else 'fails'}: {self.bar.metric} {est:.4g}, 95% {side} bound {pess:.4g} "
                  f"{'meets' if ok else 'misses'} {self.bar.describe()} ({row['bits_per_weight']:.3f} bpw; {how})")
        self.note(c, action, reason, row, row["verdict"])
        (self.passed if ok else self.failed).append((c, row))
        return row["verdict"]


def ladder_walk(s: Search, cands: list[Cand]) -> None:
    """Measure candidates largest first; each method stops at its first failure."""
    stopped: dict[str, float] = {}
    for c in cands:
        if c.family in stopped:
            s.note(c, "skipped", f"{c.family} already failed at {stopped[c.family]:.3f} bpw; fewer bits would "
                                 "only be worse")
            continue
        best = smallest_pass(s)
        if best is not None and c.bpw is not None and abs(c.bpw - best[0].bpw) < 1e-6 \
                and c.speed_rank <= best[0].speed_rank:
            s.note(c, "deferred", f"same size as {best[0].text}, which passed, and not faster on the target; "
                                  "tried if that one fails on held-out text")
            s.deferred.append(c)
            continue
        if s.over_budget():
            s.note(c, "skipped", "time budget spent")
            continue
        if s.judge(c) != "pass":
            stopped[c.family] = c.bpw or 0.0


def smallest_pass(s: Search) -> tuple[Cand, dict[str, Any]] | None:
    """The passing candidate whose model is smallest as stored, then the fastest on the target."""
    if not s.passed:
        return None
    return min(s.passed, key=_rank)


def mixed_bisection(s: Search, target: Any, model: Any) -> None:
    """Try mixed precision between the smallest passing size and the largest failing size below it."""
    if not s.passed:
        return
    # Bits per weight here, not file size: mixed precision re-spends the bits of the quantized
    # linears, so it bisects between the grids' own pass and failure.
    best = min(s.passed, key=_bpw_rank)
    p = best[1]["bits_per_weight"]
    below = [r["bits_per_weight"] for _, r in s.failed if r.get("bits_per_weight") and r["bits_per_weight"] < p]
    if not below:
        return
    f = max(below)
    for _ in range(MIXED_STEPS):
        if p - f < MIXED_MIN_GAP or s.over_budget():
            return
        mid = round((p + f) / 2, 2)
        c = make_candidate(f"mixed:w4g64+bpw={mid:g}", target, model)
        if c.variant is None:
            return
        if s.judge(c, "mixed precision") == "pass":
            p = s.passed[-1][1]["bits_per_weight"]
        else:
            f = mid


def _size(row: dict[str, Any]) -> float:
    """Megabytes of the model as stored (what ships); unknown sizes sort last."""
    size = row.get("size_bytes")
    return round(float(size) / 1e6, 1) if size else math.inf


def _rank(p: tuple[Cand, dict[str, Any]]) -> tuple[float, float, int, float, float]:
    """Smallest model as stored first (bits per weight count only the quantized tensors: a GGUF
    mixture that also quantizes the embeddings ships smaller at more bits per weight), then fewest
    bits per weight, then fastest on the target (support status, then measured decode speed where
    a real runtime was timed), then the most margin (lowest KLD upper bound)."""
    return (_size(p[1]),) + _bpw_rank(p)


def _bpw_rank(p: tuple[Cand, dict[str, Any]]) -> tuple[float, int, float, float]:
    """Fewest bits per weight first, then the rest of :func:`_rank`'s order."""
    return (round(p[1]["bits_per_weight"], 3), -p[0].speed_rank, -best_decode_speed(p[1]),
            (p[1].get("kld_ci") or [0, 0])[1])


def confirm(s: Search) -> tuple[Cand, dict[str, Any]] | None:
    """Re-measure the winner on held-out text; if it fails there, try its deferred same-size
    alternatives, then the next-smallest pass."""
    holdout = s.bench.holdout
    tried: set[str] = set()
    while len(tried) < MAX_CONFIRM:
        order = sorted((p for p in s.passed if p[0].text not in tried), key=_rank)
        if not order:
            return None
        c, row = order[0]
        tried.add(c.text)
        if holdout is None:
            return c, row
        try:
            hrow, _ = measure(s.bench, c.variant, holdout, None, early=False)
        except LowbitError as e:
            s.note(c, "confirm", f"error on held-out text: {e}", verdict="error")
            continue
        est, pess, _ = s.bar.bounds(hrow, s.bench.reference(holdout).ppl) or (float("nan"),) * 3
        ok = s.bar.passes(pess)
        row["holdout"] = {k: hrow.get(k) for k in ("kld_mean", "kld_ci", "delta_ppl", "delta_ppl_ci", "ppl",
                                                   "top1_agreement", "top1_ci", "windows_evaluated")}
        row["holdout"]["source"] = holdout.source
        row["holdout"]["tokens"] = holdout.tokens
        row["holdout"]["verdict"] = "pass" if ok else "fail"
        s.note(c, "confirm", f"{'confirmed' if ok else 'fails'} on {holdout.tokens:,} held-out tokens: "
                             f"{s.bar.metric} {est:.4g}, 95% bound {pess:.4g}", hrow, "pass" if ok else "fail")
        if ok:
            return c, row
        for d in [d for d in s.deferred if d.bpw is not None and abs(d.bpw - (c.bpw or 0.0)) < 1e-6]:
            s.deferred.remove(d)
            if not s.over_budget():
                s.judge(d, "alternative")
    return None


def closest(s: Search) -> dict[str, Any] | None:
    """The measured candidate nearest the bar, and by how much it missed."""
    scored = []
    for c, row in s.failed:
        b = s.bar.bounds(row, s.bench.reference(s.bench.data.eval).ppl)
        if b is not None:
            scored.append((s.bar.margin(b[1]), c, row, b))
    if not scored:
        return None
    margin, c, row, b = min(scored, key=lambda x: x[0])
    return {"variant": c.text, "bits_per_weight": row["bits_per_weight"], "estimate": b[0], "bound": b[1],
            "missed_by": margin,
            "sentence": f"closest: {c.text}, 95% bound {b[1]:.4g} against {s.bar.describe()} "
                        f"(missed by {margin:.4g})"}


def neighbours(s: Search, chosen: str) -> list[dict[str, Any]]:
    """Paired comparisons of the chosen variant with every other measured one, on their common windows."""
    out = []
    a = s.metrics.get(chosen)
    if a is None or a.kld is None:
        return out
    for name, m in s.metrics.items():
        if name == chosen or m.kld is None:
            continue
        n = min(a.kld.shape[0], m.kld.shape[0])
        if n >= 2:
            out.append(paired_difference(a.kld[:n], m.kld[:n], chosen, name, "kld").as_dict())
    return out


def run_search(bench: Bench, bar: Bar, target: Any, model: Any, goal: str | None, texts: list[str] | None,
               budget_minutes: float | None, try_mixed: bool, accelerated_only: bool) -> dict[str, Any]:
    """The whole search; returns the ``auto`` block (rows in ``block['rows']``)."""
    goal = goal or goal_for_target(target)
    s = Search(bench, bar, budget_minutes * 60 if budget_minutes else None)
    cands, skipped = build_candidates(texts, goal, target, model, accelerated_only)
    for c, why in skipped:
        s.note(c, "skipped", why)
    if not cands:
        raise LowbitError(f"no candidate of goal {goal} is available and runs on {target.name}; "
                          "pass --candidates with variants this build has")
    ladder_walk(s, cands)
    if try_mixed and not accelerated_only:
        mixed_bisection(s, target, model)
    chosen = confirm(s)
    if chosen is None and s.passed:
        warn("every passing candidate failed on the held-out text: nothing is returned as a pass")
    block: dict[str, Any] = {
        "goal": goal, "target": {"name": target.name, "kind": target.kind, "note": target.note},
        "bar": bar.as_dict(), "path": s.path, "elapsed_s": s.elapsed(),
        "budget_minutes": budget_minutes, "stopped_by_budget": s.out_of_budget,
        "chosen": None, "closest": None, "comparisons": [], "rows": s.rows,
    }
    if chosen is not None:
        c, row = chosen
        block["chosen"] = {"variant": c.text, "bits_per_weight": row["bits_per_weight"], "hardware": c.hw.status,
                           "kld_mean": row.get("kld_mean"), "kld_ci": row.get("kld_ci"),
                           "holdout": row.get("holdout"), "plan": row.get("plan")}
        block["comparisons"] = neighbours(s, c.text)
        acc = [p for p in s.passed if p[0].speed_rank == STATUS_RANK[ACCELERATED]]
        if c.speed_rank < STATUS_RANK[ACCELERATED] and acc:
            a, arow = min(acc, key=_rank)
            block["accelerated_alternative"] = {
                "variant": a.text, "bits_per_weight": arow["bits_per_weight"],
                "sentence": f"{c.text} runs only emulated on {target.name}; the smallest pass with an accelerated "
                            f"runtime there is {a.text} ({arow['bits_per_weight']:.3f} bpw; not confirmed on "
                            "held-out text)"}
    else:
        block["closest"] = closest(s)
    return block
