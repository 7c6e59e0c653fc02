"""W8A8 speed on this CPU: int8 GEMM (torch._int_mm) vs fp32, per layer and end to end.

Per layer: every distinct linear shape of the model, at batch×tokens M = 1, 16,
128, 512: fp32 ``F.linear``, the W8A8 int8 path (activation quantization +
int8 GEMM + scales, i.e. what a forward costs) and the W8A8 reference path.
End to end: the model quantized with ``--variant`` (default smoothquant:w8a8),
prefill of 16/128/512 tokens and single-token decode with the KV cache, fp32
vs the int8 path vs the reference path. Best of ``--repeats`` after a warm-up.

    PYTHONPATH=src python bench/bench_w8a8.py --out bench/results/w8a8_cpu.json

Writes JSON with the command, the machine, the kernel names and every figure.
Timings on a shared machine are noisy; rerun on a quiet one before quoting.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import best_of

from lowbit.data import prepare_data
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.runtime.quant_linear import install_quantized
from lowbit.runtime.speed import FLOAT_RUNTIME, TorchCausalLM
from lowbit.runtime.w8a8 import INT8, REFERENCE, REFERENCE_KERNEL, int8_kernel_name, set_w8a8_path
from lowbit.schemes.w8a8 import W8A8Scheme
from lowbit.utils.machine import machine_info
from lowbit.utils.tensors import flush_denormal

SIZES = (1, 16, 128, 512)


@torch.inference_mode()
def per_layer(model: torch.nn.Module, repeats: int) -> list[dict[str, Any]]:
    shapes = sorted({tuple(m.weight.shape) for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")})
    out = []
    for o, i in shapes:
        w = torch.randn(o, i) * 0.02
        holder = torch.nn.Sequential(torch.nn.Linear(i, o, bias=False))
        mod = install_quantized(holder, "0", W8A8Scheme().quantize(w))
        for m in SIZES:
            x = torch.randn(m, i)
            mod.prefer_int8 = True
            t_int = best_of(lambda: mod(x), repeats)
            mod.prefer_int8 = False
            t_ref = best_of(lambda: mod(x), repeats)
            t_fp = best_of(lambda: torch.nn.functional.linear(x, w), repeats)
            out.append({"out": o, "in": i, "m": m, "fp32_us": t_fp * 1e6, "int8_us": t_int * 1e6,
                        "reference_us": t_ref * 1e6, "int8_speedup": t_fp / t_int})
            print(f"linear {o}x{i} M={m:4d}: fp32 {t_fp * 1e6:8.1f} us  int8 {t_int * 1e6:8.1f} us "
                  f"({t_fp / t_int:.2f}x)  reference {t_ref * 1e6:8.1f} us", flush=True)
    return out


def end_to_end(float_model: torch.nn.Module, q_model: torch.nn.Module, prompt: torch.Tensor, decode_steps: int,
               repeats: int) -> list[dict[str, Any]]:
    runs = [("fp32", FLOAT_RUNTIME, float_model, None), ("int8", int8_kernel_name(), q_model, INT8),
            ("reference", REFERENCE_KERNEL, q_model, REFERENCE)]
    out = []
    for label, kernel, model, path in runs:
        if path is not None:
            set_w8a8_path(model, path)
        run = TorchCausalLM(model)
        for t in SIZES[1:]:
            ids = prompt[:, :t]

            def prefill(ids: torch.Tensor = ids) -> None:
                run.reset()
                run.prefill(ids)

            sec = best_of(prefill, repeats)
            out.append({"path": label, "kernel": kernel, "phase": "prefill", "tokens": t, "tokens_per_s": t / sec})
            print(f"{label:9s} prefill {t:4d} tokens: {t / sec:9.1f} tok/s", flush=True)
        run.reset()
        run.prefill(prompt[:, :128])

        def decode() -> None:
            for _ in range(decode_steps):
                run.decode()

        sec = best_of(decode, repeats)
        out.append({"path": label, "kernel": kernel, "phase": "decode", "tokens": 1,
                    "tokens_per_s": decode_steps / sec, "context_tokens": 128})
        print(f"{label:9s} decode (1 token/step, 128 context): {decode_steps / sec:7.1f} tok/s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--variant", default="smoothquant:w8a8")
    ap.add_argument("--calib-samples", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5, help="end-to-end repeats (best kept)")
    ap.add_argument("--layer-repeats", type=int, default=20, help="per-layer repeats (best kept)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default); 1 is steadier on a shared machine")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--skip-layers", action="store_true", help="no per-layer timings")
    ap.add_argument("--skip-e2e", action="store_true", help="no end-to-end timings (no calibration either)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/w8a8_cpu.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with flush_denormal():
        float_loaded = load_model(args.model)
        data = prepare_data(float_loaded.tokenizer, calib_samples=args.calib_samples, eval_tokens=512,
                            window_tokens=512)
        layers = [] if args.skip_layers else per_layer(float_loaded.model, args.layer_repeats)
        e2e: list[dict[str, Any]] = []
        if not args.skip_e2e:
            q = load_model(args.model)
            quantize_model(q, resolve_variant(args.variant), data.calib)
            e2e = end_to_end(float_loaded.model, q.model, data.eval.windows[:1], args.decode_steps, args.repeats)
    fp = {(r["phase"], r["tokens"]): r["tokens_per_s"] for r in e2e if r["path"] == "fp32"}
    for r in e2e:
        r["speedup_vs_fp32"] = r["tokens_per_s"] / fp[(r["phase"], r["tokens"])]
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model, "variant": args.variant,
        "kernels": {"int8": int8_kernel_name(), "reference": REFERENCE_KERNEL, "fp32": FLOAT_RUNTIME},
        "note": "best of repeats after one warm-up; shared machine: provisional",
        "per_layer": layers,
        "end_to_end": e2e,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
