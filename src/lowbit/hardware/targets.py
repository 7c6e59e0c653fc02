"""Deployment targets by name (``cpu-x86-avx512vnni``, ``cuda-sm80``, ``apple-metal``, …).

A target is what the support matrix is evaluated against: a device kind, a
CPU architecture with the ISA extensions that int8/low-bit kernels key on, or
a CUDA compute capability. ``lowbit hw --target NAME`` asks about hardware
that is not here; :func:`targets_of` names what is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lowbit.errors import LowbitError
from lowbit.hardware.detect import MachineInfo


@dataclass(frozen=True)
class Target:
    """A deployment target.

    Attributes:
        name: ``cpu-<arch>-<isa>``, ``cuda-sm<XY>`` or ``apple-metal``.
        kind: ``"cpu"``, ``"cuda"`` or ``"metal"``.
        arch: ``"x86"`` or ``"arm"`` for CPU targets (Metal targets are ARM too).
        isa: ISA extensions guaranteed on this target (display names, as in detect).
        sm: CUDA compute capability as ``sm_XY`` (80 for 8.0).
        summary: examples of hardware that is this target.
    """

    name: str
    kind: str
    arch: str | None = None
    isa: frozenset[str] = field(default_factory=frozenset)
    sm: int | None = None
    summary: str = ""


def _cpu(name: str, arch: str, isa: tuple[str, ...], summary: str) -> Target:
    return Target(name, "cpu", arch, frozenset(isa), None, summary)


def _cuda(sm: int, summary: str) -> Target:
    return Target(f"cuda-sm{sm}", "cuda", None, frozenset(), sm, summary)


_AVX512 = ("AVX2", "AVX-512")
TARGETS: dict[str, Target] = {t.name: t for t in (
    _cpu("cpu-x86-baseline", "x86", (), "x86-64 without AVX2 (old or low-power cores)"),
    _cpu("cpu-x86-avx2", "x86", ("AVX2",), "Intel Haswell+, AMD Zen 1–3"),
    _cpu("cpu-x86-avx512", "x86", _AVX512, "Intel Skylake-SP"),
    _cpu("cpu-x86-avx512vnni", "x86", (*_AVX512, "AVX512-VNNI"), "Intel Cascade Lake, Ice Lake; AMD Zen 4/5"),
    _cpu("cpu-x86-amx", "x86", (*_AVX512, "AVX512-VNNI", "AVX512-BF16", "AMX-INT8", "AMX-BF16"),
         "Intel Sapphire Rapids, Emerald Rapids, Granite Rapids"),
    _cpu("cpu-arm-neon", "arm", ("NEON",), "ARMv8.0 (Raspberry Pi 4, Graviton 1)"),
    _cpu("cpu-arm-dotprod", "arm", ("NEON", "dotprod"), "ARMv8.2+ (Graviton 2, Ampere Altra, Apple M1)"),
    _cpu("cpu-arm-i8mm", "arm", ("NEON", "dotprod", "i8mm"), "ARMv8.6+ (Graviton 3/4, Apple M2+)"),
    _cuda(70, "V100"),
    _cuda(75, "T4, RTX 20xx"),
    _cuda(80, "A100, A30"),
    _cuda(86, "A10, A40, RTX 30xx"),
    _cuda(89, "L4, L40S, RTX 40xx"),
    _cuda(90, "H100, H200, GH200"),
    _cuda(100, "B200, GB200"),
    _cuda(120, "RTX 50xx, RTX PRO 6000 Blackwell"),
    Target("apple-metal", "metal", "arm", frozenset({"NEON", "dotprod"}), None, "Apple silicon GPU (M1+)"),
)}


def get_target(name: str) -> Target:
    """The target named ``name``; unknown names list the known ones."""
    key = name.strip().lower()
    if key in TARGETS:
        return TARGETS[key]
    if key.startswith("cuda-sm") and key[7:].isdigit():
        return _cuda(int(key[7:]), "compute capability given by name")
    raise LowbitError(f"unknown --target '{name}'; known targets: {', '.join(TARGETS)} (or any cuda-smXY)")


def cpu_target(info: MachineInfo) -> Target:
    """The most capable CPU target whose ISA this machine has."""
    have = {k for k, v in info.isa.items() if v}
    fits = [t for t in TARGETS.values() if t.kind == "cpu" and t.arch == info.arch and t.isa <= have]
    if not fits:
        return Target(f"cpu-{info.arch}", "cpu", info.arch, frozenset(have), None, "not in the matrix")
    return max(fits, key=lambda t: len(t.isa))


def targets_of(info: MachineInfo) -> list[Target]:
    """This machine's targets: its CPU, each distinct CUDA capability, Metal."""
    out = [cpu_target(info)]
    for sm in sorted({d.sm for d in info.cuda}):
        out.append(TARGETS.get(f"cuda-sm{sm}") or _cuda(sm, "this machine's GPU"))
    if info.metal:
        out.append(TARGETS["apple-metal"])
    return out
