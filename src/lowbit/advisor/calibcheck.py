"""`lowbit calib-check`: how much of a result is the calibration text's doing?

Quantize with each calibration set, and with K seeds (different samples) of
each, evaluate every model on the same evaluation tokens, and report: the
spread across seeds (calibration noise), the paired difference between sets
with its 95% interval and minimum detectable difference, and a warning when a
difference that matters — beyond seed noise, outside its interval's zero, and
larger than ``matters`` × the smaller KLD — comes from the choice of
calibration text. Every set is also scored before quantizing
(:mod:`lowbit.advisor.calibscore`), against the disjoint calibration part of the
evaluation source as an in-distribution yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lowbit.advisor.calibscore import input_second_moments, score
from lowbit.advisor.measure import Bench, measure
from lowbit.compare import require_causal_lm
from lowbit.data import DEFAULT_CALIB_SAMPLES, DEFAULT_EVAL_TOKENS, DataSets, _eval_set
from lowbit.data.sources import load_documents
from lowbit.data.split import remove_overlap, split_documents
from lowbit.data.windows import TokenSet, cut_windows, sample_windows, token_stream
from lowbit.devices import select_device
from lowbit.errors import LowbitError
from lowbit.eval.detect import paired_difference
from lowbit.methods import resolve_variant, select_targets
from lowbit.models import DEFAULT_MODEL, load_model
from lowbit.report.schema import build_report
from lowbit.utils.progress import info, warn

IN_DISTRIBUTION = "(disjoint part of the eval source)"


@dataclass
class CalibOptions:
    """Inputs of `lowbit calib-check` (CLI flags map one to one)."""

    variant: str
    calibs: list[str]
    eval: str
    model: str = DEFAULT_MODEL
    seeds: int = 2
    calib_samples: int | None = None
    eval_tokens: int | None = None
    window_tokens: int = 512
    text_field: str = "text"
    matters: float = 0.10
    score_only: bool = False
    device: str = "auto"


def build_sets(tok: Any, opts: CalibOptions) -> tuple[TokenSet, dict[str, list[TokenSet]], list[str]]:
    """The evaluation set and, per calibration spec, one calibration set per seed (plus warnings)."""
    warnings: list[str] = []
    eval_all = load_documents(opts.eval, opts.text_field)
    # Always split the eval source: its disjoint part is the in-distribution yardstick,
    # and the evaluation tokens stay identical whichever calibration set is checked.
    eval_docs, own_docs = split_documents(eval_all, 0) if len(eval_all) > 1 else (eval_all, [])
    ev = _eval_set(tok, opts.eval, eval_docs, " (eval part, seed 0)", opts.eval_tokens or DEFAULT_EVAL_TOKENS,
                   opts.window_tokens)
    samples = opts.calib_samples or DEFAULT_CALIB_SAMPLES
    specs = list(dict.fromkeys(opts.calibs))
    sets: dict[str, list[TokenSet]] = {}
    for spec in specs + ([IN_DISTRIBUTION] if IN_DISTRIBUTION not in specs else []):
        if spec in (opts.eval, IN_DISTRIBUTION):
            docs, source = own_docs, f"{opts.eval} (calibration part, disjoint from eval)"
        else:
            docs, dropped = remove_overlap(load_documents(spec, opts.text_field), eval_docs)
            source = spec
            if dropped:
                warnings.append(f"calibration text {spec} and the eval text share {dropped} documents; they were "
                                "dropped from calibration")
        # Tokenized once; each seed then samples its windows exactly as lowbit.data does.
        windows = cut_windows(token_stream(tok, docs), opts.window_tokens) if docs else None
        if windows is None or windows.shape[0] == 0:
            if spec == IN_DISTRIBUTION:
                continue
            raise LowbitError(f"calibration text {spec} has less than one window of {opts.window_tokens} tokens "
                              "(after removing documents shared with the eval text)")
        if windows.shape[0] < samples:
            warnings.append(f"calibration text {spec} has {windows.shape[0]} windows of {opts.window_tokens} tokens; "
                            f"all are used, not the {samples} asked for")
        ts = [TokenSet(source, sample_windows(windows, samples, seed), len(docs)) for seed in range(opts.seeds)]
        if opts.seeds > 1 and len({t.sha256 for t in ts}) == 1:
            warnings.append(f"calibration text {spec} has only {ts[0].windows.shape[0]} windows: every seed takes "
                            "all of them, so its seed spread is not measured")
        sets[spec] = ts
    return ev, sets, warnings


def run_calib_check(opts: CalibOptions) -> dict[str, Any]:
    """Run the check; returns the JSON document (compare schema + ``calib_check``)."""
    v = resolve_variant(opts.variant)
    device = select_device(opts.device)
    info(f"loading {opts.model}")
    loaded = load_model(opts.model)
    require_causal_lm(loaded)
    loaded.model.to(device)
    ev, sets, warnings = build_sets(loaded.tokenizer, opts)
    targets = select_targets(loaded)
    moments = input_second_moments(loaded.model, targets, ev)
    vocab = len(loaded.tokenizer)
    scores = {spec: score(loaded.model, targets, ts[0], ev, vocab, moments) for spec, ts in sets.items()}
    for spec, sc in scores.items():
        if sc["overlaps_eval"]:
            warnings.append(f"{sc['ngram_overlap']:.1%} of the 16-token sequences of calibration text {spec} also "
                            "occur in the eval text: the eval set partly measures text the model was calibrated on")
    block: dict[str, Any] = {"variant": v.text, "eval": ev.source, "seeds": opts.seeds, "matters": opts.matters,
                             "sets": [{"spec": s, "source": ts[0].source, "windows": int(ts[0].windows.shape[0]),
                                       "score": scores[s]} for s, ts in sets.items()],
                             "warnings": warnings, "pairs": [], "seed_pairs": [], "baseline": None}
    rows: list[dict[str, Any]] = []
    bench = Bench(loaded, DataSets(ev, None), device)
    if not opts.score_only:
        rows = _measure_all(bench, v, sets, opts, block)
    report = build_report(loaded, DataSets(ev, None), bench.reference(ev), rows, loaded.float_bytes, loaded.params)
    report["calib_check"] = block
    return report


def _measure_all(bench: Bench, v: Any, sets: dict[str, list[TokenSet]], opts: CalibOptions,
                 block: dict[str, Any]) -> list[dict[str, Any]]:
    rows, per_set = [], {}
    if not v.method.needs_calibration:
        block["warnings"].append(f"{v.method.name} reads no calibration text: every calibration set gives the same "
                                 "model, so there is nothing to compare")
        sets = dict(list(sets.items())[:1])
    for spec, seeds in sets.items():
        klds = []
        for seed, ts in enumerate(seeds):
            bench.data = DataSets(bench.data.eval, ts)
            info(f"calib-check: {v.text} calibrated on {spec} (seed {seed})")
            row, m = measure(bench, v, bench.data.eval)
            row.update({"calib_set": spec, "calib_seed": seed, "calib_sha256": ts.sha256})
            rows.append(row)
            klds.append(m.kld)
        stack = torch.stack(klds)
        per_set[spec] = stack.mean(0)
        means = [float(k.double().mean()) for k in klds]
        entry = next(e for e in block["sets"] if e["spec"] == spec)
        entry.update({"kld_mean": sum(means) / len(means), "kld_by_seed": means,
                      "seed_spread": max(means) - min(means)})
        if len(klds) > 1:
            block["seed_pairs"].append(paired_difference(klds[0], klds[1], f"{spec} seed 0", f"{spec} seed 1")
                                       .as_dict())
    _between_sets(per_set, block, opts.matters)
    _baseline(bench, v, per_set, block, rows)
    return rows


def _between_sets(per_set: dict[str, torch.Tensor], block: dict[str, Any], matters: float) -> None:
    spread = {e["spec"]: e.get("seed_spread", 0.0) for e in block["sets"]}
    names = list(per_set)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p = paired_difference(per_set[a], per_set[b], a, b)
            ka, kb = float(per_set[a].double().mean()), float(per_set[b].double().mean())
            noise = max(spread.get(a, 0.0), spread.get(b, 0.0))
            big = abs(p.diff) > matters * min(ka, kb)
            d = p.as_dict() | {"beyond_seed_noise": abs(p.diff) > noise, "matters": big}
            block["pairs"].append(d)
            if p.distinguishable and big and abs(p.diff) > noise:
                worse, better = (a, b) if p.diff > 0 else (b, a)
                block["warnings"].append(
                    f"the calibration text decides this result: calibrated on {worse}, KLD is {abs(p.diff):.4g} "
                    f"higher than calibrated on {better} ({abs(p.diff) / min(ka, kb):.0%}; 95% CI "
                    f"[{p.ci[0]:+.4g}, {p.ci[1]:+.4g}]), beyond the seed spread of {noise:.4g}")


def _baseline(bench: Bench, v: Any, per_set: dict[str, torch.Tensor], block: dict[str, Any],
              rows: list[dict[str, Any]]) -> None:
    """Plain RTN on the same grid: a calibrated method worse than it is calibrated badly."""
    if v.method.name == "rtn" or not v.method.needs_calibration:
        return
    from lowbit.variant import VariantString

    try:
        base = resolve_variant(f"rtn:{VariantString.parse(v.text).scheme}")
    except LowbitError:
        return
    row, m = measure(bench, base, bench.data.eval)
    row["calib_set"] = None
    rows.append(row)
    block["baseline"] = {"variant": base.text, "kld_mean": row["kld_mean"], "kld_ci": row["kld_ci"]}
    for spec, k in per_set.items():
        p = paired_difference(k, m.kld, spec, base.text)
        if p.distinguishable and p.diff > 0:
            block["warnings"].append(f"calibrated on {spec}, {v.text} is worse than plain {base.text} "
                                     f"(KLD +{p.diff:.4g}, 95% CI [{p.ci[0]:+.4g}, {p.ci[1]:+.4g}])")
