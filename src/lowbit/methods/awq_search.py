"""AWQ's numerical pieces: scale search, folding, clip search.

Following llm-awq ``auto_scale.py`` / ``auto_clip.py`` and AutoAWQ
(``shared/reference/methods-and-formats.md`` §2):

* scales ``s = E|x|^α`` (or, with ``duo``, ``E|x|^α / (s_W^(1−α) + 1e-4)``),
  normalised by ``√(max s · min s)``, for α on a grid of 20; each candidate's
  weights ``Q(W·s)/s`` are scored by the mean squared error of the inspected
  module's output against the float output;
* folding: the producer of the shared input (a norm: weight and bias; a
  linear: output rows and bias) is divided by ``s``, the consumers' input
  columns multiplied by it — the float function is unchanged;
* clipping: per output row and group, ``max |w|`` shrunk by ``i/20`` for
  ``i < 10``, scored on the group's partial outputs over sampled tokens.

The fake quantizer is the scheme itself (quantize then dequantize), so AWQ
scaling works before any grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lowbit.schemes.base import Scheme

N_GRID = 20
CLIP_STEPS = 10  # max_shrink 0.5 with 20 grid points
CLIP_TOKENS = 512


def fake_quant(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """``dequantize(quantize(w))`` on ``scheme``, in ``w``'s dtype."""
    return scheme.dequantize(scheme.quantize(w), w.dtype)


def weight_magnitude(weights: list[torch.Tensor], group: int) -> torch.Tensor:
    """AutoAWQ's ``s_W``: per input column, mean of ``|w|`` after scaling each group by its absmax."""
    w = torch.cat([x.float() for x in weights], dim=0)
    o, i = w.shape
    pad = (-i) % group
    wp = nn.functional.pad(w.abs(), (0, pad)).reshape(o, -1, group)
    wp = wp / wp.amax(dim=-1, keepdim=True).clamp(min=1e-12)
    return wp.reshape(o, -1)[:, :i].mean(0)


def candidate_scales(x_mean: torch.Tensor, alpha: float, w_mean: torch.Tensor | None) -> torch.Tensor:
    """One grid point's per-input-channel scales, normalised to geometric mid-range 1."""
    x_mean = x_mean.float()
    if w_mean is None:
        s = x_mean.pow(alpha).clamp(min=1e-4)
    else:
        s = (x_mean.pow(alpha) / (w_mean.pow(1 - alpha) + 1e-4)).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def search_scale(linears: list[nn.Linear], x_mean: torch.Tensor, scheme: Scheme,
                 score: Callable[[], float], duo: bool = False) -> tuple[torch.Tensor, float, float]:
    """Best scales for the linears sharing one input.

    Args:
        linears: consumers (float ``nn.Linear``); their weights are swapped
            temporarily and restored.
        x_mean: ``E|x|`` per input channel ``[I]``.
        scheme: the target grid.
        score: output error of the inspected module with the weights as they
            are now (lower is better).
        duo: AutoAWQ's ``duo_scaling``.

    Returns:
        ``(scales [I], best α, its error)``.
    """
    originals = [lin.weight.detach().clone() for lin in linears]
    group = scheme.column_group_size(originals[0].shape[1])
    w_mean = weight_magnitude(originals, group) if duo else None
    best = (torch.ones_like(x_mean, dtype=torch.float32), -1.0, float("inf"))
    try:
        for k in range(N_GRID):
            alpha = k / N_GRID
            s = candidate_scales(x_mean, alpha, w_mean)
            for lin, w in zip(linears, originals, strict=True):
                lin.weight.data = (fake_quant(w.float() * s, scheme) / s).to(w.dtype)
            err = score()
            if err < best[2]:
                best = (s, alpha, err)
    finally:
        for lin, w in zip(linears, originals, strict=True):
            lin.weight.data = w
    return best


def fold_scales(prev: nn.Module, consumers: list[nn.Linear], s: torch.Tensor) -> None:
    """Divide ``prev``'s output channels by ``s`` and multiply the consumers' input columns by it.

    ``prev`` is a norm (weight/bias ``[I]``) or a linear whose output rows feed
    the consumers one to one.
    """
    s = s.to(consumers[0].weight.dtype)
    with torch.no_grad():
        if isinstance(prev, nn.Linear):
            prev.weight.div_(s.view(-1, 1))
        else:
            prev.weight.div_(s)
        bias = getattr(prev, "bias", None)
        if bias is not None:
            bias.div_(s)
        for lin in consumers:
            lin.weight.mul_(s.view(1, -1))


def can_fold(prev: nn.Module | None, consumers: list[nn.Linear]) -> bool:
    """Whether a per-channel scale can pass from ``prev`` to ``consumers`` exactly.

    A linear producer must emit exactly the channels the consumers read (in
    GQA models ``v_proj`` emits fewer than ``o_proj`` reads: not foldable). A
    norm producer needs a per-channel weight of the consumers' width.
    """
    if prev is None or not consumers:
        return False
    width = consumers[0].in_features
    if any(c.in_features != width for c in consumers):
        return False
    if isinstance(prev, nn.Linear):
        return prev.out_features == width
    weight = getattr(prev, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.numel() == width


def sample_tokens(x: torch.Tensor, n: int = CLIP_TOKENS) -> torch.Tensor:
    """About ``n`` rows of ``x`` ``[tokens, I]`` taken at an even stride."""
    step = max(1, x.shape[0] // n)
    return x[::step][:n]


def search_clip(w: torch.Tensor, x: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """Per output row and group, the clipping bound ``max |w|`` that minimises the group's output error.

    Args:
        w: weight ``[O, I]`` (already scaled).
        x: sampled inputs ``[n, I]`` (already divided by the scales).
        scheme: target grid; ``G`` is its column group size.

    Returns:
        bounds ``[O, n_g]``.
    """
    w = w.float()
    o, i = w.shape
    g = scheme.column_group_size(i)
    pad = (-i) % g
    wg = nn.functional.pad(w, (0, pad)).reshape(o, -1, g)  # [O, n_g, G]
    xg = nn.functional.pad(x.float(), (0, pad)).reshape(x.shape[0], -1, g).transpose(0, 1)  # [n_g, n, G]
    org_max = wg.abs().amax(dim=-1)  # [O, n_g]
    best_max = org_max.clone()
    best_err = torch.full_like(org_max, float("inf"))
    for k in range(CLIP_STEPS):
        bound = org_max * (1 - k / N_GRID)
        clipped = torch.maximum(torch.minimum(wg, bound.unsqueeze(-1)), -bound.unsqueeze(-1))
        q = fake_quant(clipped.reshape(o, -1)[:, :i], scheme)
        qg = nn.functional.pad(q, (0, pad)).reshape(o, -1, g)
        # Each group's partial-output error x_g (q_g − w_g), squared in place: one
        # product and one pass instead of two products, a difference and a square.
        err = torch.bmm(xg, (qg - wg).permute(1, 2, 0)).square_().mean(dim=1).t()  # [O, n_g]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_max = torch.where(better, bound, best_max)
    return best_max


def apply_clip(w: torch.Tensor, bounds: torch.Tensor, group: int) -> torch.Tensor:
    """``w`` ``[O, I]`` clamped to ``±bounds[o, g]`` per row and group."""
    o, i = w.shape
    b = bounds.repeat_interleave(group, dim=1)[:, :i].to(w.dtype)
    return torch.maximum(torch.minimum(w, b), -b)
