import copy

import pytest
import torch

from lowbit.data import prepare_data
from lowbit.eval.metrics import summarize, token_metrics
from lowbit.eval.reference import compute_reference, iter_logits, load_or_compute_reference
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    data = prepare_data(loaded.tokenizer, "builtin:python-docs", None, eval_tokens=1024, calib_samples=1,
                        window_tokens=128)
    return loaded, data, compute_reference(loaded.model, data.eval, k=16, m=32)


def _full_kld(a: torch.nn.Module, b: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for (_, la), (_, lb) in zip(iter_logits(a, windows, "a"), iter_logits(b, windows, "b"), strict=True):
            pa, pb = la.log_softmax(-1), lb.log_softmax(-1)
            out.append((pa.exp() * (pa - pb)).sum(-1))
    return torch.cat(out)


def test_identical_model_has_zero_kld_and_full_agreement(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, data, ref = setup
    m = token_metrics(loaded.model, data.eval, ref)
    assert m.kld is not None and m.top1 is not None
    assert torch.equal(m.kld, torch.zeros_like(m.kld))
    assert bool(m.top1.all())
    assert torch.equal(m.nll, ref.nll)
    row = summarize(m, ref)
    assert row["delta_ppl"] == 0 and row["kld_mean"] == 0 and row["top1_agreement"] == 1


@pytest.mark.parametrize("variant", ["rtn:w8ch", "rtn:w4g64", "rtn:w2g32"])
def test_compaction_error_is_bounded(setup, variant: str) -> None:  # type: ignore[no-untyped-def]
    # Top-16 of a 257-token vocabulary + 32 sampled tail tokens (a far harder
    # compaction than top-128 of 49k): the mean KLD must stay within 2% of the
    # exact full-vocabulary value (measured: 0.1–0.5%).
    loaded, data, ref = setup
    q = copy.deepcopy(loaded)
    quantize_model(q, resolve_variant(variant), None)
    m = token_metrics(q.model, data.eval, ref)
    full = _full_kld(loaded.model, q.model, data.eval.windows)
    assert m.kld is not None
    assert float(m.kld.mean()) > 0
    assert float(m.kld.mean()) == pytest.approx(float(full.mean()), rel=0.02)


def test_different_models_have_positive_kld_and_worse_ppl(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, data, ref = setup
    q = copy.deepcopy(loaded)
    quantize_model(q, resolve_variant("rtn:w2g32"), None)
    row = summarize(token_metrics(q.model, data.eval, ref), ref)
    assert row["kld_mean"] > 0.01 and row["kld_ci"][0] > 0
    assert row["top1_agreement"] < 1
    lo, hi = row["delta_ppl_ci"]
    assert lo <= row["delta_ppl"] <= hi


def test_reference_cache_round_trips(setup) -> None:  # type: ignore[no-untyped-def]
    loaded, data, _ = setup
    a = load_or_compute_reference(loaded.model, data.eval, k=8, m=4)
    b = load_or_compute_reference(loaded.model, data.eval, k=8, m=4)  # from disk
    for field in ("nll", "top_idx", "top_logp", "tail_logp", "tail_idx", "tail_sample_logp"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.top_idx.dtype == torch.int64
