"""Subcommands of the decision engine: recommend, auto, calib-check, report.

Parsers only here (no torch at import); each command imports its module when run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lowbit.errors import LowbitError

DataArgs = Callable[..., None]


def _bar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-kld", type=float, default=None, metavar="X", help="mean KL divergence bar (nats/token)")
    p.add_argument("--max-ppl-increase", default=None, metavar="P",
                   help="perplexity increase bar, percent of the float model's (e.g. 3 or 3%%)")
    p.add_argument("--min-top1", default=None, metavar="A",
                   help="top-1 agreement bar, a fraction (0.9) or percent (90%%)")


def add_parsers(sub: Any, data_args: DataArgs, positive: Callable[[str], int]) -> None:
    """Add the advisor's subcommands to the ``lowbit`` parser."""
    from lowbit.advisor.rules import GOALS

    p = sub.add_parser("recommend", help="walk the decision rule: which variants to try, and why")
    p.add_argument("--goal", choices=GOALS, default=None, help="what the model is for (asked when run in a terminal)")
    p.add_argument("--target", default=None, metavar="T", help="deployment target, e.g. cuda-sm80, cpu-x86-avx2")
    p.add_argument("--model", default=None, help="model (for its size, shapes and exact bits per weight)")
    _bar_args(p)
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the recommendation as JSON")

    p = sub.add_parser("auto", help="accuracy-aware search: the smallest variant that meets the bar at 95%%")
    p.add_argument("--model", default=None, help="model name, folder or .gguf (default: the bundled model)")
    p.add_argument("--target", default=None, metavar="T", help="deployment target (default: this machine)")
    p.add_argument("--goal", choices=GOALS, default=None, help="take candidates from this goal's rule")
    _bar_args(p)
    p.add_argument("--target-bpw", type=float, default=None, metavar="B",
                   help="mixed precision: allocate bits per layer to B bits per weight and compare with uniform")
    p.add_argument("--candidates", default=None, metavar="LIST", help="comma-separated variants instead of the rule's")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M", help="stop searching after M minutes")
    p.add_argument("--no-mixed", action="store_true", help="do not try mixed precision between two uniform tiers")
    p.add_argument("--accelerated-only", action="store_true",
                   help="only candidates with an accelerated runtime on the target")
    data_args(p)
    p.add_argument("--holdout-tokens", type=positive, default=None, metavar="N",
                   help="held-out tokens that confirm the chosen variant (default: as many as --eval-tokens)")
    p.add_argument("--no-cache", action="store_true", help="ignore cached candidate results")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="write report.json (and a plan) here")

    p = sub.add_parser("calib-check", help="how much does the calibration text change the result?")
    p.add_argument("--model", default=None)
    p.add_argument("--variant", required=True, metavar="V")
    p.add_argument("--calib", action="append", required=True, metavar="SPEC",
                   help="a calibration text (repeat for each set to compare)")
    p.add_argument("--eval", required=True, metavar="SPEC", help="the evaluation text")
    p.add_argument("--seeds", type=positive, default=2, metavar="K", help="calibration samples per set (seeds)")
    p.add_argument("--calib-samples", type=positive, default=None, metavar="N")
    p.add_argument("--eval-tokens", type=positive, default=None, metavar="N")
    p.add_argument("--window-tokens", type=positive, default=512, metavar="T")
    p.add_argument("--text-field", default="text")
    p.add_argument("--matters", type=float, default=0.10, metavar="F",
                   help="a difference matters above this fraction of the smaller KLD (default 0.10)")
    p.add_argument("--score-only", action="store_true", help="only score the calibration sets, do not quantize")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")

    p = sub.add_parser("report", help="HTML page and PNG plots from a run folder (compare --out, auto --out)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the report JSON here")


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def cmd_recommend(args: argparse.Namespace) -> int:
    """``lowbit recommend``."""
    from lowbit.advisor.bar import make_bar
    from lowbit.advisor.doc import envelope
    from lowbit.advisor.modelinfo import model_facts
    from lowbit.advisor.recommend import ask_goal, walk
    from lowbit.advisor.show import print_recommendation
    from lowbit.report.schema import write_json

    bar = make_bar(args.max_kld, args.max_ppl_increase, args.min_top1)
    goal, target = args.goal, args.target
    if goal is None:
        if not _interactive():
            raise LowbitError("--goal is required when not run in a terminal; one of experiment, gpu-serving, "
                              "cpu-edge, accuracy, latency")
        goal = ask_goal(input)
        if target is None:
            target = input("Target hardware (e.g. cuda-sm80, cpu-x86-avx2; empty: decide from the goal): ").strip() \
                or None
        if bar is None:
            raw = input("Quality bar, max KLD in nats/token (empty: none): ").strip()
            bar = make_bar(float(raw)) if raw else None
    facts = model_facts(args.model) if args.model else None
    rec = walk(goal, target, bar, facts).as_dict()
    print_recommendation(rec)
    if args.json:
        model = {"name": facts.spec, "params": facts.params} if facts else None
        write_json(envelope(model, recommendation=rec), args.json)
    return 0


