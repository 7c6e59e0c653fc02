"""Encode speed of lowbit's GGUF codecs against llama.cpp's quantizer, per type.

Both sides quantize the same float32 matrix (heavy-tailed, like real weights)
on one thread: llama.cpp through ``ggml_quantize_chunk`` (libggml-base from
llama-cpp-python, ctypes), lowbit through ``lowbit.schemes.gguf.quantize``
(vectorized numpy). Reports the best of ``--repeats`` wall times and the
ratio lowbit / llama.cpp (goal in issue 5: ≤ 2), after checking the bytes are
identical. Writes JSON with the command, machine and library versions.

    python bench/gguf_encode_speed.py [--rows 512] [--cols 4096] [--imatrix] [--repeats 3]

Writes bench/results/gguf_encode_speed.json.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import best_of, write_result


def main() -> None:
    import llama_cpp

    from lowbit.schemes.gguf import TYPES, quantize
    from lowbit.schemes.gguf.libggml import GGML

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--types", default=",".join(TYPES), help="comma-separated GGUF types")
    ap.add_argument("--imatrix", action="store_true", help="also time the imatrix (weighted) paths")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = (rng.standard_t(3, (args.rows, args.cols)) * 0.02).astype(np.float32)
    im = (rng.lognormal(0.0, 1.0, args.cols) * 1e-2).astype(np.float32)
    ggml = GGML()
    rows = []
    for qtype in args.types.split(","):
        for imatrix in ([None, im] if args.imatrix else [None]):
            ours_b, ref_b = quantize(x, qtype, imatrix), ggml.quantize(x, qtype, imatrix)
            t_ours = best_of(lambda: quantize(x, qtype, imatrix), args.repeats, warmup=False)  # noqa: B023
            t_ref = best_of(lambda: ggml.quantize(x, qtype, imatrix), args.repeats, warmup=False)  # noqa: B023
            row = {"type": qtype, "imatrix": imatrix is not None, "identical_bytes": bool(np.array_equal(ours_b, ref_b)),
                   "lowbit_s": t_ours, "llama_cpp_s": t_ref, "ratio": t_ours / t_ref,
                   "lowbit_mweights_per_s": x.size / t_ours / 1e6}
            rows.append(row)
            print(f"{qtype:7s} imatrix={row['imatrix']!s:5s} lowbit {t_ours:7.3f}s  llama.cpp {t_ref:7.3f}s  "
                  f"ratio {row['ratio']:6.1f}x  identical={row['identical_bytes']}", flush=True)
    write_result("gguf_encode_speed", {
        "numpy": np.__version__, "llama_cpp_python": llama_cpp.__version__, "shape": [args.rows, args.cols],
        "threads": 1, "target_ratio": 2.0, "results": rows,
        "note": "one thread each; lowbit is vectorized numpy, llama.cpp is ggml_quantize_chunk (C)",
    })


if __name__ == "__main__":
    main()
