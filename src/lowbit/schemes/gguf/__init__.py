"""GGUF block codecs in numpy, byte-identical to llama.cpp's reference quantizers.

What matches what
-----------------
``quantize(x, qtype, imatrix)`` reproduces ``ggml_quantize_chunk(type, x, …,
imatrix)`` from libggml-base byte for byte, and ``dequantize`` reproduces
``dequantize_row_*`` (and gguf-py's ``gguf.quants.dequantize``) value for
value. Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
IQ4_NL, IQ4_XS, each with and without an importance matrix.

The dispatch mirrors ggml-quants.c (read from, and tested against, the
llama.cpp sources vendored in llama-cpp-python 0.3.36, llama.cpp commit
0c1e570, libggml 0.25.3):

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

Exactness assumes ggml-quants.c runs without FMA contraction. That holds for
the tested x86-64 build: libggml-base is compiled without ``-march`` flags (only
the CPU backend gets ``-march=native``; the reference quantizers live in base)
and its disassembly has no FMA or AVX instructions. A build where the compiler
may fuse (e.g. GCC on ARM64, where FMA is baseline and ``-ffp-contract=fast``
is the GNU C default) could differ in rare last-bit cases; not tested.

Non-finite values follow C's comparison semantics (a ``>`` scan skips NaN,
ggml's MAX macro does not), so all-zero groups, x² overflowing for
|x| > 1.8e19, and NaN/inf weights give C's bytes too; the tests include them.

Everything is vectorized over all blocks; Python loops only run over search
steps (≤ 37) and the ≤ 16 positions of a coordinate-descent sweep.
"""

from __future__ import annotations

from .codec import dequantize, quantize
from .types import QK_K, TYPES, GGUFType, bits_per_weight, get_type

__all__ = ["GGUFType", "QK_K", "TYPES", "bits_per_weight", "dequantize", "get_type", "quantize"]