def cmd_auto(args: argparse.Namespace) -> int:
    """``lowbit auto``: 0 when a variant passes (or --target-bpw ran), 1 when none does."""
    from lowbit.advisor.auto import AutoOptions, run_auto, write_outputs
    from lowbit.advisor.bar import make_bar
    from lowbit.advisor.show import print_auto
    from lowbit.models import DEFAULT_MODEL
    from lowbit.report.schema import write_json
    from lowbit.variant import split_variant_list

    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise LowbitError(f"--budget-minutes must be positive, got {args.budget_minutes:g}")
    opts = AutoOptions(
        model=args.model or DEFAULT_MODEL, target=args.target, goal=args.goal,
        bar=make_bar(args.max_kld, args.max_ppl_increase, args.min_top1), target_bpw=args.target_bpw,
        candidates=split_variant_list(args.candidates) if args.candidates else None,
        budget_minutes=args.budget_minutes, mixed=not args.no_mixed, accelerated_only=args.accelerated_only,
        eval=args.eval, calib=args.calib, eval_tokens=args.eval_tokens, holdout_tokens=args.holdout_tokens,
        calib_samples=args.calib_samples, window_tokens=args.window_tokens, seed=args.seed,
        text_field=args.text_field, device=args.device, use_cache=not args.no_cache,
    )
    report = run_auto(opts)
    print_auto(report)
    if args.json:
        write_json(report, args.json)
    if args.out:
        write_outputs(report, args.out)
        if (args.out / "plan.json").is_file():
            uniform = [r["variant"] for r in report["results"] if not r["variant"].startswith("mixed:")]
            print(f"plan written to {args.out / 'plan.json'}; reuse it with: lowbit compare --model {opts.model} "
                  f"--variants mixed:w4g64+plan={args.out / 'plan.json'}" + "".join("," + u for u in uniform))
    if "auto" in report and report["auto"]["chosen"] is None:
        return 1
    return 0


def cmd_calib_check(args: argparse.Namespace) -> int:
    """``lowbit calib-check``."""
    from lowbit.advisor.calibcheck import CalibOptions, run_calib_check
    from lowbit.advisor.show import print_calib_check
    from lowbit.models import DEFAULT_MODEL
    from lowbit.report.schema import write_json

    if not 0 < args.matters < 10:
        raise LowbitError(f"--matters is a fraction of the KLD, e.g. 0.1; got {args.matters:g}")
    report = run_calib_check(CalibOptions(
        variant=args.variant, calibs=args.calib, eval=args.eval, model=args.model or DEFAULT_MODEL,
        seeds=args.seeds, calib_samples=args.calib_samples, eval_tokens=args.eval_tokens,
        window_tokens=args.window_tokens, text_field=args.text_field, matters=args.matters,
        score_only=args.score_only, device=args.device))
    print_calib_check(report)
    if args.json:
        write_json(report, args.json)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``lowbit report RUN_DIR``."""
    from lowbit.report.html import load_run, write_report
    from lowbit.report.schema import write_json

    out = write_report(args.run_dir)
    print(f"report: {out}")
    print(f"plots: {', '.join(str(p) for p in sorted((out.parent / 'plots').glob('*.png')))}")
    if args.json:
        write_json(load_run(args.run_dir), args.json)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"recommend": cmd_recommend, "auto": cmd_auto,
                                                             "calib-check": cmd_calib_check, "report": cmd_report}
