"""Facts about the machine a measurement ran on (for the JSON report)."""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gb() -> float:
    """Total physical memory in GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """Name of the first CUDA device, or None. Only called when a report is made."""
    import torch

    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return None


def machine_info() -> dict[str, Any]:
    """The ``machine`` block of the JSON report."""
    return {"cpu": cpu_model(), "cores": usable_cores(), "ram_gb": ram_gb(), "gpu": gpu_name()}
