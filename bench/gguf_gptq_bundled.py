"""GPTQ on llama.cpp's Q4_K_M grids against plain and imatrix Q4_K_M, on the bundled model (issue #5, item 7).

    python bench/gguf_gptq_bundled.py [--model bundled] [--eval-tokens 16384] [--calib-samples 64]

Variants: ``gguf:Q4_K_M`` (llama-quantize), ``gguf:Q4_K_M+imatrix`` (with an
importance matrix from the calibration text) and
``gguf:Q4_K_M+imatrix+gptq`` (the same types and k-quant grids, every block
linear's codes chosen by GPTQ). On SmolLM2-135M most linears are 576 wide,
not whole 256-column super-blocks, so they fall back to Q5_0 / Q8_0 as in
llama.cpp and GPTQ mostly acts on those legacy grids; ffn_down (1536 wide)
stays Q4_K / Q6_K.

Writes bench/results/gguf_gptq_bundled.json: the whole `lowbit compare`
report (KLD with CIs, paired comparisons, calib/quant seconds per variant)
and the relative KLD reduction of each variant against the ones before it.
"""

from __future__ import annotations

import argparse
import time

from _common import write_result

from lowbit.compare import CompareOptions, run_compare
from lowbit.report.table import print_table
from lowbit.utils.tensors import flush_denormal

VARIANTS = ["gguf:Q4_K_M", "gguf:Q4_K_M+imatrix", "gguf:Q4_K_M+imatrix+gptq"]


def kld_reductions(rows: list[dict]) -> dict[str, float]:
    """``"a vs b"`` → 1 − KLD(a)/KLD(b) for every later variant a against every earlier b."""
    kld = {r["variant"]: r["kld_mean"] for r in rows if r.get("kld_mean")}
    names = [r["variant"] for r in rows if r["variant"] in kld]
    return {f"{a} vs {b}": 1 - kld[a] / kld[b] for i, b in enumerate(names) for a in names[i + 1:]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="model to compare on (default: the bundled model)")
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--name", default="gguf_gptq_bundled", help="result file name under bench/results/")
    args = p.parse_args()
    opts = CompareOptions(variants=args.variants.split(","), eval_tokens=args.eval_tokens,
                          calib_samples=args.calib_samples, device="cpu", speed=False)
    if args.model:
        opts.model = args.model
    start = time.perf_counter()
    with flush_denormal():
        report = run_compare(opts)
    print_table(report)
    write_result(args.name, {"wall_seconds": time.perf_counter() - start,
                             "kld_reduction": kld_reductions(report["results"]), "report": report})


if __name__ == "__main__":
    main()
