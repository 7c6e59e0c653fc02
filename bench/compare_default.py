"""`lowbit compare` as a user runs it first: the default variants (or --quick) on the bundled model.

    python bench/compare_default.py [--quick] [--cold]

Target (issue #2): the full default run finishes in under 10 minutes on 2 cores,
`--quick` in under 2 minutes. The wall time covers everything the command does
after start-up: loading the model, tokenizing, the float reference, every
variant's quantization, evaluation and speed measurement. With --cold the float
reference is recomputed instead of read from the cache (the model's one-time
GGUF → safetensors conversion stays cached: it happens once per machine).
Writes bench/results/compare_default[_quick].json with the whole report.
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
    args = p.parse_args()
    start = time.perf_counter()
    with flush_denormal():
        report = run_compare(CompareOptions(quick=args.quick, use_cache=not args.cold))
    wall = time.perf_counter() - start
    print_table(report)
    limit = 120 if args.quick else 600
    write_result("compare_default_quick" if args.quick else "compare_default", {
        "wall_seconds": wall, "target_seconds": limit, "target_met": wall < limit,
        "variants": [r["variant"] for r in report["results"]], "report": report,
    })


if __name__ == "__main__":
    main()
