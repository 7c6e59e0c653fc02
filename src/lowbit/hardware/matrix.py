"""Which scheme runs accelerated where: scheme/format × target × runtime → status, as data.

Statuses: ``accelerated`` (a kernel computes on the low-bit data), ``emulated``
(it runs, but weights are expanded to float/half and the math is float: memory
may drop, speed does not rise), ``unsupported`` (does not load or run). Every
row names its source. The first row of a (scheme, runtime) whose requirements
the target meets decides; a runtime with rows for a scheme but none that
matches the target is ``unsupported`` there ("no path listed").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lowbit.hardware.targets import Target

ACCELERATED, EMULATED, UNSUPPORTED = "accelerated", "emulated", "unsupported"

#: What each scheme key means (the formats its runtimes read it from).
SCHEMES: dict[str, str] = {
    "int8-w8a8": "int8 weights per channel + int8 activations per token, dynamic "
                 "(compressed-tensors int-quantized; lowbit wa:w8a8)",
    "int8-w8a8-static": "int8 weights per channel + int8 activations per tensor, static (lowbit wa:w8a8static)",
    "int4-w4a16": "int4 weight-only, groups (GPTQ / AWQ / compressed-tensors pack-quantized / ONNX MatMulNBits)",
    "int8-w8a16": "int8 weight-only, per channel (GPTQ 8-bit / compressed-tensors W8A16)",
    "int2-3-w-a16": "2- or 3-bit integer weight-only (GPTQ)",
    "gguf": "GGUF block quants: Q4_0…Q8_0, k-quants, i-quants (llama.cpp)",
    "bnb-nf4": "bitsandbytes NF4 / FP4 4-bit weights",
    "bnb-int8": "bitsandbytes LLM.int8() (int8 weights, fp16 outlier columns)",
    "fp8-w8a8": "FP8 E4M3 weights and activations",
}

LLAMA_CPP, VLLM, BNB, TORCH_INT8, LOWBIT_REF, ORT = (
    "llama.cpp", "vLLM", "transformers + bitsandbytes", "torch int8 kernels",
    "lowbit reference (torch, dequantize + float matmul)", "ONNX Runtime")

_VLLM_HW = "https://docs.vllm.ai/en/latest/features/quantization/supported_hardware.html"
_VLLM_INT8 = "https://docs.vllm.ai/en/latest/features/quantization/int8.html (compute capability > 7.5)"
_VLLM_FP8 = "https://docs.vllm.ai/en/latest/features/quantization/fp8.html (FP8 compute on 8.9+; 8.0+ W8A16 via FP8 Marlin)"
_MARLIN = "vllm/model_executor/layers/quantization/utils/marlin_utils.py (Marlin needs compute capability 8.0)"
_AWQ75 = "vllm-project/vllm#4202 (awq: 'Minimum capability: 75')"
_LCPP = "https://github.com/ggml-org/llama.cpp#supported-backends (CPU AVX/AVX2/AVX512/AMX, ARM NEON, CUDA, Metal)"
_BNB = "https://huggingface.co/docs/bitsandbytes/main/en/installation (CUDA; CPU backend via PyTorch ops)"
_ONEDNN = "torch._int_mm → oneDNN s8s8s32 GEMM (uses AVX512-VNNI / AMX-INT8 when present); measured here by bench/bench_w8a8.py"
_TORCH_Q = "https://pytorch.org/docs/stable/quantization.html#backend-hardware-support (x86/fbgemm/oneDNN; qnnpack on ARM)"
_ORT_Q = "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html (x86 VNNI, ARM64; GPU int8 via TensorRT EP)"
_ORT_4 = "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html#quantize-to-int4uint4 (MatMulNBits CPU/CUDA)"
_LOWBIT = "lowbit runtime/quant_linear.py: the reference path dequantizes once and runs a float matmul"


@dataclass(frozen=True)
class Needs:
    """What a target must have for a row to apply.

    Attributes:
        kind: ``"cpu"``, ``"cuda"`` or ``"metal"``.
        arch: CPU architecture (``"x86"``/``"arm"``), None for any.
        isa: ISA extensions the target must have (all of them).
        min_sm / max_sm: inclusive CUDA compute-capability bounds (``sm_XY``).
    """

    kind: str
    arch: str | None = None
    isa: frozenset[str] = field(default_factory=frozenset)
    min_sm: int | None = None
    max_sm: int | None = None

    def met_by(self, t: Target) -> bool:
        """Whether target ``t`` satisfies every requirement."""
        if t.kind != self.kind or (self.arch is not None and t.arch != self.arch) or not self.isa <= t.isa:
            return False
        if self.min_sm is not None and (t.sm is None or t.sm < self.min_sm):
            return False
        return not (self.max_sm is not None and (t.sm is None or t.sm > self.max_sm))


@dataclass(frozen=True)
class Support:
    """One row: ``scheme`` on targets meeting ``needs`` runs in ``runtime`` with ``status``."""

    scheme: str
    runtime: str
    needs: Needs
    status: str
    source: str
    note: str = ""


def _n(kind: str, arch: str | None = None, isa: tuple[str, ...] = (), min_sm: int | None = None,
       max_sm: int | None = None) -> Needs:
    return Needs(kind, arch, frozenset(isa), min_sm, max_sm)


def _rows() -> list[Support]:
    rows: list[Support] = []
    add = rows.append
    for key in ("int8-w8a8", "int8-w8a8-static"):
        add(Support(key, VLLM, _n("cuda", min_sm=75), ACCELERATED, _VLLM_INT8, "CUTLASS scaled_mm int8"))
        add(Support(key, VLLM, _n("cuda", max_sm=74), UNSUPPORTED, _VLLM_INT8))
        add(Support(key, TORCH_INT8, _n("cpu", "x86", ("AVX2",)), ACCELERATED, _ONEDNN,
                    "fastest with AVX512-VNNI / AMX-INT8; AVX2 alone gains less"))
        add(Support(key, TORCH_INT8, _n("cpu", "x86"), EMULATED, _TORCH_Q, "no AVX2: reference int8 loops"))
        add(Support(key, TORCH_INT8, _n("cpu", "arm", ("dotprod",)), ACCELERATED, _TORCH_Q,
                    "int8 dot products (qnnpack / oneDNN+ACL)"))
        add(Support(key, TORCH_INT8, _n("cpu", "arm"), EMULATED, _TORCH_Q, "no dotprod: widening multiplies"))
        add(Support(key, TORCH_INT8, _n("cuda", min_sm=75), ACCELERATED, "torch._int_mm on CUDA (cuBLASLt int8 IMMA)"))
        add(Support(key, ORT, _n("cpu", "x86", ("AVX2",)), ACCELERATED, _ORT_Q, "ONNX QDQ / MatMulInteger model"))
        add(Support(key, ORT, _n("cpu", "arm"), ACCELERATED, _ORT_Q, "ONNX QDQ / MatMulInteger model"))
        add(Support(key, ORT, _n("cuda"), UNSUPPORTED, _ORT_Q, "CUDA EP: int8 only through the TensorRT EP"))
    for key in ("int4-w4a16", "int8-w8a16"):
        add(Support(key, VLLM, _n("cuda", min_sm=80), ACCELERATED, _MARLIN, "GPTQ/AWQ/compressed-tensors via Marlin"))
        add(Support(key, VLLM, _n("cuda", min_sm=75), ACCELERATED, _AWQ75 + "; " + _VLLM_HW,
                    "non-Marlin GPTQ (exllama) / AWQ GEMM kernels"))
        add(Support(key, VLLM, _n("cuda", min_sm=70), ACCELERATED, _VLLM_HW, "GPTQ only (gptq_gemm); AWQ needs 7.5"))
        add(Support(key, ORT, _n("cpu"), ACCELERATED, _ORT_4, "MatMulNBits (int4; 8-bit from ORT 1.20)"))
        add(Support(key, ORT, _n("cuda"), ACCELERATED, _ORT_4, "MatMulNBits CUDA kernel"))
    add(Support("int2-3-w-a16", VLLM, _n("cuda", min_sm=60), ACCELERATED, _VLLM_HW, "GPTQ gptq_gemm (2/3/4/8-bit)"))
    add(Support("int8-w8a16", TORCH_INT8, _n("cpu"), ACCELERATED, "torch._weight_int8pack_mm (CPU int8 weight-only)"))
    for kind, arch, isa, note in (("cpu", "x86", ("AVX2",), "AVX2/AVX512/AMX kernels"),
                                  ("cpu", "x86", (), "scalar/SSE fallback, slow"),
                                  ("cpu", "arm", ("NEON",), "NEON (+dotprod/i8mm) kernels"),
                                  ("cuda", None, (), "CUDA kernels (MMQ/cuBLAS)"),
                                  ("metal", None, (), "Metal kernels")):
        status = EMULATED if (kind == "cpu" and arch == "x86" and not isa) else ACCELERATED
        add(Support("gguf", LLAMA_CPP, _n(kind, arch, isa, min_sm=None), status, _LCPP, note))
    add(Support("gguf", VLLM, _n("cuda", min_sm=70), ACCELERATED,
                "https://docs.vllm.ai/en/latest/features/quantization/gguf.html", "experimental"))
    for key in ("bnb-nf4", "bnb-int8"):
        add(Support(key, BNB, _n("cuda", min_sm=50), ACCELERATED, _BNB))
        add(Support(key, BNB, _n("cpu"), EMULATED, _BNB, "CPU backend: dequantize + PyTorch matmul"))
        add(Support(key, BNB, _n("metal"), UNSUPPORTED, _BNB))
        add(Support(key, VLLM, _n("cuda", min_sm=70), ACCELERATED,
                    "https://docs.vllm.ai/en/latest/features/quantization/bnb.html; " + _VLLM_HW))
    add(Support("fp8-w8a8", VLLM, _n("cuda", min_sm=89), ACCELERATED, _VLLM_FP8))
    add(Support("fp8-w8a8", VLLM, _n("cuda", min_sm=80), EMULATED, _VLLM_FP8, "weight-only W8A16 via FP8 Marlin"))
    add(Support("fp8-w8a8", VLLM, _n("cuda"), UNSUPPORTED, _VLLM_FP8))
    for key in SCHEMES:  # lowbit's own path runs every scheme wherever torch runs
        for kind in ("cpu", "cuda"):
            add(Support(key, LOWBIT_REF, _n(kind), EMULATED, _LOWBIT))
    return rows


MATRIX: tuple[Support, ...] = tuple(_rows())
RUNTIMES: tuple[str, ...] = tuple(dict.fromkeys(r.runtime for r in MATRIX))


@dataclass(frozen=True)
class Verdict:
    """A runtime's status for a scheme on one target, with the row that decided it (None: no path listed)."""

    runtime: str
    status: str
    row: Support | None


