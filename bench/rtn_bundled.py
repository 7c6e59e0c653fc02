"""RTN on the bundled SmolLM2-135M: the full default comparison.

    python bench/rtn_bundled.py [--eval-tokens 16384]

Writes bench/results/rtn_bundled.json (the whole `lowbit compare` report).
"""

from __future__ import annotations

import argparse
import time

from _common import write_result

from lowbit.compare import CompareOptions, run_compare
from lowbit.report.table import print_table
from lowbit.utils.tensors import flush_denormal

RTN_VARIANTS = ["rtn:w8ch", "rtn:w8t", "rtn:w4g64", "rtn:w4g128asym", "rtn:w3g64", "rtn:w2g32"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--eval-tokens", type=int, default=16384)
    args = p.parse_args()
    start = time.perf_counter()
    with flush_denormal():
        report = run_compare(CompareOptions(variants=RTN_VARIANTS, eval_tokens=args.eval_tokens, device="cpu"))
    print_table(report)
    write_result("rtn_bundled", {"wall_seconds": time.perf_counter() - start, "report": report})


if __name__ == "__main__":
    main()
