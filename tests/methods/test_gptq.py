"""GPTQ: conformance, the solve's numerics, act-order / static groups, bad input."""

from __future__ import annotations

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant, select_targets
from lowbit.methods.gptq_solver import GPTQConfig, gptq_solve, split_rows
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from lowbit.schemes import parse_scheme
from tests.conformance import MethodConformance, weights


class TestGPTQConformance(MethodConformance):
    variants = ["gptq:w4g64", "gptq:w3g64+static=off", "gptq:w4g64+act=off+nosequential"]
    needs_calib = True


class TestGPTQOnGPT2(MethodConformance):
    variants = ["gptq:w4g32asym+block=16"]
    model = "tiny-gpt2"
    needs_calib = True


def correlated_inputs(n: int, i: int, seed: int = 0) -> torch.Tensor:
    """Inputs ``[n, I]`` with strongly correlated channels and a few large ones, like LLM activations.

    The mixing (the distribution) is fixed; ``seed`` draws the samples.
    """
    mix = torch.randn(i // 4, i, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, i // 4, generator=g)
    x = z @ mix + 0.1 * torch.randn(n, i, generator=g)
    x[:, :4] *= 8.0
    return x


def output_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    return float(((w - wq) @ x.t()).norm())


@pytest.mark.parametrize("spec", ["w4g64", "w3g64", "w4ch", "w4g64asym"])
def test_gptq_output_error_beats_rtn_on_correlated_inputs(spec: str) -> None:
    scheme = parse_scheme(spec)
    w, x = weights((96, 256), seed=1), correlated_inputs(2048, 256)
    h = x.t() @ x / x.shape[0]
    rtn = scheme.dequantize(scheme.quantize(w))
    gptq = scheme.dequantize(gptq_solve(w, h, scheme, GPTQConfig(), "layer").q)
    xe = correlated_inputs(2048, 256, seed=2)  # held-out inputs from the same distribution
    assert output_error(w, gptq, xe) < 0.6 * output_error(w, rtn, xe)


def test_act_order_g_idx_follows_the_processing_order() -> None:
    scheme = parse_scheme("w4g32")
    w, x = weights((48, 128), seed=3), correlated_inputs(1024, 128, seed=3)
    h = x.t() @ x / x.shape[0]
    q = gptq_solve(w, h, scheme, GPTQConfig(act_order=True), "layer").q
    perm = torch.argsort(torch.diag(h), descending=True, stable=True)
    expected = torch.empty(128, dtype=torch.int32)
    expected[perm] = (torch.arange(128) // 32).to(torch.int32)
    assert torch.equal(q.params["g_idx"], expected)
    assert not torch.equal(expected, (torch.arange(128) // 32).to(torch.int32))  # really permuted
    # Column c dequantizes with the scale of group g_idx[c].
    scale = q.params["scale"].float()[:, q.params["g_idx"].long()]
    assert torch.equal(scheme.dequantize(q), (q.codes.float() - 8) * scale)
    assert torch.bincount(q.params["g_idx"]).tolist() == [32] * 4


def test_static_groups_keep_natural_groups_under_act_order() -> None:
    scheme = parse_scheme("w4g32")
    w, x = weights((48, 128), seed=4), correlated_inputs(1024, 128, seed=4)
    h = x.t() @ x / x.shape[0]
    q = gptq_solve(w, h, scheme, GPTQConfig(act_order=True, static_groups=True), "layer").q
    assert "g_idx" not in q.params  # g_idx = i // G: the scheme's own layout
    # Static groups are fitted from the original weights: same scales as RTN.
    assert torch.equal(q.params["scale"], scheme.quantize(w).params["scale"])


def test_lazy_blocks_and_stacked_rows_change_nothing_but_speed() -> None:
    scheme = parse_scheme("w4g32")
    w, x = weights((64, 128), seed=5), correlated_inputs(1024, 128, seed=5)
    h = x.t() @ x / x.shape[0]
    whole = gptq_solve(w, h, scheme, GPTQConfig(block=128), "a").q
    lazy = gptq_solve(w, h, scheme, GPTQConfig(block=16), "a").q
    assert (whole.codes == lazy.codes).float().mean() > 0.99  # float32 summation order only
    top, bottom = split_rows(whole, [40, 24])
    alone = gptq_solve(w[:40], h, scheme, GPTQConfig(block=128), "a").q
    assert torch.equal(top.codes, alone.codes) and torch.equal(top.params["scale"], alone.params["scale"])
    assert bottom.shape == (24, 128)


def test_dead_input_columns_quantize_to_zero() -> None:
    scheme = parse_scheme("w4g32")
    w, x = weights((32, 64), seed=6), correlated_inputs(512, 64, seed=6)
    x[:, 5] = 0.0
    h = x.t() @ x / x.shape[0]
    q = gptq_solve(w, h, scheme, GPTQConfig(), "layer").q
    assert torch.all(scheme.dequantize(q)[:, 5] == 0)


def test_damp_is_raised_when_cholesky_fails() -> None:
    scheme = parse_scheme("w4g32")
    x = correlated_inputs(16, 64, seed=7)  # 16 tokens < 64 inputs: rank-deficient
    h = x.t() @ x / 16
    h -= torch.eye(64) * 0.005 * float(torch.diag(h).mean())  # slightly indefinite
    res = gptq_solve(weights((32, 64)), h, scheme, GPTQConfig(damp=0.001), "layer")
    assert res.damp == pytest.approx(0.01)
    with pytest.raises(LowbitError, match="stays singular"):
        gptq_solve(weights((32, 64)), -torch.eye(64), scheme, GPTQConfig(), "neg")


def test_inverse_factor_is_the_upper_cholesky_factor_of_the_damped_inverse() -> None:
    from lowbit.methods.gptq_solver import inverse_hessian_factor

    x = correlated_inputs(256, 96, seed=8).double()
    h = x.t() @ x / 256
    u, damp = inverse_hessian_factor(h.float(), 0.01, "layer")
    damped = h + torch.eye(96, dtype=torch.float64) * 0.01 * float(torch.diag(h).mean())
    expected = torch.linalg.cholesky(torch.linalg.inv(damped), upper=True)
    assert damp == 0.01 and torch.equal(u, u.triu()) and bool((torch.diag(u) > 0).all())
    torch.testing.assert_close(u.double(), expected, rtol=1e-5, atol=1e-6)


def test_nan_in_calibration_inputs_stops_with_the_layer_name() -> None:
    h = torch.eye(64)
    h[3, 3] = float("nan")
    with pytest.raises(LowbitError, match="'model.layers.0.mlp.up_proj'"):
        gptq_solve(weights((32, 64)), h, parse_scheme("w4g32"), GPTQConfig(), "model.layers.0.mlp.up_proj")


def test_model_gptq_beats_rtn_on_held_out_text() -> None:
    from lowbit.data import prepare_data

    ref = load_model("tiny-llama")
    data = prepare_data(ref.tokenizer, calib_samples=8, eval_tokens=256, window_tokens=128)
    with torch.inference_mode():
        a = ref.model(data.eval.windows).logits
    errs = {}
    for text in ("rtn:w4g64", "gptq:w4g64+act=off", "gptq:w4g64"):
        m = load_model("tiny-llama")
        res = quantize_model(m, resolve_variant(text), data.calib)
        with torch.inference_mode():
            errs[text] = float((m.model(data.eval.windows).logits - a).norm() / a.norm())
        if text.startswith("gptq"):
            assert res.calib_seconds > 0 and res.stats["gptq"]["calib_tokens"] == 8 * 128
    assert errs["gptq:w4g64+act=off"] < 0.7 * errs["rtn:w4g64"]
    assert errs["gptq:w4g64"] < 0.7 * errs["rtn:w4g64"]  # the default: act-order, static groups


def test_gptq_quantizes_every_bert_linear() -> None:
    loaded = load_model("tiny-bert")
    targets = set(select_targets(loaded))
    calib_ids = torch.randint(0, 250, (4, 32), generator=torch.Generator().manual_seed(0))
    from lowbit.data.windows import TokenSet

    quantize_model(loaded, resolve_variant("gptq:w4g32"), TokenSet("t", calib_ids, 1))
    assert {n for n, _ in quantized_modules(loaded.model)} == targets


def test_few_tokens_warn_and_empty_calibration_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from lowbit.data.windows import TokenSet
    import lowbit.methods.gptq as gptq_mod

    said: list[str] = []
    monkeypatch.setattr(gptq_mod, "warn", said.append)
    loaded = load_model("tiny-llama")
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    quantize_model(loaded, resolve_variant("gptq:w4g64"), TokenSet("t", ids, 1))
    assert any("32 calibration tokens are fewer than the widest layer input (512)" in s for s in said)
    with pytest.raises(LowbitError, match="calibration"):
        quantize_model(load_model("tiny-llama"), resolve_variant("gptq:w4g64"), None)


def test_bad_options_are_refused() -> None:
    loaded = load_model("tiny-llama")
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    from lowbit.data.windows import TokenSet

    with pytest.raises(LowbitError, match="damp"):
        quantize_model(loaded, resolve_variant("gptq:w4g64+damp=0"), TokenSet("t", ids, 1))
    with pytest.raises(LowbitError, match="unknown option"):
        resolve_variant("gptq:w4g64+actorder")


def test_head_outside_the_blocks_is_rounded_to_nearest_and_reported() -> None:
    from lowbit.data.windows import TokenSet

    loaded = load_model("tiny-llama")
    head = loaded.model.lm_head.weight.detach().clone()
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    res = quantize_model(loaded, resolve_variant("gptq:w4g64+lm_head"), TokenSet("t", ids, 1))
    assert res.stats["gptq"]["rtn"] == ["lm_head"]
    assert torch.equal(res.tensors["lm_head"].codes, parse_scheme("w4g64").quantize(head).codes)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_replaying_attention_and_mlp_from_kept_inputs_changes_nothing(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import torch.nn.functional as F

    from lowbit.data.windows import TokenSet

    attention_calls = [0]
    real_sdpa = F.scaled_dot_product_attention

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        attention_calls[0] += 1
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
    norm_calls = [0]
    ids = torch.randint(0, 250, (16, 32), generator=torch.Generator().manual_seed(0))
    results, calls, norms = {}, {}, {}
    for replay in (False, True):
        loaded = load_model(model)
        if not replay:
            loaded.arch = dataclasses.replace(loaded.arch, tails=())
        norm_class = type(loaded.model.get_submodule(f"{loaded.arch.blocks}.0.{loaded.arch.feeders[0][0]}"))
        real_norm = norm_class.forward

        def counted_norm(self, *args, real_norm=real_norm, **kwargs):  # type: ignore[no-untyped-def]
            norm_calls[0] += 1
            return real_norm(self, *args, **kwargs)

        monkeypatch.setattr(norm_class, "forward", counted_norm)
        attention_calls[0] = norm_calls[0] = 0
        results[replay] = quantize_model(loaded, resolve_variant("gptq:w4g32"), TokenSet("t", ids, 1)).tensors
        calls[replay], norms[replay] = attention_calls[0], norm_calls[0]
        monkeypatch.setattr(norm_class, "forward", real_norm)
    for name, q in results[True].items():
        other = results[False][name]
        assert torch.equal(q.codes, other.codes), name
        assert all(torch.equal(v, other.params[k]) for k, v in q.params.items()), name
    # 2 blocks × 4 batches: stages o, gate/up, down and the hand-off each ran
    # attention (28 calls); replayed, only the o stages do (8), plus one batch of
    # block 0's next stage, which learns what attention returns for every block (9).
    assert (calls[False], calls[True]) == (28, 9)
    # Norms whose only reader is replayed (ArchSpec.feeders) are skipped too: 14 per
    # batch (8 + 6 in the last block, which hands nothing on) become 4 per block and
    # batch, plus the two runs that learn what attention and the MLP return (34).
    assert norms == {False: 56, True: 34}


def test_act_order_is_on_and_static_groups_follow_the_bit_width_by_default() -> None:
    def opts(text: str) -> tuple[bool, bool]:
        o = resolve_variant(text).options
        return o["act"], o["static"]

    assert opts("gptq:w4g64") == (True, True)  # 4-bit: static groups (best here, and no g_idx)
    assert opts("gptq:w3g64") == (True, False)  # 3-bit: groups follow the compensated weights
    assert opts("gptq:w3g64+static") == (True, True)
    assert opts("gptq:w4g64+act=off+static=off") == (False, False)
    assert opts("gptq:gguf:Q3_K") == (True, True)  # k-quant grids are always fitted up front
