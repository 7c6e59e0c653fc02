"""The qat method: the method contract, pluggable init, options, compare integration, export round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from lowbit.compare import CompareOptions, quick_variant, run_compare
from lowbit.errors import LowbitError
from lowbit.formats.lowbit_format import save_lowbit_folder
from lowbit.methods import METHODS, quantize_model, resolve_variant
from lowbit.methods.base import Method, QuantContext
from lowbit.methods.qat import QAT, QATRun
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from tests.conformance import MethodConformance


class TestQATConformance(MethodConformance):
    variants: ClassVar[list[str]] = ["qat:w4g64+steps=2", "qat:w3g64+steps=2+lsq+loss=kdce", "qat:w4g64asym+steps=1+loss=ce"]
    needs_calib = True


def _calib():  # type: ignore[no-untyped-def]
    return TestQATConformance().calib()


def test_variant_options_and_act_bits() -> None:
    v = resolve_variant("qat:w3g64+steps=7+lr=3e-4+tokens=1000+init=nearest+loss=ce+lsq+a8")
    assert v.options["steps"] == 7 and v.options["lr"] == 3e-4 and v.options["tokens"] == 1000
    assert v.options["lsq"] and v.options["a8"] and v.act_bits == 8
    assert resolve_variant("qat:w3g64").act_bits == 16
    with pytest.raises(LowbitError, match="kd, ce, kdce"):
        resolve_variant("qat:w3g64+loss=mse")


@pytest.mark.parametrize("init, message", [("bogus", "unknown method 'bogus'"), ("qat", "post-training")])
def test_bad_init_is_refused(init: str, message: str) -> None:
    with pytest.raises(LowbitError, match=message):
        quantize_model(load_model("tiny-llama"), resolve_variant(f"qat:w4g64+steps=1+init={init}"), _calib())


class _ShiftedRTN(Method):
    """A stand-in PTQ method whose codes are not nearest rounding (as GPTQ's are not)."""

    name = "shifted"

    def quantize(self, ctx: QuantContext) -> None:
        for name, lin in ctx.targets.items():
            q = ctx.scheme.quantize(lin.weight.detach())
            q.codes = torch.where(q.codes < 15, q.codes + 1, q.codes)
            ctx.install(name, q)


def test_init_is_any_registered_method_and_is_the_step_zero_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS._items, "shifted", _ShiftedRTN())
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))
    ptq = load_model("tiny-llama")
    quantize_model(ptq, resolve_variant("shifted:w4g64"), None)
    with torch.no_grad():
        expected = ptq.model(input_ids=ids).logits
    seen = {}

    def evaluate(model: torch.nn.Module, step: int, final: bool) -> dict:
        if step == 0:
            with torch.no_grad():
                seen["logits"] = model(input_ids=ids).logits
        return {"step": step}

    v = resolve_variant("qat:w4g64+steps=1+init=shifted")
    result = quantize_model(load_model("tiny-llama"), dataclasses.replace(v, method=QAT(QATRun(evaluate=evaluate))),
                            _calib())
    assert torch.equal(seen["logits"], expected)
    assert result.stats["init"]["variant"] == "shifted:int:w4g64"


def test_lsq_on_a_scheme_without_an_affine_adapter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from lowbit.qat import fake_quant
    from lowbit.schemes.int_affine import IntScheme

    monkeypatch.delitem(fake_quant.ADAPTERS, IntScheme)  # as for a grid with no scale to learn
    with pytest.raises(LowbitError, match=r"\+lsq"):
        quantize_model(load_model("tiny-llama"), resolve_variant("qat:w4g64+steps=1+lsq"), _calib())
    # Without +lsq the generic (group-wise) adapter trains it.
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("qat:w4g64+steps=1"), _calib())
    assert len(list(quantized_modules(loaded.model))) == 14


def test_a8_model_keeps_int8_activations_after_convert() -> None:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("qat:w4g64+steps=1+a8"), _calib())
    for _, mod in quantized_modules(loaded.model):
        assert mod.meta["act_quant"] == "int8-per-token-sym" and mod._forward_pre_hooks


def test_quick_compare_uses_few_steps_unless_given() -> None:
    assert quick_variant(resolve_variant("qat:w3g64")).options["steps"] == 4
    assert quick_variant(resolve_variant("qat:w3g64")).text == "qat:w3g64+steps=4"
    assert quick_variant(resolve_variant("qat:w3g64+steps=9")).options["steps"] == 9
    assert quick_variant(resolve_variant("rtn:w3g64")).text == "rtn:w3g64"


def test_compare_runs_a_qat_variant() -> None:
    report = run_compare(CompareOptions(model="tiny-llama", variants=["rtn:w3g64", "qat:w3g64+lr=1e-4"], quick=True,
                                        window_tokens=64, eval_tokens=512, calib_samples=4, device="cpu",
                                        use_cache=False))
    rows = {r["variant"]: r for r in report["results"]}
    qat = rows["qat:w3g64+lr=1e-4+steps=4"]
    assert qat["error"] is None and qat["kld_mean"] is not None and qat["act_bits"] == 16


def test_qat_export_round_trip_lowbit_format(tmp_path: Path) -> None:
    """QAT → lowbit format → read back → the same logits and the same tensors."""
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(2))
    q = load_model("tiny-llama")
    result = quantize_model(q, resolve_variant("qat:w3g64+steps=3+lr=1e-3+lsq"), _calib())
    again = load_model(str(save_lowbit_folder(q, tmp_path / "out")))
    with torch.inference_mode():
        assert torch.equal(q.model(input_ids=ids).logits, again.model(input_ids=ids).logits)
    for name, mod in quantized_modules(again.model):
        assert torch.equal(mod.codes, result.tensors[name].codes)
        assert torch.equal(mod.q_scale, result.tensors[name].params["scale"])
    assert again.variant == "qat:w3g64+steps=3+lr=1e-3+lsq"
