"""``gguf:<file type>+gptq``: llama.cpp's per-tensor types, each linear's codes chosen by GPTQ.

The type of every tensor is the one the plain mixture gives it (same rules,
same fallbacks); only how the codes inside its blocks are chosen changes.
Every decoder-block linear whose type has a column-wise grid (the legacy
32-blocks and the k-quants Q2_K … Q6_K) is solved by GPTQ through the shared
calibration pipeline (:func:`lowbit.methods.gptq.solve_in_blocks`), stage by
stage, each stage seeing the blocks before it already quantized:

* on a k-quant the grid (super-scales, sub-scales, mins) is llama.cpp's own
  fit of the original weights, with the importance matrix when there is one,
  held fixed while GPTQ picks each column's code (static groups: a
  sub-scale hangs off a super-scale fitted over 256 columns, so it cannot
  follow the compensated weights);
* on a legacy type each 32-column block is fitted by ``quantize_row_*_ref``
  from the weights as compensated so far (GPTQ's usual groups). That formula
  takes no importance matrix; the Hessian, whose diagonal is the imatrix
  statistic, already weights the error.

Token embeddings, the output head and tensors whose type has no column-wise
grid (F16 fallbacks) are quantized as the plain mixture does them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowbit.calibrate import CalibrationPipeline
from lowbit.methods.base import QuantContext
from lowbit.methods.gptq import solve_in_blocks
from lowbit.methods.gptq_solver import GPTQConfig
from lowbit.schemes.base import QuantizedTensor
from lowbit.schemes.gguf.scheme import GGUFScheme


def gptq_targets(ctx: QuantContext, wanted: dict[str, nn.Module], types: dict[str, str]) -> dict[str, nn.Linear]:
    """The modules GPTQ solves: decoder-block linears whose planned type (``types``: module → GGUF type)
    has a column-wise grid."""
    prefix = ctx.loaded.arch.blocks + "."
    return {m: mod for m, mod in wanted.items()
            if isinstance(mod, nn.Linear) and m.startswith(prefix) and GGUFScheme(types[m]).has_column_grid}


def solve_mixture(ctx: QuantContext, targets: dict[str, nn.Linear], types: dict[str, str],
                  importance: Callable[[str], torch.Tensor | None],
                  install: Callable[[str, QuantizedTensor], None]) -> tuple[float, dict[str, Any]]:
    """GPTQ on ``targets``, each on its own type's grid; returns (calibration seconds, the run's record).

    Args:
        ctx: the method's context.
        targets: from :func:`gptq_targets`.
        types: module → GGUF type.
        importance: module → importance vector (None: none); used by the k-quants' up-front fits.
        install: puts one result in place.
    """
    calib = ctx.require_calib("gguf +gptq")
    schemes = {m: GGUFScheme(types[m]) for m in targets}

    def fit_importance(module: str) -> torch.Tensor | None:
        # legacy blocks are refitted during the solve by a formula that takes none
        return importance(module) if schemes[module].needs_static_groups else None

    pipe = CalibrationPipeline(ctx.loaded, calib, targets, ctx.device)
    record = solve_in_blocks(ctx, pipe, GPTQConfig(), schemes.__getitem__, importance_of=fit_importance,
                             install=install)
    return pipe.seconds, {**record, "solved": len(targets), "calib_tokens": calib.tokens}


__all__ = ["gptq_targets", "solve_mixture"]
