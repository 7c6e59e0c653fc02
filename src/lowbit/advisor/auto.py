"""Driver of `lowbit auto`: data, the float reference, the search or the mixed-precision comparison, the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.advisor.allocate import Plan, save_plan
from lowbit.advisor.bar import Bar
from lowbit.advisor.candidates import make_candidate
from lowbit.advisor.hw import resolve_target
from lowbit.advisor.measure import Bench, measure
from lowbit.advisor.modelinfo import ModelFacts
from lowbit.compare import require_causal_lm
from lowbit.data import DEFAULT_CALIB_SAMPLES, DEFAULT_EVAL, DEFAULT_EVAL_TOKENS, DataSets, prepare_data
from lowbit.data.windows import DEFAULT_WINDOW, TokenSet
from lowbit.devices import select_device
from lowbit.errors import LowbitError
from lowbit.eval.detect import paired_difference
from lowbit.methods import select_targets
from lowbit.models import DEFAULT_MODEL, load_model
from lowbit.report.schema import build_report
from lowbit.utils.progress import info, warn


@dataclass
class AutoOptions:
    """Inputs of one `lowbit auto` run (CLI flags map one to one)."""

    model: str = DEFAULT_MODEL
    target: str | None = None
    goal: str | None = None
    bar: Bar | None = None
    target_bpw: float | None = None
    candidates: list[str] | None = None
    budget_minutes: float | None = None
    mixed: bool = True
    accelerated_only: bool = False
    eval: str = DEFAULT_EVAL
    calib: str | None = None
    eval_tokens: int | None = None
    holdout_tokens: int | None = None
    calib_samples: int | None = None
    window_tokens: int = DEFAULT_WINDOW
    seed: int = 0
    text_field: str = "text"
    device: str = "auto"
    use_cache: bool = True


def split_holdout(ts: TokenSet, search_windows: int) -> tuple[TokenSet, TokenSet | None]:
    """The first ``search_windows`` windows to search on, the rest (disjoint tokens) held out."""
    n = int(ts.windows.shape[0])
    if n < 4:
        warn(f"only {n} evaluation windows: no held-out part, so the chosen variant is not confirmed on unseen text")
        return ts, None
    k = min(search_windows, n - max(2, n // 4)) if search_windows >= n else search_windows
    search = TokenSet(f"{ts.source} [search windows 0–{k - 1}]", ts.windows[:k], ts.documents)
    held = TokenSet(f"{ts.source} [held-out windows {k}–{n - 1}]", ts.windows[k:], ts.documents)
    return search, held


def prepare_bench(opts: AutoOptions) -> tuple[Bench, ModelFacts]:
    """Load the model, build search / held-out / calibration sets, and the bench that measures on them."""
    device = select_device(opts.device)
    search_tokens = opts.eval_tokens or DEFAULT_EVAL_TOKENS // 2
    holdout_tokens = opts.holdout_tokens or search_tokens
    info(f"loading {opts.model}")
    loaded = load_model(opts.model, seed=opts.seed)
    require_causal_lm(loaded)
    loaded.model.to(device)
    data = prepare_data(loaded.tokenizer, opts.eval, opts.calib, search_tokens + holdout_tokens,
                        opts.calib_samples or DEFAULT_CALIB_SAMPLES, opts.window_tokens, opts.seed, opts.text_field)
    search, held = split_holdout(data.eval, max(1, search_tokens // opts.window_tokens))
    if data.calib is not None and opts.calib is not None:
        from lowbit.advisor.calibscore import NGRAM, OVERLAP_WARN, ngram_overlap

        overlap = ngram_overlap(data.calib.windows, data.eval.windows)
        if overlap >= OVERLAP_WARN:
            warn(f"{overlap:.1%} of the {NGRAM}-token sequences of the calibration text also occur in the eval text: "
                 "calibration-based candidates are partly measured on text they were calibrated on")
    bench = Bench(loaded, DataSets(search, data.calib, data.calib_note), device, opts.use_cache, held)
    facts = ModelFacts(opts.model, loaded.params,
                       {n: (int(m.weight.shape[0]), int(m.weight.shape[1])) for n, m in select_targets(loaded).items()})
    return bench, facts


def uniform_neighbours(bpw: float) -> list[str]:
    """Uniform int group-64 variants at ``bpw`` (b + 0.25 bits) or, between two, both neighbours."""
    b = bpw - 0.25
    if abs(b - round(b)) < 1e-6 and 2 <= round(b) <= 8:
        return [f"rtn:w{round(b)}g64"]
    lo, hi = int(b), int(b) + 1
    return [f"rtn:w{x}g64" for x in (hi, lo) if 2 <= x <= 8]


def run_target_bpw(bench: Bench, bpw: float, target: Any, model: ModelFacts, bar: Bar | None) -> dict[str, Any]:
    """Mixed precision at ``bpw`` against the uniform variant(s) at the same size: the ``mixed`` block."""
    mixed = make_candidate(f"mixed:w4g64+bpw={bpw:g}", target, model)
    if mixed.variant is None:
        raise LowbitError(f"mixed precision is not available: {mixed.why}")
    rows, metrics = [], {}
    for c in [mixed] + [make_candidate(t, target, model) for t in uniform_neighbours(bpw)]:
        info(f"auto --target-bpw: measuring {c.text}")
        row, m = measure(bench, c.variant, bench.data.eval)
        row["target_support"] = c.hw.status
        rows.append(row)
        metrics[c.text] = m
    pairs = [paired_difference(metrics[mixed.text].kld, metrics[r["variant"]].kld, mixed.text, r["variant"], "kld")
             for r in rows[1:]]
    mrow = rows[0]
    lines = []
    for r, p in zip(rows[1:], pairs, strict=True):
        rel = (mrow["kld_mean"] - r["kld_mean"]) / r["kld_mean"] if r["kld_mean"] else float("nan")
        verdict = ("lower" if p.distinguishable and p.diff < 0 else "higher" if p.distinguishable
                   else "not distinguishable from")
        lines.append(f"mixed at {mrow['bits_per_weight']:.3f} bpw: KLD {mrow['kld_mean']:.4g} vs {r['variant']} "
                     f"({r['bits_per_weight']:.3f} bpw) {r['kld_mean']:.4g} — {rel:+.0%}, {verdict}"
                     f"{' it' if verdict.endswith('from') else ''} ({p.sentence()})")
    plan = mrow.get("plan") or {}
    hist: dict[str, int] = {}
    for spec in (plan.get("layers") or {}).values():
        hist[spec] = hist.get(spec, 0) + 1
    lines.insert(0, f"plan ({(plan.get('info') or {}).get('sensitivity', '?')} sensitivity, predicted KLD "
                    f"{plan.get('predicted_kld') or float('nan'):.4g}): "
                    + ", ".join(f"{n} × {k.split(':')[-1]}" for k, n in sorted(hist.items())))
    block: dict[str, Any] = {"target_bpw": bpw, "plan": mrow.get("plan"), "rows": rows,
                             "comparisons": [p.as_dict() for p in pairs], "summary": lines}
    if bar is not None:
        ref_ppl = bench.reference(bench.data.eval).ppl
        for r in rows:
            b = bar.bounds(r, ref_ppl)
            r["verdict"] = None if b is None else ("pass" if bar.passes(b[1]) else "fail")
    return block


def run_auto(opts: AutoOptions) -> dict[str, Any]:
    """Run `lowbit auto` and return its JSON document."""
    from lowbit.advisor.recommend import walk
    from lowbit.advisor.search import run_search

    if opts.target_bpw is None and opts.bar is None:
        raise LowbitError("lowbit auto needs a quality bar (--max-kld, --max-ppl-increase or --min-top1) "
                          "or a size budget (--target-bpw)")
    if opts.target_bpw is not None and not 2.25 <= opts.target_bpw <= 8.25:
        raise LowbitError(f"--target-bpw must lie between 2.25 and 8.25 bits per weight (int grids with groups "
                          f"of 64), got {opts.target_bpw:g}")
    target = resolve_target(opts.target, "cuda" if opts.goal == "gpu-serving" else "cpu")
    bench, facts = prepare_bench(opts)
    ref = bench.reference(bench.data.eval)
    if bench.holdout is not None:
        bench.reference(bench.holdout)
    extra: dict[str, Any] = {}
    if opts.target_bpw is not None:
        block = run_target_bpw(bench, opts.target_bpw, target, facts, opts.bar)
        rows = block.pop("rows")
        extra["mixed"] = block
    else:
        assert opts.bar is not None
        block = run_search(bench, opts.bar, target, facts, opts.goal, opts.candidates, opts.budget_minutes,
                           opts.mixed, opts.accelerated_only)
        rows = block.pop("rows")
        extra["auto"] = block
        extra["recommendation"] = walk(block["goal"], target.name, opts.bar, facts).as_dict()
    loaded = bench.float_model
    report = build_report(loaded, bench.data, ref, rows, loaded.float_bytes, loaded.params)
    if bench.holdout is not None:
        report["holdout"] = {"source": bench.holdout.source, "tokens": bench.holdout.tokens,
                             "sha256": bench.holdout.sha256}
    report.update(extra)
    return report


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """``report.json`` and, when mixed precision was chosen or asked for, ``plan.json``."""
    from lowbit.report.schema import write_json

    write_json(report, out / "report.json")
    plan = ((report.get("mixed") or {}).get("plan")
            or ((report.get("auto") or {}).get("chosen") or {}).get("plan"))
    if plan:
        save_plan(Plan(plan["base"], plan["layers"], plan.get("target_bpw"), plan.get("bpw"),
                       plan.get("predicted_kld"), plan.get("info") or {}), out / "plan.json")
