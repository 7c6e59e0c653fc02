"""GPTQ on GGUF k-quant grids: the fixed-grid rounding is llama.cpp's, the error feedback pays."""

from __future__ import annotations

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.methods import resolve_variant
from lowbit.methods.gptq_solver import GPTQConfig, gptq_solve
from lowbit.schemes.gguf.kcolumns import GRIDS
from lowbit.schemes.gguf.scheme import GGUFScheme
from tests.conformance import weights
from tests.methods.test_gptq import correlated_inputs, output_error

KQUANTS = list(GRIDS)


def awkward_weights(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Gaussian weights with the cases where a k-quant keeps its fitted codes: an all-zero
    super-block, all-zero sub-blocks, and outliers that squash other sub-scales to 0."""
    w = weights((rows, cols), seed=seed)
    w[0, :256] = 0.0
    w[1, 16:48] = 0.0
    w[2, cols - 20] = 400.0
    w[3, 40:56] *= 1e-6
    return w


@pytest.mark.parametrize("qtype", KQUANTS)
@pytest.mark.parametrize("weighted", [False, True])
def test_without_error_feedback_gptq_writes_the_encoder_bytes(qtype: str, weighted: bool) -> None:
    # An identity Hessian spreads no error: every code is the fixed grid's nearest,
    # which must be exactly what llama.cpp's encoder stores for the same grid.
    s = GGUFScheme(qtype)
    w = awkward_weights(24, 512, seed=11)
    imp = torch.rand(512, generator=torch.Generator().manual_seed(2)) + 0.05 if weighted else None
    res = gptq_solve(w, torch.eye(512), s, GPTQConfig(), "layer", imp)
    assert torch.equal(res.q.codes, s.quantize(w, imp).codes)
    assert res.q.meta["static_groups"] is True  # forced for k-quants


@pytest.mark.parametrize("qtype", KQUANTS)
def test_quantize_with_values_are_what_the_assembled_blocks_decode_to(qtype: str) -> None:
    s = GGUFScheme(qtype)
    w = awkward_weights(8, 256, seed=4)
    grid = s.fit(w)
    # error-fed columns land anywhere, beyond the grid's range too: codes clamp, values stay exact
    fed = w + 3 * torch.randn(w.shape, generator=torch.Generator().manual_seed(5)) * w.std()
    cols = [s.quantize_with(fed[:, c:c + 1], s.column_grid(grid, c)) for c in range(256)]
    codes = torch.cat([c for c, _ in cols], dim=1)
    assert int(codes.max()) <= GRIDS[qtype].nmax
    whole_codes, whole_values = s.quantize_with(fed, grid)  # a whole group at once (QAT's frozen grid)
    assert torch.equal(whole_codes, codes)
    decoded = s.dequantize(s.assemble((8, 256), codes, [grid]))
    assert torch.equal(torch.cat([v for _, v in cols], dim=1), decoded)
    assert torch.equal(whole_values, decoded)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K"])
def test_gptq_on_a_k_quant_beats_plain_on_correlated_inputs(qtype: str) -> None:
    s = GGUFScheme(qtype)
    w, x = weights((96, 512), seed=1), correlated_inputs(2048, 512)
    h = x.t() @ x / x.shape[0]
    imp = (x * x).mean(0)  # the imatrix statistic of the same inputs
    plain = s.dequantize(s.quantize(w, imp))
    gptq = s.dequantize(gptq_solve(w, h, s, GPTQConfig(), "layer", imp).q)
    act = s.dequantize(gptq_solve(w, h, s, GPTQConfig(act_order=True), "layer", imp).q)
    xe = correlated_inputs(2048, 512, seed=2)  # held-out inputs from the same distribution
    assert output_error(w, gptq, xe) < 0.6 * output_error(w, plain, xe)
    assert output_error(w, act, xe) < 0.6 * output_error(w, plain, xe)


def test_static_grids_are_fitted_from_the_original_weights_under_act_order() -> None:
    s = GGUFScheme("Q4_K")
    w, x = weights((16, 512), seed=6), correlated_inputs(1024, 512, seed=6)
    q = gptq_solve(w, x.t() @ x / 1024, s, GPTQConfig(act_order=True), "layer").q
    plain = s.quantize(w).codes.reshape(16, 2, 144)
    assert "g_idx" not in q.params
    assert torch.equal(q.codes.reshape(16, 2, 144)[..., :16], plain[..., :16])  # d, dmin, sub-scales as fitted


def test_variants_and_refusals() -> None:
    assert resolve_variant("gptq:gguf:Q4_K+act").scheme == GGUFScheme("Q4_K")  # static groups are implied
    with pytest.raises(LowbitError, match=r"\+act without \+static.*gguf:Q4_0"):
        resolve_variant("gptq:gguf:Q4_0+static=off")  # act-order is on by default; legacy groups follow the compensated weights: g_idx needed
    with pytest.raises(LowbitError, match="column by column; gguf:IQ4_XS does not"):
        resolve_variant("gptq:gguf:IQ4_XS")
    with pytest.raises(LowbitError, match="take one column's grid with column_grid"):
        s = GGUFScheme("Q6_K")
        s.quantize_with(torch.zeros(4, 1), s.fit(weights((4, 256))))
    with pytest.raises(LowbitError, match="importance vector only weights static-group fits"):
        gptq_solve(weights((4, 64)), torch.eye(64), GGUFScheme("Q4_0"), GPTQConfig(), "layer", torch.ones(64))
    with pytest.raises(LowbitError, match="super-block of 256 columns, got 32"):
        GGUFScheme("Q4_K").fit(weights((4, 32)))
