"""The shared calibration pipeline: block inputs, propagation, memory, statistics."""

from __future__ import annotations

import pytest
import torch

from lowbit.calibrate import CalibrationPipeline, run_pipeline
from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.methods import select_targets
from lowbit.models import load_model
from lowbit.runtime import install_quantized
from lowbit.schemes import parse_scheme


def windows(n: int = 6, t: int = 32, seed: int = 0) -> TokenSet:
    g = torch.Generator().manual_seed(seed)
    return TokenSet("test", torch.randint(0, 256, (n, t), generator=g), 1)


def reference_hidden(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_block_inputs_equal_the_models_hidden_states(name: str) -> None:
    loaded = load_model(name)
    calib = windows()
    ref = reference_hidden(loaded.model, calib.windows)
    seen: list[torch.Tensor] = []
    res = run_pipeline(loaded, calib, select_targets(loaded), lambda ctx: seen.append(
        torch.cat([b.hidden for b in ctx.batches])), batch_size=4)
    assert res.blocks == len(seen) == 2 and res.tokens == 6 * 32 and res.calib_seconds > 0
    for i, h in enumerate(seen):
        torch.testing.assert_close(h, ref[i], rtol=1e-5, atol=1e-5)


def test_quantized_block_outputs_feed_the_next_block() -> None:
    loaded = load_model("tiny-llama")
    calib = windows()
    scheme = parse_scheme("w3g64")
    seen: list[torch.Tensor] = []

    def on_block(ctx) -> None:  # type: ignore[no-untyped-def]
        seen.append(torch.cat([b.hidden for b in ctx.batches]))
        for name, lin in ctx.targets.items():
            install_quantized(loaded.model, name, scheme.quantize(lin.weight))

    run_pipeline(loaded, calib, select_targets(loaded), on_block)
    # The fully quantized model's second-block input is what the pipeline fed it.
    ref = reference_hidden(loaded.model, calib.windows)
    torch.testing.assert_close(seen[1], ref[1], rtol=1e-5, atol=1e-5)
    float_ref = reference_hidden(load_model("tiny-llama").model, calib.windows)
    assert not torch.allclose(seen[1], float_ref[1], atol=1e-3)


def test_pipeline_holds_one_block_of_inputs_and_shares_kwargs() -> None:
    loaded = load_model("tiny-llama")
    calib = windows(n=10, t=16)
    pipe = CalibrationPipeline(loaded, calib, select_targets(loaded), batch_size=3)
    held_in_callback: list[int] = []
    kwargs_ids: set[int] = set()

    def on_block(ctx) -> None:  # type: ignore[no-untyped-def]
        held_in_callback.append(pipe.held())
        kwargs_ids.update(id(b.kwargs) for b in ctx.batches[:-1])  # the last batch is smaller

    pipe.run(on_block)
    one_block = 10 * 16 * 256 * 4  # windows × tokens × hidden × float32
    assert held_in_callback == [one_block, one_block]
    assert pipe.held_bytes[0] == one_block and pipe.held() == 0
    assert len(kwargs_ids) == 1  # equal masks / rotary embeddings are stored once


def test_collect_shares_hessians_between_linears_reading_one_input() -> None:
    loaded = load_model("tiny-llama")
    calib = windows(n=4, t=16)
    got = {}

    def on_block(ctx) -> None:  # type: ignore[no-untyped-def]
        if ctx.index:
            return
        names = [ctx.qualified(n) for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")]
        got["early"] = ctx.collect(names)
        got["full"] = ctx.collect(names, stop_early=False)
        x = torch.cat([ctx.block.input_layernorm(b.hidden) for b in ctx.batches]).reshape(-1, 256)
        got["x"] = x

    run_pipeline(loaded, calib, select_targets(loaded), on_block, batch_size=2)
    st = got["early"]
    q, k, v = st.values()
    assert q is k is v and q.tokens == 64
    x = got["x"]
    torch.testing.assert_close(q.hessian(), x.t() @ x / 64, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(q.mean_abs(), x.abs().mean(0))
    torch.testing.assert_close(q.mean_sq(), (x * x).mean(0))
    torch.testing.assert_close(q.max_abs, x.abs().amax(0))
    torch.testing.assert_close(got["full"]["model.layers.0.self_attn.q_proj"].hessian(), q.hessian())


def test_empty_calibration_set_is_refused() -> None:
    loaded = load_model("tiny-llama")
    empty = TokenSet("empty", torch.zeros(0, 16, dtype=torch.int64), 0)
    with pytest.raises(LowbitError, match="calibration set is empty"):
        run_pipeline(loaded, empty, select_targets(loaded), lambda ctx: None)
