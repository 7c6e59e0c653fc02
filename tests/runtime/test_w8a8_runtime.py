import torch

from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.runtime import w8a8 as rt
from lowbit.runtime.quant_linear import install_quantized
from lowbit.runtime.speed import candidate_runtimes
from lowbit.schemes.w8a8 import W8A8Scheme
from tests.conformance import weights


def _module(static: bool = False, bias: bool = True) -> rt.W8A8Linear:
    scheme = W8A8Scheme(static)
    lin = torch.nn.Sequential(torch.nn.Linear(96, 40, bias=bias))
    with torch.no_grad():
        lin[0].weight.copy_(weights((40, 96)))
    q = scheme.quantize(lin[0].weight)
    if static:
        q = scheme.with_input_scale(q, 0.03)
    mod = install_quantized(lin, "0", q)
    assert isinstance(mod, rt.W8A8Linear)
    return mod


def test_int8_path_is_exact_integer_arithmetic() -> None:
    for static in (False, True):
        mod = _module(static)
        x = torch.randn(2, 7, 96, generator=torch.Generator().manual_seed(0))
        assert mod.active_path == rt.INT8
        y = mod(x)
        assert mod.fallback_reason is None
        qx, sx = mod.w8a8.quantize_act(x.reshape(-1, 96), mod.input_scale)
        acc = qx.long() @ W8A8Scheme.int8_weight(mod.quantized).long().T  # exact in int64
        want = acc.double() * sx.double() * mod.q_scale.double().reshape(1, -1) + mod.bias.double()
        torch.testing.assert_close(y.reshape(-1, 40).double(), want, rtol=1e-6, atol=1e-6)


def test_int8_and_reference_paths_agree_per_layer() -> None:
    for static in (False, True):
        mod = _module(static)
        x = torch.randn(33, 96, generator=torch.Generator().manual_seed(1))
        y_int = mod(x)
        mod.prefer_int8 = False
        assert mod.active_path == rt.REFERENCE
        y_ref = mod(x)
        rel = float((y_int - y_ref).norm() / y_ref.norm())
        assert rel < 1e-6, rel


def test_missing_kernel_falls_back_and_says_so(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("rtn:w8a8"), None)
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    rt.set_w8a8_path(loaded.model, rt.REFERENCE)
    with torch.inference_mode():
        want = loaded.model(ids).logits
    rt.set_w8a8_path(loaded.model, rt.INT8)

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("no int8 kernel on this build")

    monkeypatch.setattr(torch, "_int_mm", broken)
    with torch.inference_mode():
        got = loaded.model(ids).logits
    assert torch.equal(got, want)
    name = rt.w8a8_runtime_name(loaded.model)
    assert name is not None and "reference" in name and "no int8 kernel" in name


def test_probe_reports_a_missing_kernel(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delattr(torch, "_int_mm")
    rt._probe.cache_clear()
    try:
        reason = rt.int8_kernel_status("cpu")
        assert reason is not None and "_int_mm" in reason
        mod = _module()
        y = mod(torch.randn(3, 96))
        assert torch.isfinite(y).all() and mod.fallback_reason == reason
    finally:
        rt._probe.cache_clear()


def test_speed_provider_offers_both_paths() -> None:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("rtn:w8a8"), None)
    names = [r.name for r in candidate_runtimes(loaded, "default")]
    assert names == [rt.int8_kernel_name("cpu"), rt.REFERENCE_KERNEL]
    float_model = load_model("tiny-llama")
    assert [r.name for r in candidate_runtimes(float_model, "default")] == ["default"]
