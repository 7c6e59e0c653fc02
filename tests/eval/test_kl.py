"""KL from the compact reference on hand-built distributions, including near-certain ones."""

from types import SimpleNamespace

import torch

from lowbit.data.windows import TokenSet
from lowbit.eval.kl import softmax_summary
from lowbit.eval.metrics import token_metrics
from lowbit.eval.reference import compute_reference


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given, to test the metric arithmetic alone."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        # Each window's tokens are its own index, so a batch finds its logits.
        return SimpleNamespace(logits=self.logits[input_ids[:, 0]].clone())


def _full(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    lp, lq = p_logits.double().log_softmax(-1), q_logits.double().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)[:, :-1]


def test_near_certain_tokens_have_finite_exact_kld() -> None:
    # The top-16 hold all but ~1e-11 of the mass: 1 - Σtop cancels to 0 in
    # float32, which once turned the KL into inf. The tail must come out exact.
    g = torch.Generator().manual_seed(0)
    v, t = 300, 9
    base = torch.randn(2, t, v, generator=g)
    base[..., :16] += 30.0
    perturbed = base + 0.05 * torch.randn(2, t, v, generator=g)
    data = TokenSet("synthetic", torch.arange(2).unsqueeze(1).expand(2, t).contiguous(), 1)
    ref = compute_reference(FixedLogits(base), data, k=16, m=32)
    assert bool((ref.tail_logp < -20).all()) and bool(torch.isfinite(ref.tail_logp).all())
    m = token_metrics(FixedLogits(perturbed), data, ref)
    assert m.kld is not None and bool(torch.isfinite(m.kld).all())
    # float32 logits near 30 carry ~2e-6 of rounding: that, not the compaction, sets the tolerance.
    torch.testing.assert_close(m.kld.double(), _full(base, perturbed), rtol=1e-2, atol=1e-5)


def test_identical_logits_give_exactly_zero() -> None:
    logits = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(1)) * 4
    data = TokenSet("synthetic", torch.zeros(1, 5, dtype=torch.int64), 1)
    ref = compute_reference(FixedLogits(logits), data, k=8, m=16)
    m = token_metrics(FixedLogits(logits), data, ref)
    assert m.kld is not None and torch.equal(m.kld, torch.zeros_like(m.kld))


def test_softmax_summary_matches_whole_vocabulary_reductions() -> None:
    # 21 positions: not a multiple of the CPU chunk, so the last chunk is partial.
    g = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(3, 7, 500, generator=g)
    logits[0, 0, 7] = 200.0  # every other token > 87 nats below: the chunked tail underflows to 0
    top = torch.topk(logits, 5, dim=-1).indices
    before = logits.clone()
    s = softmax_summary(logits, top)
    assert torch.equal(logits, before)
    torch.testing.assert_close(s.lse, torch.logsumexp(logits, -1), rtol=0, atol=1e-5)
    assert torch.equal(s.argmax, logits.argmax(-1))
    exact = torch.logsumexp(logits.double().scatter(-1, top, float("-inf")), -1) - torch.logsumexp(logits.double(), -1)
    assert s.tail_logp is not None and bool(torch.isfinite(s.tail_logp).all())
    assert float(s.tail_logp[0, 0]) < -150  # finite only through the exact fallback
    torch.testing.assert_close(s.tail_logp.double(), exact, rtol=0, atol=1e-4)
    assert softmax_summary(logits).tail_logp is None
