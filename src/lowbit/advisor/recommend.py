"""`lowbit recommend`: walk the decision rule top-down; the first question that fits wins.

Each step prints its answer and one sentence of reason. The answer names
variants with the five axes a deployment decision turns on — bit width, what
is quantized, granularity, calibration cost, hardware support on the target —
and the exact `lowbit` command that verifies it on the user's data. A variant
whose method is not installed in this build is still named, with a plain
"not available in this build"; nothing is silently substituted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lowbit.advisor.bar import Bar
from lowbit.advisor.hw import ACCELERATED, TargetInfo, resolve_target, scheme_hw_key, support
from lowbit.advisor.modelinfo import ModelFacts
from lowbit.advisor.rules import (FACTS, GOALS, GPU_ON_CPU_ALTERNATIVES, LATENCY_ALTERNATIVES, METHOD_COST,
                                  NO_MATCH_VARIANTS, QUESTIONS, SMALL_MODEL_PARAMS, Facts)
from lowbit.errors import LowbitError

#: Axes printed for every recommended variant, in order.
AXES = ("bit_width", "quantized", "granularity", "calibration", "hardware")
#: Default target kind of each goal when --target is not given.
GOAL_KIND = {"gpu-serving": "cuda"}


@dataclass
class Step:
    """One answered question: ``answer`` True stops the walk."""

    number: int
    question: str
    answer: bool
    reason: str


@dataclass
class VariantAdvice:
    """A recommended variant with its five axes and how to verify it."""

    variant: str
    available: bool
    unavailable_reason: str | None
    axes: dict[str, str]
    hw_status: str
    bits_per_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"variant": self.variant, "available": self.available, "unavailable_reason": self.unavailable_reason,
                "hardware_status": self.hw_status, "bits_per_weight": self.bits_per_weight, **self.axes}


@dataclass
class Recommendation:
    """The walk and its answer."""

    goal: str | None
    target: TargetInfo
    bar: Bar | None
    model: ModelFacts | None
    steps: list[Step]
    variants: list[VariantAdvice]
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The ``recommendation`` block of the JSON document."""
        return {
            "goal": self.goal, "target": {"name": self.target.name, "kind": self.target.kind,
                                          "note": self.target.note},
            "bar": self.bar.as_dict() if self.bar else None,
            "model": {"name": self.model.spec, "params": self.model.params} if self.model else None,
            "steps": [vars(s) for s in self.steps],
            "variants": [v.as_dict() for v in self.variants],
            "conflicts": self.conflicts, "notes": self.notes, "verify": self.verify,
        }


# --- availability and the five axes ---------------------------------------------------------------

def availability(text: str) -> tuple[Any, str | None]:
    """(resolved Variant, None) or (None, why it is not available in this build)."""
    from lowbit.methods import METHODS, resolve_variant
    from lowbit.variant import VariantString

    try:
        return resolve_variant(text), None
    except LowbitError as e:
        method = VariantString.parse(text).method
        if method not in METHODS:
            return None, (f"not available in this build: method '{method}' is not installed "
                          f"(installed: {', '.join(METHODS.names())})")
        return None, f"not available in this build: {e}"


