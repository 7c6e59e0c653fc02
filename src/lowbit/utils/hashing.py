"""Stable content hashes for cache keys and the JSON report."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def sha256_json(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object, keys sorted."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_tokens(windows: torch.Tensor) -> str:
    """SHA-256 of token windows (int64 [n, T]) and their shape, independent of device and stride.

    The shape is hashed too: one token stream cut into 4 × 64 or 2 × 128
    windows is a different evaluation set (different context per position).
    """
    h = hashlib.sha256(str(tuple(windows.shape)).encode())
    h.update(windows.detach().cpu().contiguous().to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Cheap but content-sensitive fingerprint of a model's weights.

    Hashing every byte of a 500 MB model costs seconds on every run; a few
    strided samples plus the sum of each tensor catch any real change to the
    weights (a different checkpoint, a quantized copy) at a fraction of that.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if flat.numel() == 0:
            continue
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].to(torch.float64).cpu()
        h.update(sample.numpy().tobytes())
        h.update(repr(float(flat.to(torch.float64).sum())).encode())
    return h.hexdigest()