def support(scheme: str, target: Target) -> list[Verdict]:
    """Every runtime with rows for ``scheme``, and its status on ``target``."""
    out = []
    for runtime in RUNTIMES:
        rows = [r for r in MATRIX if r.scheme == scheme and r.runtime == runtime]
        if not rows:
            continue
        hit = next((r for r in rows if r.needs.met_by(target)), None)
        out.append(Verdict(runtime, hit.status if hit else UNSUPPORTED, hit))
    return out


def best_status(verdicts: list[Verdict]) -> str:
    """``accelerated`` if any runtime accelerates, else ``emulated`` if any runs, else ``unsupported``."""
    statuses = {v.status for v in verdicts}
    for s in (ACCELERATED, EMULATED):
        if s in statuses:
            return s
    return UNSUPPORTED


def scheme_key(scheme: object) -> str | None:
    """The :data:`SCHEMES` key a lowbit scheme runs as (None when no runtime serves it)."""
    family = str(getattr(scheme, "family", "")).lower()
    bits = getattr(scheme, "weight_bits", None)
    if family == "wa":
        return "int8-w8a8-static" if getattr(scheme, "static", False) else "int8-w8a8"
    if family == "int":
        return {8: "int8-w8a16", 4: "int4-w4a16", 3: "int2-3-w-a16", 2: "int2-3-w-a16"}.get(int(bits or 0))
    if "gguf" in family:
        return "gguf"
    if any(k in family for k in ("nf4", "fp4", "bnb")):
        return "bnb-int8" if bits == 8 else "bnb-nf4"
    if "fp8" in family:
        return "fp8-w8a8"
    return None
