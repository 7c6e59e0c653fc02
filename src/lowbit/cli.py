"""The `lowbit` command: compare, quantize, qat, eval, inspect.

Bad input (a LowbitError) prints one line naming the problem and exits 2;
argparse's own usage errors exit 2 as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lowbit import __version__
from lowbit.errors import LowbitError

EXIT_BAD_INPUT = 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_data_args(p: argparse.ArgumentParser, calib: bool = True) -> None:
    from lowbit.data import DEFAULT_EVAL
    from lowbit.data.windows import DEFAULT_WINDOW

    p.add_argument("--eval", default=DEFAULT_EVAL, metavar="SPEC",
                   help="evaluation text: a file, a folder, a .jsonl, or builtin:python-docs | builtin:python-code")
    if calib:
        p.add_argument("--calib", default=None, metavar="SPEC",
                       help="calibration text (default: a disjoint part of the --eval source)")
        p.add_argument("--calib-samples", type=_positive, default=None, metavar="N", help="calibration windows")
    p.add_argument("--eval-tokens", type=_positive, default=None, metavar="N", help="evaluation tokens")
    p.add_argument("--window-tokens", type=_positive, default=DEFAULT_WINDOW, metavar="T", help="tokens per window")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--seed", type=int, default=0, help="seed for data splits and sampling")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from lowbit.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="lowbit", description="Quantize, measure on your data, choose.")
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compare", help="quantize with several variants and compare them against the float model")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name, folder or .gguf (default: %(default)s)")
    p.add_argument("--variants", default=None, metavar="LIST", help="comma-separated METHOD:SCHEME[+OPT…]")
    _add_data_args(p)
    p.add_argument("--quick", action="store_true", help="few variants and tokens: a 2-minute smoke run")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the JSON report here")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="write report.json and table.txt here")
    p.add_argument("--report", action="store_true", help="also write report.html and plots/*.png into --out")
    p.add_argument("--no-cache", action="store_true", help="recompute the float reference")
    p.add_argument("--no-speed", action="store_true", help="skip the prefill/decode tokens/s measurement")
    p.add_argument("--target", default=None, metavar="T",
                   help="deployment target to flag variants without an accelerated path on (default: this machine)")

    p = sub.add_parser("quantize", help="quantize a model with one variant and save it")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--variant", required=True, metavar="V", help="METHOD:SCHEME[+OPT…], e.g. rtn:w4g64")
    p.add_argument("--calib", default=None, metavar="SPEC", help="calibration text (default: builtin:python-docs)")
    p.add_argument("--calib-samples", type=_positive, default=None, metavar="N")
    p.add_argument("--window-tokens", type=_positive, default=512, metavar="T")
    p.add_argument("--text-field", default="text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="lowbit", help="output format (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, metavar="PATH")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    p = sub.add_parser("imatrix", help="importance matrix from calibration text, as a llama.cpp imatrix file")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--calib", default=None, metavar="SPEC", help="calibration text (default: builtin:python-docs)")
    p.add_argument("--calib-samples", type=_positive, default=None, metavar="N")
    p.add_argument("--window-tokens", type=_positive, default=512, metavar="T")
    p.add_argument("--text-field", default="text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default=None, choices=("gguf", "dat"),
                   help="llama.cpp's GGUF imatrix (default) or legacy .dat (default for a .dat path)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    _add_qat_parser(sub)

    p = sub.add_parser("eval", help="evaluate one model (against a reference when known)")
    p.add_argument("--model", required=True)
    p.add_argument("--reference", default=None, help="float model to compare against (default: the model's base)")
    _add_data_args(p, calib=False)
    p.add_argument("--json", type=Path, default=None, metavar="FILE")

    p = sub.add_parser("hw", help="this machine, and which schemes run accelerated on it or on --target")
    p.add_argument("--target", default=None, metavar="T",
                   help="a deployment target to ask about, e.g. cpu-x86-avx512vnni, cpu-arm-neon, cuda-sm80, apple-metal")
    p.add_argument("--sources", action="store_true", help="print the source of every support row")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    p = sub.add_parser("inspect", help="architecture, linears and their shapes, sizes")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from lowbit.advisor.cli import add_parsers

    add_parsers(sub, _add_data_args, _positive)
    return parser


def _add_qat_parser(sub: Any) -> None:
    from lowbit.models import DEFAULT_MODEL

    p = sub.add_parser("qat", help="quantization-aware training of one qat:… variant, then export it")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--variant", required=True, metavar="V", help="qat:SCHEME[+steps=N+lr=X+init=rtn+loss=kd+lsq+a8…]")
    p.add_argument("--train", default=None, metavar="SPEC",
                   help="training text (default: a part of the --eval source disjoint from the eval part)")
    _add_data_args(p, calib=False)
    p.add_argument("--format", default="lowbit", help="output format (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="N", help="steps between checkpoints")
    p.add_argument("--checkpoint-dir", type=Path, default=None, metavar="DIR", help="default: OUT.qat-checkpoint")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--eval-every", type=int, default=0, metavar="N", help="steps between training-curve points")
    p.add_argument("--curve-tokens", type=_positive, default=None, metavar="N",
                   help="eval tokens scored at each curve point (default: all)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop after M minutes of training steps (evaluations not counted), then export")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the summary (with the curve) here")


def _cmd_qat(args: argparse.Namespace) -> int:
    from lowbit.qat.run import run_qat
    from lowbit.report.schema import dumps, write_json

    summary = run_qat(args.model, args.variant, args.out, train=args.train, eval_spec=args.eval, fmt=args.format,
                      eval_tokens=args.eval_tokens, window_tokens=args.window_tokens, seed=args.seed,
                      text_field=args.text_field, device=args.device, overwrite=args.overwrite,
                      checkpoint_every=args.checkpoint_every, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                      eval_every=args.eval_every, curve_tokens=args.curve_tokens,
                      max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    if args.json:
        write_json(summary, args.json)
    print(dumps({k: v for k, v in summary.items() if k not in ("curve", "losses")}), end="")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from lowbit.compare import CompareOptions, run_compare
    from lowbit.report.schema import write_json
    from lowbit.report.table import print_table
    from lowbit.utils.atomic import write_text_atomic
    from lowbit.variant import split_variant_list

    if args.report and not args.out:
        raise LowbitError("--report writes report.html into the --out folder; pass --out DIR")
    opts = CompareOptions(
        model=args.model, variants=split_variant_list(args.variants) if args.variants else None,
        eval=args.eval, calib=args.calib, eval_tokens=args.eval_tokens, calib_samples=args.calib_samples,
        window_tokens=args.window_tokens, seed=args.seed, quick=args.quick, device=args.device,
        text_field=args.text_field, use_cache=not args.no_cache, speed=not args.no_speed, target=args.target,
    )
    report = run_compare(opts)
    print_table(report)
    if args.json:
        write_json(report, args.json)
    if args.out:
        from io import StringIO

        from rich.console import Console

        write_json(report, args.out / "report.json")
        buf = StringIO()
        print_table(report, Console(file=buf, width=200))
        write_text_atomic(args.out / "table.txt", buf.getvalue())
        if args.report:
            from lowbit.report.html import write_report

            print(f"report: {write_report(args.out)}")
    failed = [r for r in report["results"] if r.get("error")]
    return 1 if failed and len(failed) == len(report["results"]) else 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from lowbit.quantize import run_quantize

    summary = run_quantize(args.model, args.variant, args.out, fmt=args.format, calib=args.calib,
                           calib_samples=args.calib_samples, window_tokens=args.window_tokens, seed=args.seed,
                           text_field=args.text_field, device=args.device, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_imatrix(args: argparse.Namespace) -> int:
    from lowbit.imatrix import run_imatrix

    summary = run_imatrix(args.model, args.out, calib=args.calib, calib_samples=args.calib_samples,
                          window_tokens=args.window_tokens, seed=args.seed, text_field=args.text_field,
                          fmt=args.format, device=args.device, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from lowbit.evaluate import run_eval
    from lowbit.report.schema import write_json
    from lowbit.report.table import print_table

    report = run_eval(args.model, args.reference, args.eval, args.eval_tokens, args.window_tokens, args.seed,
                      args.text_field, args.device)
    print_table(report)
    if args.json:
        write_json(report, args.json)
    return 0


def _cmd_hw(args: argparse.Namespace) -> int:
    from lowbit.hardware import hw_report
    from lowbit.hardware.show import print_hw

    report = hw_report(args.target)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_hw(report, sources=args.sources)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from lowbit.inspect_model import describe
    from lowbit.models import load_model

    d = describe(load_model(args.model))
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    _print_inspect(d)
    return 0


def _print_inspect(d: dict[str, Any]) -> None:
    from rich.table import Table

    from lowbit.utils.progress import stdout_console

    console = stdout_console()
    console.print(f"[bold]{d['name']}[/bold]  {d['architecture']} ({d['family']}, {d['kind']})")
    console.print(f"parameters: {d['params']:,}   float size: {d['float_bytes']:,} bytes"
                  + (f"   stored: {d['stored_bytes']:,} bytes ({d['variant']})" if d["variant"] else ""))
    table = Table(show_edge=False)
    for col in ("linear", "shape [out, in]", "groups dividing in", "scheme"):
        table.add_column(col)
    for lin in d["linears"]:
        groups = ", ".join(map(str, lin["groups_dividing_input"])) or "none (partial last group)"
        scheme = lin["scheme"] or ("float (head, kept)" if lin["skipped_by_default"] else "float")
        table.add_row(lin["name"], f"{lin['shape'][0]} × {lin['shape'][1]}", groups, scheme)
    console.print(table)


COMMANDS = {"compare": _cmd_compare, "quantize": _cmd_quantize, "imatrix": _cmd_imatrix, "eval": _cmd_eval,
            "inspect": _cmd_inspect, "hw": _cmd_hw, "qat": _cmd_qat}


def _all_commands() -> dict[str, Any]:
    from lowbit.advisor.cli import COMMANDS as ADVISOR_COMMANDS

    return {**COMMANDS, **ADVISOR_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lowbit` console script."""
    args = build_parser().parse_args(argv)
    from lowbit.utils.progress import set_quiet, warn
    from lowbit.utils.tensors import flush_denormal

    set_quiet(args.quiet)
    try:
        with flush_denormal():
            return _all_commands()[args.command](args)
    except LowbitError as e:
        print(f"lowbit: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        warn("interrupted; nothing half-written was left behind")
        return 130


if __name__ == "__main__":
    sys.exit(main())
