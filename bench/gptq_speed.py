"""GPTQ's cost on the bundled model: calibration seconds, solve seconds, peak RSS (issue #3).

    python bench/gptq_speed.py [--variant gptq:w4g64] [--calib-samples 64]

Quantizes SmolLM2-135M with one calibrating variant on ``--calib-samples``
windows of 512 tokens from builtin:python-docs, nothing else in the process,
and records the calibration forwards' seconds (block inputs, Hessians), the
rest of the method's seconds (the solves) and the process's peak RSS, with
the RSS after loading the model for scale. Target: ≤ 100 s on 2 cores with
64 × 512 tokens; the peer (llm-compressor 0.14 on this machine, per the
issue) took 196 s and 1.39 GB. Writes bench/results/gptq_speed.json (or --name).
"""

from __future__ import annotations

import argparse
import time

from _common import write_result

from lowbit.data import prepare_data
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.utils.memory import PeakRSS, current_rss_bytes
from lowbit.utils.tensors import flush_denormal


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="gptq:w4g64")
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--name", default="gptq_speed")
    args = p.parse_args()
    loaded = load_model("smollm2-135m")
    data = prepare_data(loaded.tokenizer, eval_tokens=512, calib_samples=args.calib_samples)
    rss_loaded = current_rss_bytes() / 2**20
    with flush_denormal(), PeakRSS() as rss:
        start = time.perf_counter()
        res = quantize_model(loaded, resolve_variant(args.variant), data.calib)
        total = time.perf_counter() - start
    write_result(args.name, {
        "variant": args.variant, "calib_windows": list(data.calib.windows.shape),
        "seconds_total": total, "calib_seconds": res.calib_seconds, "quant_seconds": res.quant_seconds,
        "peak_rss_mb": rss.peak_mb, "rss_after_model_load_mb": rss_loaded,
        "target_seconds": 100, "meets_target": total <= 100,
        "peer": {"name": "llm-compressor 0.14 GPTQ (issue #3, same machine kind)", "seconds": 196, "peak_rss_mb": 1390},
    })


if __name__ == "__main__":
    main()
