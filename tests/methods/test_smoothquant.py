from typing import ClassVar

import pytest
import torch

from lowbit.data import prepare_data
from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant, select_targets
from lowbit.methods.base import QuantContext
from lowbit.methods.smoothquant import fold, plan_groups, smoothing_factors
from lowbit.models import load_model
from lowbit.runtime.w8a8 import W8A8Linear
from tests.conformance import MethodConformance

IDS = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(0))


def _close_to_float(variants: list[str], calib) -> None:  # type: ignore[no-untyped-def]
    # Int8 activations add about as much error as int8 weights on this tiny,
    # confident model (rtn:w8ch 0.034, rtn:w8a8 0.053 relative): twice the
    # weight-only bound, four times for one static scale per tensor (0.09).
    for text in variants:
        ref, q = load_model("tiny-llama"), load_model("tiny-llama")
        quantize_model(q, resolve_variant(text), calib)
        with torch.inference_mode():
            a, b = ref.model(IDS).logits, q.model(IDS).logits
        rel = float((a - b).norm() / a.norm())
        assert 0 < rel < (0.2 if "static" in text else 0.1), (text, rel)


class TestSmoothQuantConformance(MethodConformance):
    # The static variant exercises everything the dynamic one does plus the stored input scale.
    variants: ClassVar[list[str]] = ["smoothquant:w8a8static"]
    needs_calib = True

    def test_output_stays_close_to_float(self) -> None:
        _close_to_float(self.variants, self.calib())


class TestRTNW8A8Conformance(MethodConformance):
    variants: ClassVar[list[str]] = ["rtn:w8a8"]

    def test_output_stays_close_to_float(self) -> None:
        _close_to_float(self.variants, None)


def _calib(loaded, samples: int = 4):  # type: ignore[no-untyped-def]
    return prepare_data(loaded.tokenizer, calib_samples=samples, eval_tokens=256, window_tokens=128).calib


def _logits(loaded) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        out = loaded.model(input_ids=IDS, use_cache=False)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_folding_alone_leaves_the_float_model_unchanged(name: str) -> None:
    loaded = load_model(name)
    targets = select_targets(loaded)
    ctx = QuantContext(loaded, targets, resolve_variant("smoothquant:w8a8").scheme, {}, None, torch.device("cpu"))
    ones = {n: torch.ones(lin.in_features) for n, lin in targets.items()}
    groups, skipped = plan_groups(ctx, ones)
    assert groups, "no smoothable group found"
    if name == "tiny-llama":  # norms and up_proj → down_proj; GQA v_proj → o_proj is not foldable
        assert {g.prev.rsplit(".", 1)[-1] for g in groups} == {"input_layernorm", "post_attention_layernorm",
                                                               "up_proj"}
        assert any("v_proj" in s for s in skipped)
    before = _logits(loaded)
    gen = torch.Generator().manual_seed(3)
    for g in groups:
        s = torch.exp(torch.empty(g.act_max.numel()).uniform_(-2.3, 2.3, generator=gen))  # factors 0.1–10
        fold(loaded.model, g, s)
    after = _logits(loaded)
    assert not torch.equal(targets[groups[0].linears[0]].weight, load_model(name).model.get_submodule(
        groups[0].linears[0]).weight), "folding changed no weight"
    assert float((after - before).norm() / before.norm()) < 1e-5


def test_smoothing_factor_formula() -> None:
    act, w = torch.tensor([4.0, 9.0, 0.0, 1.0]), torch.tensor([1.0, 4.0, 2.0, 0.0])
    s = smoothing_factors(act, w, 0.5)
    assert torch.allclose(s, torch.tensor([2.0, 1.5, 1.0, 1.0]))
    assert torch.allclose(smoothing_factors(act, w, 1.0)[:2], act[:2])
    assert float(smoothing_factors(torch.tensor([1e-12]), torch.tensor([1.0]), 0.5)) == pytest.approx(1e-5)


def _with_outliers(loaded) -> None:  # type: ignore[no-untyped-def]
    """Un-smooth a few channels: same float function, activations with 40x outlier channels (as in real LLMs)."""
    for layer in loaded.model.model.layers:
        for norm, lins in ((layer.input_layernorm, ("q_proj", "k_proj", "v_proj")),
                           (layer.post_attention_layernorm, ("gate_proj", "up_proj"))):
            ch = torch.tensor([3, 77, 150])
            with torch.no_grad():
                norm.weight[ch] *= 40.0
                for n in lins:
                    mod = getattr(layer.self_attn if n.endswith(("q_proj", "k_proj", "v_proj")) else layer.mlp, n)
                    mod.weight[:, ch] /= 40.0


