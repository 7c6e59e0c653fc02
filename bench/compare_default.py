"""`lowbit compare` as a user runs it first: the default variants (or --quick) on the bundled model.

    python bench/compare_default.py [--quick] [--cold]
    python bench/compare_default.py --variants rtn:w8a8,smoothquant:w8a8 --name w8a8_compare

Target (issue #2): the full default run finishes in under 10 minutes on 2 cores,
`--quick` in under 2 minutes. The wall time covers everything the command does
after start-up: loading the model, tokenizing, the float reference, every
variant's quantization, evaluation and speed measurement. With --cold the float
reference is recomputed instead of read from the cache (the model's one-time
GGUF → safetensors conversion stays cached: it happens once per machine).
Writes bench/results/compare_default[_quick].json (or --name) with the whole report.
With --variants, any list runs the same way (the 10-minute target then does not apply).
"""

from __future__ import annotations

import argparse
import time

from _common import write_result

from lowbit.compare import CompareOptions, run_compare
from lowbit.report.table import print_table
from lowbit.utils.tensors import flush_denormal


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cold", action="store_true", help="recompute the float reference")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: compare's defaults)")
    p.add_argument("--calib-samples", type=int, default=None)
    p.add_argument("--eval-tokens", type=int, default=None)
    p.add_argument("--name", default=None, help="result file name (default: compare_default[_quick])")
    args = p.parse_args()
    start = time.perf_counter()
    variants = args.variants.split(",") if args.variants else None
    with flush_denormal():
        report = run_compare(CompareOptions(quick=args.quick, use_cache=not args.cold, variants=variants,
                                            calib_samples=args.calib_samples, eval_tokens=args.eval_tokens))
    wall = time.perf_counter() - start
    print_table(report)
    limit = 120 if args.quick else 600
    name = args.name or ("compare_default_quick" if args.quick else "compare_default")
    # the time target is for the command as a user first runs it
    timed = variants is None and args.eval_tokens is None and args.calib_samples is None
    write_result(name, {
        "wall_seconds": wall, "target_seconds": limit if timed else None, "target_met": wall < limit if timed else None,
        "variants": [r["variant"] for r in report["results"]], "report": report,
    })


if __name__ == "__main__":
    main()
