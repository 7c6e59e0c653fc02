"""Importance matrices: mean squared input activation per column, per linear.

llama.cpp's ``llama-imatrix`` runs calibration text through the float model
and, for every matrix multiplication whose weight is a ``blk.*`` tensor,
accumulates Σx² per input column and the number of rows (tokens);
``llama-quantize`` divides the two. :func:`collect_imatrix` computes the same
statistic with forward pre-hooks on the float model's linears, and
:mod:`.imatrix_file` reads and writes both of llama.cpp's file formats, so an
imatrix made here works in llama.cpp and one made there works here.

Collection is written against one small boundary,
``mean_sq_inputs(loaded, calib, linears, device) → {name: (Σx², tokens)}``,
implemented with hooks on a plain float forward (activations of the float
model, as llama-imatrix uses). The shared layer-by-layer pipeline
(``lowbit.calibrate``) computes the same numbers with less memory; swapping
means replacing that one function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel
from lowbit.utils.progress import track

#: Windows per forward while collecting (memory/speed trade-off on CPU).
BATCH = 4


@dataclass
class Imatrix:
    """Per-tensor importance, llama.cpp-named (``blk.3.ffn_down.weight``).

    Attributes:
        sums: Σx² per input column, float64 ``[n]`` (ggml's ``in_sum2``).
        counts: rows (tokens) accumulated per tensor.
        chunks: calibration chunks (windows) processed.
        chunk_size: tokens per chunk.
        datasets: where the calibration text came from.
    """

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    chunk_size: int = 0
    datasets: list[str] = field(default_factory=list)

    def mean(self, name: str) -> np.ndarray:
        """E[x²] per column as float32, the way llama-quantize divides (1 where nothing was seen)."""
        count = self.counts.get(name, 0)
        if count <= 0:
            return np.ones_like(self.sums[name], dtype=np.float32)
        return (self.sums[name].astype(np.float32) / np.float32(count)).astype(np.float32)

    def __contains__(self, name: object) -> bool:
        return name in self.sums

    def __len__(self) -> int:
        return len(self.sums)


@contextmanager
def _hooks(linears: dict[str, nn.Module], sums: dict[str, torch.Tensor], counts: dict[str, int]) -> Iterator[None]:
    def make(name: str):  # type: ignore[no-untyped-def]
        def pre_hook(_mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).double()
            sums[name] += (x * x).sum(0).to(sums[name].device)
            counts[name] += x.shape[0]
        return pre_hook

    handles = [mod.register_forward_pre_hook(make(n)) for n, mod in linears.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def mean_sq_inputs(loaded: LoadedModel, calib: TokenSet, linears: dict[str, nn.Linear],
                   device: torch.device) -> dict[str, tuple[np.ndarray, int]]:
    """Σx² per input column and the token count of every linear in ``linears`` (float model forward)."""
    if calib.windows.numel() == 0:
        raise LowbitError("the calibration set is empty; an importance matrix needs calibration text (--calib)")
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    counts = dict.fromkeys(linears, 0)
    windows = calib.windows
    with _hooks(linears, sums, counts), torch.inference_mode():
        for s in track(range(0, windows.shape[0], BATCH), "imatrix: calibration windows"):
            loaded.model(input_ids=windows[s:s + BATCH].to(device), use_cache=False)
    return {n: (sums[n].numpy(), counts[n]) for n in linears}


def collect_imatrix(loaded: LoadedModel, calib: TokenSet, linears: dict[str, nn.Linear], names: dict[str, str],
                    device: torch.device) -> Imatrix:
    """An :class:`Imatrix` of ``linears`` from ``calib``, keyed by their GGUF names (``names``: module → GGUF)."""
    stats = mean_sq_inputs(loaded, calib, linears, device)
    im = Imatrix(chunks=int(calib.windows.shape[0]), chunk_size=calib.window_tokens, datasets=[calib.source])
    for module, (s, c) in stats.items():
        gname = names[module]
        im.sums[gname], im.counts[gname] = s, int(c)
    return im


def check_against_model(im: Imatrix, expected: dict[str, int], source: str) -> list[str]:
    """Validate an imatrix for a model: ``expected`` maps GGUF tensor names to input widths.

    Raises LowbitError for an entry whose size does not match its tensor, for
    non-finite values, and when no entry names a tensor of this model (another
    model's imatrix). Returns the expected tensors the imatrix lacks (llama.cpp
    quantizes those without one).
    """
    matched = [n for n in im.sums if n in expected]
    if not matched:
        some = ", ".join(sorted(im.sums)[:3])
        raise LowbitError(f"imatrix {source} names none of this model's tensors (it has e.g. {some}; "
                          f"expected e.g. {', '.join(sorted(expected)[:3])}): is it for another model?")
    for name in matched:
        n = im.sums[name].shape[0]
        if n != expected[name]:
            raise LowbitError(f"imatrix {source}: entry '{name}' has {n} values, but the tensor has "
                              f"{expected[name]} input columns")
        if not np.isfinite(im.sums[name]).all():
            raise LowbitError(f"imatrix {source}: entry '{name}' contains NaN/Inf values")
    return sorted(set(expected) - set(matched))


__all__ = ["BATCH", "Imatrix", "check_against_model", "collect_imatrix", "mean_sq_inputs"]
