"""Scoring a calibration set *before* quantizing: how far is it from the evaluation text?

Three numbers, each cheap (one float forward over a few windows at most):

* ``token_jsd`` — Jensen–Shannon divergence (bits, 0–1) between the unigram
  token distributions of the calibration and evaluation windows;
* ``ngram_overlap`` — fraction of the calibration's 16-token sequences that also
  occur in the evaluation text: near-duplicates the document-level overlap
  check misses (above :data:`OVERLAP_WARN` the eval set is partly calibrated on);
* ``act_distance`` — what calibration-based methods actually read: the per-channel
  mean squared input of every quantized linear (the diagonal of GPTQ's Hessian,
  AWQ's activation scale), compared as the RMS of the natural-log ratio between
  the two texts, averaged over linears (0 = identical statistics; 0.69 = off by 2×
  on a typical channel).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lowbit.data.windows import TokenSet

NGRAM = 16
#: n-gram overlap above which calibration and evaluation text are said to overlap.
OVERLAP_WARN = 0.02
#: Windows of each text run through the model for the activation statistics.
ACT_WINDOWS = 4


def token_jsd(a: torch.Tensor, b: torch.Tensor, vocab: int) -> float:
    """Jensen–Shannon divergence (bits) of the unigram distributions of token ids ``a`` and ``b``."""
    size = max(vocab, int(a.max()) + 1, int(b.max()) + 1)
    p = torch.bincount(a.reshape(-1), minlength=size).double()
    q = torch.bincount(b.reshape(-1), minlength=size).double()
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(x: torch.Tensor) -> float:
        nz = x > 0
        return float((x[nz] * (x[nz] / m[nz]).log2()).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def ngram_overlap(calib: torch.Tensor, eval_ids: torch.Tensor, n: int = NGRAM) -> float:
    """Fraction of ``calib``'s n-grams (within windows) that occur anywhere in ``eval_ids``."""
    def grams(w: torch.Tensor) -> list[tuple[int, ...]]:
        out = []
        for row in w.tolist():
            out += [tuple(row[i : i + n]) for i in range(0, len(row) - n + 1)]
        return out

    c = grams(calib)
    if not c:
        return 0.0
    e = set(grams(eval_ids))
    return sum(g in e for g in c) / len(c)


@torch.inference_mode()
def input_second_moments(model: nn.Module, targets: dict[str, nn.Linear], ts: TokenSet,
                         windows: int = ACT_WINDOWS) -> dict[str, torch.Tensor]:
    """Per-channel mean squared input of each target linear over ``windows`` windows of ``ts``."""
    sums = {n: torch.zeros(lin.in_features, dtype=torch.float64) for n, lin in targets.items()}
    count = {"tokens": 0}
    handles = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def fwd(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            x = inp[0].reshape(-1, inp[0].shape[-1]).double()
            sums[name] += x.pow(2).sum(0).cpu()
        return fwd

    for n, lin in targets.items():
        handles.append(lin.register_forward_hook(hook(n)))
    dev = next(model.parameters()).device
    try:
        for w in ts.windows[:windows]:
            model(input_ids=w.unsqueeze(0).to(dev), use_cache=False)
            count["tokens"] += int(w.numel())
    finally:
        for h in handles:
            h.remove()
    return {n: s / max(1, count["tokens"]) for n, s in sums.items()}


def act_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Mean over linears of the RMS natural-log ratio of per-channel second moments."""
    out = []
    for n in a:
        x, y = a[n], b[n]
        eps = 1e-6 * float(torch.cat([x, y]).mean().clamp(min=1e-30))
        out.append(float(((x + eps).log() - (y + eps).log()).pow(2).mean().sqrt()))
    return sum(out) / len(out) if out else math.nan


def score(model: nn.Module, targets: dict[str, nn.Linear], calib: TokenSet, eval_set: TokenSet, vocab: int,
          eval_moments: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The three distances of ``calib`` to ``eval_set`` (module docstring), and the overlap verdict."""
    moments = eval_moments if eval_moments is not None else input_second_moments(model, targets, eval_set)
    overlap = ngram_overlap(calib.windows, eval_set.windows)
    return {
        "token_jsd": token_jsd(calib.windows, eval_set.windows, vocab),
        "ngram_overlap": overlap,
        "act_distance": act_distance(input_second_moments(model, targets, calib), moments),
        "overlaps_eval": overlap >= OVERLAP_WARN,
        "calib_tokens": calib.tokens,
    }
