import torch

from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from tests.conformance import MethodConformance


class TestRTNConformance(MethodConformance):
    variants = ["rtn:w8ch", "rtn:w4g64", "rtn:w3g64asym"]


class TestRTNOnGPT2(MethodConformance):
    variants = ["rtn:w4g32"]
    model = "tiny-gpt2"


def test_rtn_codes_equal_scheme_quantize_of_each_weight() -> None:
    loaded = load_model("tiny-llama")
    weights = {n: m.weight.detach().clone() for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear)}
    v = resolve_variant("rtn:w4g64")
    quantize_model(loaded, v, None)
    for name, mod in quantized_modules(loaded.model):
        assert torch.equal(mod.codes, v.scheme.quantize(weights[name]).codes)


def test_lm_head_left_float_unless_asked() -> None:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("rtn:w4g64"), None)
    assert isinstance(loaded.model.lm_head, torch.nn.Linear)
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("rtn:w4g64+lm_head"), None)
    assert "lm_head" in {n for n, _ in quantized_modules(loaded.model)}
