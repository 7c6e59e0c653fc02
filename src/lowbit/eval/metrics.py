"""Per-token comparison of a model against the float reference, and its summary.

For each scored token: the model's NLL of the true next token, the KL
divergence KL(float ‖ model) over the reference's top-k plus one tail bucket,
and whether both models' most likely token agree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.eval.kl import kl_from_compact, softmax_summary
from lowbit.eval.reference import Reference, iter_logits
from lowbit.eval.stats import clustered_mean, percentile

@dataclass
class TokenMetrics:
    """Per-token results of one model, shape ``[windows, window_tokens - 1]``."""

    nll: torch.Tensor
    kld: torch.Tensor | None
    top1: torch.Tensor | None
    tokens_per_s: float


@torch.inference_mode()
def token_metrics(model: nn.Module, data: TokenSet, ref: Reference | None, desc: str = "evaluate") -> TokenMetrics:
    """Evaluate ``model`` on ``data``; KLD and top-1 need ``ref``."""
    w = data.windows
    n, t = w.shape
    nll = torch.empty(n, t - 1)
    kld = torch.empty(n, t - 1) if ref is not None else None
    top1 = torch.empty(n, t - 1, dtype=torch.bool) if ref is not None else None
    start = time.perf_counter()
    for s, logits in iter_logits(model, w, desc):
        b = logits.shape[0]
        dev = logits.device
        targets = w[s : s + b, 1:].to(dev)
        window = ref.window_slice(s, s + b, dev) if ref is not None else None
        # Same function, same shapes as the reference, so identical models compare bit-identically.
        summary = softmax_summary(logits, window[0] if window is not None else None)
        lse = summary.lse
        nll[s : s + b] = -(logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse).cpu()
        if window is not None and kld is not None and top1 is not None and summary.tail_logp is not None:
            top_idx, top_logp, tail_logp, tail_idx, tail_sample_logp = window
            top1[s : s + b] = (summary.argmax == top_idx[..., 0]).cpu()
            q_top = logits.gather(-1, top_idx) - lse.unsqueeze(-1)
            q_samples = logits.gather(-1, tail_idx) - lse.unsqueeze(-1)
            kld[s : s + b] = kl_from_compact(q_top, summary.tail_logp, q_samples, top_logp, tail_logp,
                                             tail_sample_logp).cpu()
    elapsed = time.perf_counter() - start
    return TokenMetrics(nll, kld, top1, n * t / elapsed)


def summarize(m: TokenMetrics, ref: Reference | None) -> dict[str, Any]:
    """The metric fields of one JSON result row."""
    nll = clustered_mean(m.nll)
    row: dict[str, Any] = {
        "ppl": math.exp(nll.mean),
        "ppl_ci": [math.exp(nll.lo), math.exp(nll.hi)],
        "tokens_per_s": m.tokens_per_s,
    }
    if ref is None or m.kld is None or m.top1 is None:
        return row
    ref_ppl = ref.ppl
    # Paired: per-token NLL differences, then the interval of their mean
    # mapped through ppl_q - ppl_f = ppl_f * (exp(d) - 1).
    d = clustered_mean(m.nll.double() - ref.nll.double())
    kld = clustered_mean(m.kld)
    top1 = clustered_mean(m.top1.double())
    row.update({
        "delta_ppl": math.exp(nll.mean) - ref_ppl,
        "delta_ppl_ci": [ref_ppl * math.expm1(d.lo), ref_ppl * math.expm1(d.hi)],
        "delta_ppl_mde": ref_ppl * math.expm1(d.mde),
        "kld_mean": kld.mean,
        "kld_ci": [kld.lo, kld.hi],
        "kld_p50": percentile(m.kld, 50),
        "kld_p90": percentile(m.kld, 90),
        "kld_p99": percentile(m.kld, 99),
        "kld_max": float(m.kld.max()),
        "top1_agreement": top1.mean,
        "top1_ci": [top1.lo, top1.hi],
    })
    return row
