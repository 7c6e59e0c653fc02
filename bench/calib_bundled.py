"""GPTQ and AWQ against RTN on the bundled SmolLM2-135M (issue #3 targets).

    python bench/calib_bundled.py [--eval-tokens 16384] [--calib-samples 64] [--variants ...] [--name F]

Calibration: ``--calib-samples`` windows of 512 tokens from the calibration
part of builtin:python-docs; evaluation: a disjoint part of the same text.
Writes bench/results/calib_bundled.json: the whole `lowbit compare` report
(KLD with CIs, calib_seconds, quant_seconds, peak_rss_mb per variant) and
the relative KLD reduction of each calibrated variant against RTN on the
same grid. Targets (issue #3): GPTQ removes ≥ 60% of RTN's KLD at w4ch and
w4g64, GPTQ w3g64 ≤ 0.5× RTN, AWQ < RTN at w4g64 and w3g64, GPTQ calibration
+ quantization ≤ 100 s on 2 cores with 64 × 512 tokens.
"""

from __future__ import annotations

import argparse
import time

from _common import write_result

from lowbit.compare import CompareOptions, run_compare
from lowbit.report.table import print_table
from lowbit.utils.tensors import flush_denormal

VARIANTS = ["rtn:w4ch", "gptq:w4ch", "rtn:w4g64", "gptq:w4g64", "awq:w4g64",
            "rtn:w3g64", "gptq:w3g64", "awq:w3g64"]


def reductions(rows: list[dict]) -> dict[str, float]:
    """1 − KLD(variant)/KLD(RTN on the same scheme), per calibrated variant."""
    rtn = {r["scheme"]: r["kld_mean"] for r in rows if r["method"] == "rtn" and r.get("kld_mean")}
    out = {}
    for r in rows:
        base = rtn.get(r["scheme"])
        if r["method"] != "rtn" and base and r.get("kld_mean") is not None:
            out[r["variant"]] = 1 - r["kld_mean"] / base
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--name", default="calib_bundled", help="result file name under bench/results/")
    args = p.parse_args()
    start = time.perf_counter()
    with flush_denormal():
        report = run_compare(CompareOptions(variants=args.variants.split(","), eval_tokens=args.eval_tokens,
                                            calib_samples=args.calib_samples, device="cpu",
                                            speed=False))  # speed is bench_w8a8's and compare_default's job
    print_table(report)
    write_result(args.name, {"wall_seconds": time.perf_counter() - start,
                                   "kld_reduction_vs_rtn": reductions(report["results"]), "report": report})


if __name__ == "__main__":
    main()
