"""Choosing where to compute. Only called by commands, never at import."""

from __future__ import annotations

import torch

from lowbit.errors import LowbitError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device if one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LowbitError(f"--device {name} asked for, but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise LowbitError(f"--device must be auto, cpu or cuda[:N], got '{name}'")
    return torch.device(name)