def _cost_phrase(seconds_per_mparam: float, model: ModelFacts | None) -> str:
    if model is None:
        return (f"quantizing takes ~{_duration(seconds_per_mparam * 100)} per 100M parameters on a 2-core CPU "
                "(order of magnitude)")
    return (f"quantizing takes ~{_duration(seconds_per_mparam * model.params / 1e6)} for {model.size_phrase()} "
            "on a 2-core CPU (order of magnitude)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def variant_bpw(v: Any, model: ModelFacts | None) -> float:
    """Bits per quantized weight of a resolved variant: exact on the model's linears when known."""
    shapes = list(model.linears.values()) if model and model.linears else [(4096, 4096)]
    ok = []
    for s in shapes:
        try:
            ok.append((v.scheme.storage_bits(s), s[0] * s[1]))
        except LowbitError:
            continue  # a shape the grid cannot take is reported when quantizing, not here
    if not ok:
        return float(v.scheme.weight_bits)
    return sum(b for b, _ in ok) / sum(n for _, n in ok)


def _granularity(scheme: Any) -> str:
    g = scheme.granularity
    if g == "group" and scheme.group_size:
        return f"groups of {scheme.group_size} inputs"
    return {"channel": "per output channel", "tensor": "one scale per tensor"}.get(g, g)


def advise(text: str, target: TargetInfo, model: ModelFacts | None) -> VariantAdvice:
    """The five axes of ``text`` on ``target``: from the scheme when installed, else from :data:`FACTS`."""
    v, why = availability(text)
    facts: Facts | None = FACTS.get(text)
    method = text.split(":", 1)[0]
    if v is not None:
        bpw = variant_bpw(v, model)
        where = "on this model" if model and model.linears else "on a 4096 × 4096 layer"
        act = v.act_bits
        quantized = ("weights and activations of every linear layer, "
                     f"{v.scheme.weight_bits}-bit weights / {act}-bit activations" if act < 16 else
                     "weights of every linear layer; activations stay 16-bit")
        head = "output head quantized too" if v.options.get("lm_head") else "output head kept float"
        cost = facts.seconds_per_mparam if facts else METHOD_COST.get(v.method.name, 1.0)
        what = facts.calibration if facts else ("calibration text" if v.method.needs_calibration else "none")
        calibration = f"{what}; {_cost_phrase(cost, model)}"
        hw_key = scheme_hw_key(v.scheme)
        axes = {"bit_width": f"{v.scheme.weight_bits} bits ({bpw:.3f} bits per weight {where}, scales included)",
                "quantized": f"{quantized} ({head})",
                "granularity": facts.granularity if facts and v.scheme.granularity == "block" else _granularity(v.scheme),
                "calibration": calibration}
    else:
        bpw = None
        hw_key = facts.hw_key if facts else None
        cost = facts.seconds_per_mparam if facts else METHOD_COST.get(method, 1.0)
        axes = {"bit_width": facts.bits if facts else "unknown (method not installed)",
                "quantized": facts.quantized if facts else "unknown (method not installed)",
                "granularity": facts.granularity if facts else "unknown (method not installed)",
                "calibration": (facts.calibration if facts else "unknown") + "; " + _cost_phrase(cost, model)}
    hs = support(hw_key, target)
    axes["hardware"] = f"{hs.text()} on {target.name}"
    return VariantAdvice(text, v is not None, why, axes, hs.status, bpw)


# --- the walk ------------------------------------------------------------------------------------

def _bar_phrase(bar: Bar | None) -> str:
    return f"your bar ({bar.describe()})" if bar else "your quality bar (none given: verify on your data)"


def _cpu_edge_variants(bar: Bar | None) -> tuple[str, ...]:
    """The smallest k-quant whose llama.cpp prior meets the bar, and the next larger as a fallback."""
    ladder = ("gguf:Q4_K_M", "gguf:Q5_K_M", "gguf:Q6_K", "gguf:Q8_0")
    if bar is None or bar.metric == "top1":
        return ladder[:2]
    for i, v in enumerate(ladder):
        prior = FACTS[v].prior_kld if bar.metric == "kld" else FACTS[v].prior_dppl_pct
        if prior is not None and prior <= bar.limit:
            return ladder[i:i + 2]
    return ladder[-2:]


def walk(goal: str | None, target_name: str | None = None, bar: Bar | None = None,
         model: ModelFacts | None = None) -> Recommendation:
    """Walk :data:`~lowbit.advisor.rules.QUESTIONS` for ``goal`` (None: every question answered no)."""
    if goal is not None and goal not in GOALS:
        raise LowbitError(f"unknown --goal '{goal}'; expected one of {', '.join(GOALS)}")
    target = resolve_target(target_name, GOAL_KIND.get(goal or "", "cpu"))
    fill = {"goal": goal or "none of these", "target": target.name, "bar": _bar_phrase(bar)}
    steps: list[Step] = []
    chosen = None
    for i, q in enumerate(QUESTIONS, 1):
        yes = q.goal == goal
        steps.append(Step(i, q.ask, yes, (q.yes if yes else q.no).format(**fill)))
        if yes:
            chosen = q
            break
    conflicts: list[str] = []
    notes: list[str] = []
    if chosen is None:
        variants = NO_MATCH_VARIANTS
        notes.append("no question of the rule fits: measure instead, with lowbit auto and your quality bar")
    elif chosen.goal == "cpu-edge":
        variants = _cpu_edge_variants(bar)
        if bar is not None and bar.metric != "top1":
            notes.append("the k-quant was picked from llama.cpp's Llama-3-8B scoreboard (a prior, not a measurement "
                         "on your model): lowbit auto confirms it")
    else:
        variants = chosen.variants
    advice = [advise(v, target, model) for v in variants]
    if chosen is not None and chosen.goal == "gpu-serving" and target.kind != "cuda":
        conflicts.append(f"--goal gpu-serving names a GPU, but --target {target.name} is not one; the nearest "
                         "alternative is the CPU answer: a GGUF k-quant")
        advice = [advise(v, target, model) for v in GPU_ON_CPU_ALTERNATIVES]
    if chosen is not None and chosen.goal == "latency":
        advice, more = _latency_check(advice, target, model)
        conflicts += more
        if model is not None and model.params > SMALL_MODEL_PARAMS:
            notes.append(f"this model has {model.size_phrase()}: int8 activations speed up compute-bound work "
                         "(prefill, large batches); one-token decoding of a large model is memory-bound, where "
                         "4-bit weight-only can be faster")
    if chosen is not None and chosen.goal == "gpu-serving" and model is not None and model.linears:
        odd = sorted({s[1] for s in model.linears.values() if s[1] % 128})
        if odd:
            notes.append(f"input widths {odd[:4]} are not multiples of 128: vLLM's Marlin kernels will not take "
                         "them; the exllama/GPTQ kernels will")
    rec = Recommendation(goal, target, bar, model, steps, advice, conflicts, notes)
    rec.verify = verify_commands(rec)
    return rec


def _latency_check(advice: list[VariantAdvice], target: TargetInfo, model: ModelFacts | None,
                   ) -> tuple[list[VariantAdvice], list[str]]:
    """The hardware check before int8 weight+activation: no int8 kernel → the nearest alternative that has one."""
    if any(a.hw_status == ACCELERATED for a in advice):
        return advice, []
    for alt in LATENCY_ALTERNATIVES:
        a = advise(alt, target, model)
        if a.hw_status == ACCELERATED:
            return [a], [f"--goal latency, but {target.name} has no int8 weight+activation kernel (int8 W8A8 is "
                         f"{advice[0].hw_status} there); the nearest alternative with an accelerated path is {alt}"]
    return advice, [f"--goal latency, but nothing in the rule runs accelerated on {target.name}; int8 weight+"
                    "activation is shown anyway: measure its speed there before relying on it"]


def verify_commands(rec: Recommendation) -> list[str]:
    """The exact commands that check the recommendation on the user's own text."""
    model = rec.model.spec if rec.model else "MODEL"
    names = ",".join(v.variant for v in rec.variants)
    from lowbit.compare import CompareOptions

    # `compare --target` exists once lowbit.hardware is in the build.
    target = f" --target {rec.target.name}" if "target" in CompareOptions.__dataclass_fields__ else ""
    cmds = [f"lowbit compare --model {model} --variants {names}{target} --eval YOUR_EVAL_TEXT"]
    bar = rec.bar.flag() if rec.bar else "--max-kld 0.05"
    goal = f" --goal {rec.goal}" if rec.goal else ""
    cmds.append(f"lowbit auto --model {model} --target {rec.target.name}{goal} {bar} --eval YOUR_EVAL_TEXT")
    return cmds


def ask_goal(ask: Callable[[str], str]) -> str | None:
    """Ask the rule's questions in order (y/N); the first yes is the goal."""
    for i, q in enumerate(QUESTIONS, 1):
        answer = ask(f"{i}/{len(QUESTIONS)} {q.ask} [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return q.goal
    return None
