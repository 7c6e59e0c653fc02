"""Hardware: what this machine is, which scheme runs accelerated on which target, and how to ask.

* :func:`detect` — CPU model, ISA flags, cores, RAM, CUDA devices, installed runtimes;
* :mod:`~lowbit.hardware.targets` — named deployment targets (``cpu-x86-avx512vnni``, ``cuda-sm80``, …);
* :mod:`~lowbit.hardware.matrix` — the support matrix as data, one source per row;
* :func:`hw_report` / :func:`target_fields` — what ``lowbit hw`` prints and what
  ``lowbit compare`` adds to each row.
"""

from __future__ import annotations

from typing import Any

from lowbit.hardware.detect import MachineInfo, detect
from lowbit.hardware.matrix import ACCELERATED, SCHEMES, UNSUPPORTED, best_status, scheme_key, support
from lowbit.hardware.targets import TARGETS, Target, get_target, targets_of


def support_table(target: Target) -> list[dict[str, Any]]:
    """For every scheme: the best status on ``target`` and each runtime's verdict with its source."""
    out = []
    for key, desc in SCHEMES.items():
        verdicts = support(key, target)
        out.append({
            "scheme": key, "description": desc, "best": best_status(verdicts),
            "runtimes": [{"runtime": v.runtime, "status": v.status, "note": v.row.note if v.row else "no path listed",
                          "source": v.row.source if v.row else None} for v in verdicts],
        })
    return out


def hw_report(target: str | None = None) -> dict[str, Any]:
    """``lowbit hw``: this machine, its int8 kernel, and the support table for a target (default: this machine's)."""
    from lowbit.runtime.w8a8 import int8_kernel_name, int8_kernel_status

    info = detect()
    chosen = [get_target(target)] if target else targets_of(info)
    reason = int8_kernel_status("cpu")
    return {
        "machine": info.as_dict(),
        "int8_gemm_cpu": {"kernel": int8_kernel_name("cpu"), "available": reason is None, "reason": reason},
        "targets_here": [t.name for t in targets_of(info)],
        "targets": [{"name": t.name, "kind": t.kind, "summary": t.summary, "asked": target is not None,
                     "support": support_table(t)} for t in chosen],
    }


def target_here(device_type: str = "cpu") -> Target:
    """This machine's target for computing on ``device_type`` (``"cpu"`` or ``"cuda"``)."""
    found = targets_of(detect())
    return next((t for t in found if t.kind == device_type), found[0])


def target_fields(scheme: object, target: Target) -> dict[str, Any]:
    """Row fields of ``lowbit compare``: how the variant's scheme fares on ``target``."""
    key = scheme_key(scheme)
    verdicts = support(key, target) if key else []
    best = best_status(verdicts) if verdicts else UNSUPPORTED
    return {
        "target": target.name,
        "target_scheme": key,
        "target_support": best,
        "target_runtimes": [v.runtime for v in verdicts if v.status == ACCELERATED],
        "no_accelerated_path": best != ACCELERATED,
    }


__all__ = ["TARGETS", "MachineInfo", "Target", "detect", "get_target", "hw_report", "support_table",
           "target_fields", "target_here", "targets_of"]
