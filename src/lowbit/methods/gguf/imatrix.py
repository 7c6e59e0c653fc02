"""Importance matrices: mean squared input activation per column, per linear.

llama.cpp's ``llama-imatrix`` runs calibration text through the float model
and, for every matrix multiplication whose weight is a ``blk.*`` tensor,
accumulates Σx² per input column and the number of rows (tokens);
``llama-quantize`` divides the two. :func:`collect_imatrix` computes the same
statistic with forward pre-hooks on the float model's linears, and
:mod:`.imatrix_file` reads and writes both of llama.cpp's file formats, so an
imatrix made here works in llama.cpp and one made there works here.

Collection goes through one small boundary,
``mean_sq_inputs(loaded, calib, linears, device) → {name: (Σx², tokens)}``,
implemented with the shared layer-by-layer pipeline (``lowbit.calibrate``):
the callback only gathers statistics and never quantizes, so every block sees
the float model's activations, as llama-imatrix does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel


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


def mean_sq_inputs(loaded: LoadedModel, calib: TokenSet, linears: dict[str, nn.Linear],
                   device: torch.device) -> dict[str, tuple[np.ndarray, int]]:
    """Σx² per input column and the token count of every linear in ``linears`` (float activations)."""
    from lowbit.calibrate import BlockContext, run_pipeline

    if calib.windows.numel() == 0:
        raise LowbitError("the calibration set is empty; an importance matrix needs calibration text (--calib)")
    out: dict[str, tuple[np.ndarray, int]] = {}

    def on_block(ctx: BlockContext) -> None:
        if ctx.targets:
            for name, st in ctx.collect(list(ctx.targets), hessian=False).items():
                out[name] = (st.sum_sq.double().cpu().numpy(), int(st.tokens))

    run_pipeline(loaded, calib, linears, on_block, device, description="imatrix")
    missing = sorted(set(linears) - set(out))
    if missing:
        raise LowbitError(f"imatrix: no calibration inputs reached '{missing[0]}' (is it outside the model's blocks?)")
    return out


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


__all__ = ["Imatrix", "check_against_model", "collect_imatrix", "mean_sq_inputs"]
