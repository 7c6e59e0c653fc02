"""KL divergence from the compact reference (top-k + tail bucket + sampled tail tokens)."""

from __future__ import annotations

import torch


def tail_logp_(logits: torch.Tensor, top_idx: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """log of the probability outside ``top_idx``, by a log-sum-exp over the other entries.

    Computed directly rather than as ``log(1 − Σ top)``, which cancels to 0 (and
    then to -inf) when the top-k holds all but 1e-7 of the mass. Overwrites
    ``logits`` in place (the caller is done with them) to spare a 100 MB copy
    per 512-token window. Reference and model both use this function, so
    identical models give bit-identical tails and a KLD of exactly 0.
    """
    logits.scatter_(-1, top_idx, float("-inf"))
    return torch.logsumexp(logits, dim=-1) - lse


def kl_from_compact(q_top: torch.Tensor, q_tail: torch.Tensor, q_samples: torch.Tensor, top_logp: torch.Tensor,
                    tail_logp: torch.Tensor, tail_sample_logp: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ model) per position from the two models' compact log-probabilities.

    KL = Σ_top p·log(p/q)  +  P·log(P/Q)  +  P·KL(p̃ ‖ q̃), where P, Q are the
    two models' mass outside the reference's top-k and p̃, q̃ the renormalised
    tails. The first two terms are exact. The last is estimated from the
    stored tail tokens, drawn from p̃, as the mean of ``r − 1 − log r`` with
    ``r = q̃/p̃``: ``r − 1`` has mean exactly 0 under p̃, so this is unbiased,
    every term is ≥ 0, and its variance vanishes as the model approaches the
    reference (a plain ``mean(log p̃/q̃)`` was 20% off at KLD 1e-3 on a
    257-token model).

    Args:
        q_top: model log-probs of the reference's top-k tokens ``[..., k]``.
        q_tail: model log-mass outside them ``[...]`` (see :func:`tail_logp_`).
        q_samples: model log-probs of the stored tail tokens ``[..., m]``.
        top_logp, tail_logp, tail_sample_logp: the reference's counterparts.
    """
    kl_top = (top_logp.exp() * (top_logp - q_top)).sum(-1).double()
    log_p_tail, log_q_tail = tail_logp.double(), q_tail.double()
    p_tail = log_p_tail.exp()
    grouped = p_tail * (log_p_tail - log_q_tail)
    log_r = (q_samples.double() - log_q_tail.unsqueeze(-1)) - (tail_sample_logp.double() - log_p_tail.unsqueeze(-1))
    within_tail = (torch.expm1(log_r) - log_r).mean(-1)
    # A tail token the model gives exactly zero probability (log q = -inf)
    # makes r = 0: r − 1 − log r = +inf is the honest answer, not a NaN.
    return (kl_top + torch.where(p_tail > 0, grouped + p_tail * within_tail, 0.0)).float()
