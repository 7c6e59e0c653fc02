"""Candidates for `lowbit auto`: from the rule and the registry, ordered conservative → aggressive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lowbit.advisor.hw import (EMULATED, LOWBIT_REFERENCE, STATUS_RANK, UNSUPPORTED, HwSupport, TargetInfo,
                               scheme_hw_key, support)
from lowbit.advisor.modelinfo import ModelFacts
from lowbit.advisor.recommend import availability, variant_bpw
from lowbit.advisor.rules import FACTS, METHOD_COST, question_for


@dataclass
class Cand:
    """One candidate variant as the search sees it.

    Attributes:
        text: the variant string.
        variant: the resolved variant, None when not available in this build.
        why: why it is not available (None when it is).
        bpw: bits per weight on this model's linears, scales included (None when unavailable).
        hw: how it runs on the target.
        cost: rough quantization cost, seconds per million parameters (cheaper is tried first among equals).
    """

    text: str
    variant: Any
    why: str | None
    bpw: float | None
    hw: HwSupport
    cost: float

    @property
    def family(self) -> str:
        """The method: a family's ladder stops at its first failure."""
        return self.text.split(":", 1)[0]

    @property
    def speed_rank(self) -> int:
        """Higher runs faster on the target (accelerated > emulated > unsupported)."""
        return STATUS_RANK.get(self.hw.status, 0)


def goal_for_target(target: TargetInfo) -> str:
    """The goal whose ladder fits a target when none is given: GPUs serve, everything else is CPU/edge."""
    return "gpu-serving" if target.kind == "cuda" else "cpu-edge"


def make_candidate(text: str, target: TargetInfo, model: ModelFacts) -> Cand:
    """Resolve ``text`` and describe it for the search."""
    v, why = availability(text)
    method = text.split(":", 1)[0]
    cost = FACTS[text].seconds_per_mparam if text in FACTS else METHOD_COST.get(method, 1.0)
    if v is None:
        facts = FACTS.get(text)
        return Cand(text, None, why, None, support(facts.hw_key if facts else None, target), cost)
    bpw = variant_bpw(v, model)
    if v.method.name == "mixed":
        # Widths other than 4 and 8 have no serving kernel; a 4/8 mixture is what
        # compressed-tensors / GPTQModel per-module configs serve.
        bits = set(v.options.get("bits", ""))
        hw = (support("int4-w4a16", target) if bits <= {"4", "8"} else
              HwSupport(EMULATED, (), f"per-layer widths {''.join(sorted(bits))}; {LOWBIT_REFERENCE}"))
        bpw = float(v.options.get("bpw") or bpw)
    else:
        hw = support(scheme_hw_key(v.scheme), target)
    if hw.status == UNSUPPORTED and target.kind in ("cpu", "cuda"):
        # lowbit's own runtime runs any variant wherever torch does: exact, at float speed.
        hw = HwSupport(EMULATED, (), f"no serving runtime on {target.name}; {LOWBIT_REFERENCE}")
    return Cand(text, v, None, bpw, hw, cost)


def build_candidates(texts: list[str] | None, goal: str, target: TargetInfo, model: ModelFacts,
                     accelerated_only: bool) -> tuple[list[Cand], list[tuple[Cand, str]]]:
    """(candidates to search, in order; skipped ones with the reason).

    Order: bits per weight descending (conservative first); among equal sizes the
    cheaper method first. Unavailable candidates, those with no runtime on the
    target, and (with ``accelerated_only``) those without an accelerated one are
    skipped with a reason, never silently.
    """
    texts = texts or list(question_for(goal).ladder)
    seen: set[str] = set()
    keep: list[Cand] = []
    skipped: list[tuple[Cand, str]] = []
    for t in texts:
        if t in seen:
            continue
        seen.add(t)
        c = make_candidate(t, target, model)
        if c.variant is None:
            skipped.append((c, c.why or "not available in this build"))
        elif c.hw.status == UNSUPPORTED:
            skipped.append((c, f"no runtime runs it on {target.name}"))
        elif accelerated_only and c.speed_rank < STATUS_RANK["accelerated"]:
            skipped.append((c, f"no accelerated runtime on {target.name} (--accelerated-only)"))
        else:
            keep.append(c)
    keep.sort(key=lambda c: (-(c.bpw or 0.0), c.cost))
    return keep, skipped
