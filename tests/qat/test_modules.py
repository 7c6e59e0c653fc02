"""prepare → (train) → convert keeps the model's outputs exact at both ends."""

from __future__ import annotations

import torch

from lowbit.methods import resolve_variant, select_targets
from lowbit.models import load_model
from lowbit.qat.modules import FakeQuantLinear, attach_act_quant, convert, prepare
from lowbit.runtime.quant_linear import install_quantized
from lowbit.schemes import parse_scheme

IDS = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(0))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _prepared(spec: str, lsq: bool = False, act8: bool = False, kind: str | None = None):  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    scheme = parse_scheme(spec)
    targets = select_targets(loaded)
    weights = {n: m.weight.detach().clone() for n, m in targets.items()}
    inits = {n: scheme.quantize(w) for n, w in weights.items()}
    loaded.model.requires_grad_(False)
    mods = prepare(loaded.model, weights, inits, lsq=lsq, act8=act8, kind=kind)
    return loaded, weights, inits, mods


def test_prepared_model_equals_the_rtn_model_exactly() -> None:
    for spec in ("w3g64", "w4g64asym"):
        rtn = load_model("tiny-llama")
        from lowbit.methods import quantize_model

        quantize_model(rtn, resolve_variant(f"rtn:{spec}"), None)
        loaded, *_ = _prepared(spec)
        assert torch.equal(_logits(loaded.model), _logits(rtn.model))


def test_latent_weight_starts_at_the_float_weight_for_rtn() -> None:
    _, weights, _, mods = _prepared("w3g64")
    for name, mod in mods.items():
        assert torch.equal(mod.weight.detach(), weights[name])


def test_a_moved_code_init_is_reproduced_at_step_zero() -> None:
    # An init whose codes differ from nearest rounding (as GPTQ's do) must be the starting point.
    loaded = load_model("tiny-llama")
    scheme = parse_scheme("w3g64")
    targets = select_targets(loaded)
    weights = {n: m.weight.detach().clone() for n, m in targets.items()}
    inits = {n: scheme.quantize(w) for n, w in weights.items()}
    name = next(iter(inits))
    q0 = inits[name]
    q0.codes = torch.where(q0.codes < 7, q0.codes + 1, q0.codes)  # shift most codes one level up
    mods = prepare(loaded.model, weights, inits)
    assert torch.equal(mods[name].quantized_weight().detach(), scheme.dequantize(q0))
    assert torch.equal(mods[name].to_quantized().codes, q0.codes)


def test_convert_after_training_reproduces_the_fake_quantized_logits() -> None:
    for lsq, act8 in ((False, False), (True, False), (False, True)):
        loaded, _, _, mods = _prepared("w3g64", lsq=lsq, act8=act8)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # stand-in for training: move weights and scales
            for mod in mods.values():
                mod.weight.add_(torch.randn(mod.weight.shape, generator=gen) * 0.01)
                if lsq:
                    mod.fq.scale.mul_(1.1)
        before = _logits(loaded.model)
        for name, q in convert(loaded.model).items():
            install_quantized(loaded.model, name, q)
            if act8:
                assert q.meta["act_quant"] == "int8-per-token-sym"
                attach_act_quant(loaded.model.get_submodule(name))
        assert not any(isinstance(m, FakeQuantLinear) for m in loaded.model.modules())
        assert torch.equal(_logits(loaded.model), before), (lsq, act8)


def test_only_latent_weights_and_scales_train() -> None:
    loaded, _, _, mods = _prepared("w4g64", lsq=True)
    names = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert names == {f"{n}.weight" for n in mods} | {f"{n}.fq.scale" for n in mods}
