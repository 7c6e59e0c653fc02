"""GGUF block codecs in numpy, byte-identical to llama.cpp's reference quantizers.

What matches what
-----------------
``quantize(x, qtype, imatrix)`` reproduces ``ggml_quantize_chunk(type, x, …,
imatrix)`` from libggml-base byte for byte, and ``dequantize`` reproduces
``dequantize_row_*`` (and gguf-py's ``gguf.quants.dequantize``) value for
value. Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
IQ4_NL, IQ4_XS, each with and without an importance matrix.

The dispatch mirrors ggml-quants.c (checked against the llama.cpp sources
vendored in llama-cpp-python 0.3.36):

* no imatrix → ``quantize_row_<type>_ref`` for Q4_0 … Q6_K;
* imatrix → ``quantize_row_<type>_impl`` (σ²-weighted fits); Q8_0 always uses
  its ``_ref`` and ignores the imatrix;
* IQ4_NL / IQ4_XS → ``quantize_row_iq4_nl_impl`` with 7 scale trials either way
  (x² weights without an imatrix).

Each type module's docstring states its fitting recipe. The fitting routines
(make_qx_quants, make_q3_quants, make_qkx2/3_quants, make_qp_quants) live in
:mod:`.fitting`, the byte layouts in :mod:`._layout`, and the float32 details
that make the port exact (sequential sums, ggml's ``nearest_int``, C
truncation and ``roundf``) in :mod:`._numeric`.

Exactness depends on ggml being built without FMA contraction in
ggml-quants.c: libggml-base is compiled without ``-march`` flags (the CPU
backend gets ``-march=native``, but the reference quantizers live in base), so
x86-64 builds do not fuse. An ARM64 build (where FMA is baseline and GCC
contracts by default) could differ in rare last-bit cases.

Everything is vectorized over all blocks; Python loops only run over search
steps (≤ 37) and the ≤ 16 positions of a coordinate-descent sweep.
"""

from __future__ import annotations

from .codec import dequantize, quantize
from .types import QK_K, TYPES, GGUFType, bits_per_weight, get_type

__all__ = ["GGUFType", "QK_K", "TYPES", "bits_per_weight", "dequantize", "get_type", "quantize"]