def test_smoothquant_beats_rtn_w8a8_when_activations_have_outliers() -> None:
    ref = load_model("tiny-llama")
    _with_outliers(ref)
    want = _logits(ref)
    calib = _calib(ref)
    errs = {}
    for text in ("rtn:w8a8", "smoothquant:w8a8", "smoothquant:w8a8+alpha=auto"):
        q = load_model("tiny-llama")
        _with_outliers(q)
        quantize_model(q, resolve_variant(text), calib)
        errs[text] = float((_logits(q) - want).norm() / want.norm())
    assert errs["smoothquant:w8a8"] < 0.7 * errs["rtn:w8a8"], errs
    assert errs["smoothquant:w8a8+alpha=auto"] < 0.7 * errs["rtn:w8a8"], errs


def test_static_scale_is_the_smoothed_calibration_maximum() -> None:
    # Layer 0's q_proj reads the (folded) input norm of the embeddings: no quantized layer
    # precedes it, so its input on the quantized model is the smoothed float activation.
    from lowbit.methods.act_stats import collect_input_absmax

    loaded = load_model("tiny-llama")
    calib = _calib(loaded)
    quantize_model(loaded, resolve_variant("smoothquant:w8a8static"), calib)
    name = "model.layers.0.self_attn.q_proj"
    mod = loaded.model.get_submodule(name)
    assert isinstance(mod, W8A8Linear) and mod.input_scale is not None
    seen = collect_input_absmax(loaded.model, [name], calib)[name]
    assert float(mod.input_scale) == pytest.approx(float(seen.max()) / 127, rel=1e-5)


def test_bad_variants_are_refused() -> None:
    with pytest.raises(LowbitError, match="calibrat"):
        resolve_variant("rtn:w8a8static")
    with pytest.raises(LowbitError, match="w8a8"):
        resolve_variant("smoothquant:w4g64")
    with pytest.raises(LowbitError, match="alpha"):
        resolve_variant("smoothquant:w8a8+alpha=1.5")
    assert resolve_variant("smoothquant:w8a8+alpha=auto").options["alpha"] == "auto"
    assert resolve_variant("smoothquant:w8a8+alpha=0.85").options["alpha"] == 0.85
    assert resolve_variant("smoothquant:w8a8").act_bits == 8 and resolve_variant("rtn:w8a8").act_bits == 8
    assert resolve_variant("rtn:w4g64").act_bits == 16


def test_inf_calibration_activations_name_the_linear() -> None:
    loaded = load_model("tiny-llama")
    with torch.no_grad():
        loaded.model.model.layers[1].post_attention_layernorm.weight[5] = float("inf")
    with pytest.raises(LowbitError, match=r"model\.layers\.1\.mlp\.gate_proj.*Inf/NaN"):
        quantize_model(loaded, resolve_variant("smoothquant:w8a8"), _calib(loaded))


def test_a_fold_that_would_change_the_model_is_refused() -> None:
    # An architecture table claiming a norm feeds linears it does not feed (here the
    # attention norm "feeding" the MLP): folding would change the float model.
    import dataclasses

    from lowbit.models.arch import InputGroup

    loaded = load_model("tiny-llama")
    wrong = InputGroup("input_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp")
    loaded.arch = dataclasses.replace(loaded.arch, groups=(wrong,))
    with pytest.raises(LowbitError, match="changed the float model's output"):
        quantize_model(loaded, resolve_variant("smoothquant:w8a8"), _calib(loaded))


def test_post_norm_bert_smooths_only_groups_that_fold() -> None:
    ref, q = load_model("tiny-bert"), load_model("tiny-bert")
    res = quantize_model(q, resolve_variant("smoothquant:w8a8"), _calib(q))
    assert res.stats["smoothed_groups"] == 2 and res.stats["fold_drift"] < 1e-5  # value → output.dense per layer
    a, b = _logits(ref), _logits(q)
    assert float((a - b).norm() / a.norm()) < 0.1
