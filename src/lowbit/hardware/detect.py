"""What this machine is: CPU model and ISA flags, cores, RAM, CUDA devices, installed runtimes.

Reads ``/proc/cpuinfo`` on Linux (``sysctl`` on macOS); imports no optional
runtime (versions come from package metadata) and touches CUDA only through
torch's own query, so calling it is cheap and safe anywhere.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from lowbit.utils.machine import cpu_model, ram_gb, usable_cores

#: Display name → the Linux cpuinfo flag (x86 "flags", ARM "Features") that shows it.
X86_ISA = {"AVX2": "avx2", "AVX-512": "avx512f", "AVX512-VNNI": "avx512_vnni", "AVX-VNNI": "avx_vnni",
           "AVX512-BF16": "avx512_bf16", "AVX512-FP16": "avx512_fp16", "AMX-INT8": "amx_int8", "AMX-BF16": "amx_bf16"}
ARM_ISA = {"NEON": "asimd", "dotprod": "asimddp", "i8mm": "i8mm", "BF16": "bf16", "SVE": "sve", "FP16": "asimdhp"}
_MAC_ARM = {"NEON": "hw.optional.neon", "dotprod": "hw.optional.arm.FEAT_DotProd", "i8mm": "hw.optional.arm.FEAT_I8MM",
            "BF16": "hw.optional.arm.FEAT_BF16", "FP16": "hw.optional.arm.FEAT_FP16"}

#: Runtimes whose presence changes what can be measured here (PyPI distribution names).
RUNTIME_PACKAGES = ("torch", "llama-cpp-python", "vllm", "bitsandbytes", "onnxruntime", "compressed-tensors",
                    "torchao", "transformers")


@dataclass
class CudaDevice:
    """One CUDA device: name, compute capability (e.g. ``"8.0"``) and memory in GiB."""

    name: str
    capability: str
    memory_gb: float

    @property
    def sm(self) -> int:
        """Capability as the ``sm_XY`` number (8.0 → 80)."""
        major, minor = self.capability.split(".")
        return int(major) * 10 + int(minor)


@dataclass
class MachineInfo:
    """Facts about this machine that decide which kernels can run.

    Attributes:
        cpu: CPU model name.
        arch: ``"x86"``, ``"arm"`` or the raw machine string.
        isa: display name → present, for the ISA extensions of ``arch``.
        cores: cores this process may use; ``ram_gb``: physical memory (GiB).
        cuda: CUDA devices; ``metal``: Apple GPU usable through torch MPS.
        runtimes: installed runtime package → version (None when absent).
    """

    cpu: str
    arch: str
    isa: dict[str, bool]
    cores: int
    ram_gb: float
    cuda: list[CudaDevice] = field(default_factory=list)
    metal: bool = False
    runtimes: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _sysctl(key: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def normalize_arch(machine: str) -> str:
    """``x86_64``/``AMD64`` → ``x86``; ``aarch64``/``arm64`` → ``arm``; others unchanged."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "i686", "i386"):
        return "x86"
    if m in ("aarch64", "arm64") or m.startswith("armv8"):
        return "arm"
    return m


def isa_flags(arch: str, flags: set[str]) -> dict[str, bool]:
    """ISA display names → present, from Linux cpuinfo flags."""
    table = X86_ISA if arch == "x86" else ARM_ISA if arch == "arm" else {}
    found = {name: flag in flags for name, flag in table.items()}
    if arch == "arm" and "NEON" in found:
        found["NEON"] = found["NEON"] or "neon" in flags
    return found


def _cuda_devices() -> list[CudaDevice]:
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(CudaDevice(p.name, f"{p.major}.{p.minor}", round(p.total_memory / 2**30, 1)))
    return out


def _metal() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def runtime_versions() -> dict[str, str | None]:
    """Installed version of each package in :data:`RUNTIME_PACKAGES` (None when absent)."""
    out: dict[str, str | None] = {}
    for pkg in RUNTIME_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def detect() -> MachineInfo:
    """Describe this machine."""
    arch = normalize_arch(platform.machine())
    if sys.platform == "darwin" and arch == "arm":
        isa = {name: _sysctl(key) == "1" for name, key in _MAC_ARM.items()}
        cpu = _sysctl("machdep.cpu.brand_string") or cpu_model()
    else:
        isa, cpu = isa_flags(arch, _cpu_flags()), cpu_model()
    return MachineInfo(cpu, arch, isa, usable_cores(), ram_gb(), _cuda_devices(), _metal(), runtime_versions())
