"""The advisor's view of hardware: a target, and whether a scheme runs accelerated on it.

Everything goes through :mod:`lowbit.hardware` (the support matrix, one source
per row) when it is importable. Until it is, a deliberately small fallback
answers with coarse, per-device-kind statuses and says so in every note: it is
marked for replacement, not for extension.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lowbit.errors import LowbitError

ACCELERATED, EMULATED, UNSUPPORTED = "accelerated", "emulated", "unsupported"
#: Speed rank of a status (higher is faster), for "then fastest on the target".
STATUS_RANK = {ACCELERATED: 2, EMULATED: 1, UNSUPPORTED: 0}
#: Runtime that runs any lowbit variant (dequantize once, float matmul): exact, never faster than float.
LOWBIT_REFERENCE = "lowbit reference (dequantize + float matmul)"


@dataclass(frozen=True)
class TargetInfo:
    """A deployment target as the advisor uses it.

    Attributes:
        name: e.g. ``cuda-sm80``, ``cpu-x86-avx2``, ``apple-metal``.
        kind: ``cpu``, ``cuda`` or ``metal``.
        note: how it was chosen (asked for, this machine, assumed).
    """

    name: str
    kind: str
    note: str = ""
    raw: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class HwSupport:
    """How one scheme runs on one target.

    Attributes:
        status: ``accelerated``, ``emulated`` or ``unsupported``.
        runtimes: runtimes that accelerate it there.
        note: one line with the source of the verdict.
    """

    status: str
    runtimes: tuple[str, ...] = ()
    note: str = ""

    def text(self) -> str:
        """``accelerated on cuda-sm80 by vLLM`` style phrase (target added by the caller)."""
        if self.status == ACCELERATED and self.runtimes:
            return f"accelerated ({', '.join(self.runtimes)})"
        return f"{self.status}" + (f" ({self.note})" if self.note else "")


def _hardware() -> Any | None:
    """The :mod:`lowbit.hardware` package, or None when this build has none."""
    try:
        import lowbit.hardware as hw
    except ImportError:
        return None
    return hw


def has_support_matrix() -> bool:
    """Whether verdicts come from :mod:`lowbit.hardware` (True) or the fallback (False)."""
    return _hardware() is not None


def resolve_target(name: str | None, kind_hint: str | None = None) -> TargetInfo:
    """The target ``name`` names; without a name, this machine's target of ``kind_hint`` (cpu by default).

    A CUDA goal on a machine without a GPU gets ``cuda-sm80`` (A100-class) as an
    explicit, labelled assumption rather than a silent one.
    """
    hw = _hardware()
    if name:
        if hw is not None:
            t = hw.get_target(name)
            return TargetInfo(t.name, t.kind, "asked for with --target", t)
        return TargetInfo(*_fallback_parse(name), "asked for with --target (coarse fallback support table)")
    kind = kind_hint or "cpu"
    if hw is not None:
        found = hw.targets_of(hw.detect())
        here = next((t for t in found if t.kind == kind), None)
        if here is not None:
            return TargetInfo(here.name, here.kind, "this machine", here)
        if kind == "cuda":
            t = hw.get_target("cuda-sm80")
            return TargetInfo(t.name, t.kind, "assumed (no GPU here; pass --target cuda-smXY)", t)
        return TargetInfo(found[0].name, found[0].kind, "this machine", found[0])
    if kind == "cuda":
        return TargetInfo("cuda-sm80", "cuda", "assumed (pass --target cuda-smXY)")
    return TargetInfo(_fallback_cpu_name(), "cpu", "this machine")


def support(hw_key: str | None, target: TargetInfo) -> HwSupport:
    """Status of the support-matrix scheme ``hw_key`` on ``target``.

    ``None`` (a grid no serving runtime reads, e.g. 5-bit integer groups) runs
    only in lowbit's reference runtime: emulated.
    """
    if hw_key is None:
        return HwSupport(EMULATED, (), f"no serving runtime reads this grid; {LOWBIT_REFERENCE}")
    hw = _hardware()
    if hw is not None and target.raw is not None:
        from lowbit.hardware.matrix import best_status
        from lowbit.hardware.matrix import support as matrix_support

        verdicts = matrix_support(hw_key, target.raw)
        if not verdicts:
            return HwSupport(EMULATED, (), f"no runtime listed for {hw_key}; {LOWBIT_REFERENCE}")
        best = best_status(verdicts)
        acc = tuple(v.runtime for v in verdicts if v.status == ACCELERATED)
        notes = "; ".join(f"{v.runtime}: {v.status}" for v in verdicts if v.status != ACCELERATED)
        return HwSupport(best, acc, notes)
    return _fallback_support(hw_key, target)


def scheme_hw_key(scheme: object) -> str | None:
    """The support-matrix key of a resolved scheme (None when no serving runtime reads it)."""
    hw = _hardware()
    if hw is not None:
        from lowbit.hardware.matrix import scheme_key

        return scheme_key(scheme)
    family = str(getattr(scheme, "family", "")).lower()
    bits = int(getattr(scheme, "weight_bits", 0) or 0)
    if family == "int":
        return {8: "int8-w8a16", 4: "int4-w4a16", 3: "int2-3-w-a16", 2: "int2-3-w-a16"}.get(bits)
    if family == "wa":
        return "int8-w8a8"
    if "gguf" in family:
        return "gguf"
    if family in ("bnb", "nf4", "fp4"):
        return "bnb-int8" if bits == 8 else "bnb-nf4"
    return None


# --- FALLBACK: minimal, coarse; replace with lowbit.hardware once it is merged ------------------

_FALLBACK_NOTE = "coarse fallback table: lowbit.hardware is not in this build"


def _fallback_parse(name: str) -> tuple[str, str]:
    key = name.strip().lower()
    if re.fullmatch(r"cuda-sm\d+", key):
        return key, "cuda"
    if key.startswith("cpu-"):
        return key, "cpu"
    if key == "apple-metal":
        return key, "metal"
    raise LowbitError(f"unknown --target '{name}'; expected cpu-<arch>-<isa> (e.g. cpu-x86-avx2), cuda-smXY "
                      "(e.g. cuda-sm80) or apple-metal")


def _fallback_cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return "cpu-unknown"
    if "avx512_vnni" in flags:
        return "cpu-x86-avx512vnni"
    if "avx2" in flags:
        return "cpu-x86-avx2"
    return "cpu-arm-neon" if "asimd" in flags else "cpu-x86-baseline"


def _fallback_support(key: str, t: TargetInfo) -> HwSupport:
    sm = int(t.name[7:]) if t.kind == "cuda" and t.name[7:].isdigit() else 0
    int8_cpu = t.kind == "cpu" and any(s in t.name for s in ("avx2", "avx512", "amx", "dotprod", "i8mm"))
    table: dict[str, dict[str, tuple[str, str]]] = {
        "int8-w8a8": {"cuda": (ACCELERATED if sm >= 75 else UNSUPPORTED, "vLLM"),
                      "cpu": (ACCELERATED if int8_cpu else EMULATED, "torch int8"), "metal": (UNSUPPORTED, "")},
        "int4-w4a16": {"cuda": (ACCELERATED if sm >= 70 else UNSUPPORTED, "vLLM"),
                       "cpu": (ACCELERATED, "ONNX Runtime"), "metal": (UNSUPPORTED, "")},
        "int8-w8a16": {"cuda": (ACCELERATED if sm >= 70 else UNSUPPORTED, "vLLM"),
                       "cpu": (ACCELERATED, "torch int8"), "metal": (UNSUPPORTED, "")},
        "int2-3-w-a16": {"cuda": (ACCELERATED, "vLLM"), "cpu": (UNSUPPORTED, ""), "metal": (UNSUPPORTED, "")},
        "gguf": {"cuda": (ACCELERATED, "llama.cpp"), "metal": (ACCELERATED, "llama.cpp"),
                 "cpu": (EMULATED if t.name == "cpu-x86-baseline" else ACCELERATED, "llama.cpp")},
        "bnb-nf4": {"cuda": (ACCELERATED, "bitsandbytes"), "cpu": (EMULATED, ""), "metal": (UNSUPPORTED, "")},
        "bnb-int8": {"cuda": (ACCELERATED, "bitsandbytes"), "cpu": (EMULATED, ""), "metal": (UNSUPPORTED, "")},
    }
    status, runtime = table.get(key, {}).get(t.kind, (EMULATED, ""))
    return HwSupport(status, (runtime,) if status == ACCELERATED and runtime else (), _FALLBACK_NOTE)
