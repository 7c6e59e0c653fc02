"""LLM.int8()'s mixed-precision decomposition in lowbit's reference runtime."""

from __future__ import annotations

import pytest
import torch

from lowbit.runtime.llm_int8 import BNB_INV_127_SQ, LLMInt8Linear, int8_matmul_exact, quantize_activations
from lowbit.schemes import parse_scheme
from tests.conformance import weights


def _layer(threshold: float, shape: tuple[int, int] = (48, 64), bias: bool = True) -> LLMInt8Linear:
    q = parse_scheme("int8").quantize(weights(shape, seed=3))
    q.meta = {"module": "llm_int8", "threshold": threshold}
    b = torch.linspace(-1, 1, shape[0]) if bias else None
    return LLMInt8Linear(q, b)


def test_decomposition_matches_the_written_out_formula() -> None:
    lin = _layer(6.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 64, generator=g)
    x[3, 5] = 9.0   # outlier: column 5 goes to the float path for every token
    x[7, 40] = -6.0  # |x| = t counts as an outlier
    y = lin(x)
    cb = lin.codes.double()
    scb = lin.q_SCB.double()
    cols = [5, 40]
    keep = [c for c in range(64) if c not in cols]
    x16 = x.half().double()
    s = x16[:, keep].abs().amax(dim=1)
    xq = torch.round(x16[:, keep] * (127 / s).unsqueeze(1))
    int_part = (xq @ cb[:, keep].T) * s.unsqueeze(1) * scb * BNB_INV_127_SQ
    float_part = x[:, cols].double() @ (cb[:, cols] * scb.unsqueeze(1) / 127).T
    expect = int_part + float_part + lin.bias.double()
    assert torch.allclose(y.double(), expect, rtol=1e-5, atol=1e-5)
    assert lin.run_stats() == {"int8_calls": 1.0, "outlier_cols": 2.0, "input_cols": 64.0}


def test_outlier_values_stay_out_of_the_token_scale() -> None:
    x = torch.tensor([[1.0, 100.0, 0.5], [2.0, 0.25, -0.5]])
    codes, scale, cols = quantize_activations(x, 6.0)
    assert cols.tolist() == [1]
    assert scale.tolist() == [1.0, 2.0]  # 100 is not row 0's absmax; 0.25 still counts in row 1
    assert codes[:, 1].tolist() == [0, 0]
    assert codes[0].tolist() == [127, 0, 64]


def test_threshold_is_compared_in_float16_like_bitsandbytes() -> None:
    # 6.099 rounds down to float16 6.09765625, so that value counts as an outlier.
    _, _, cols = quantize_activations(torch.tensor([[6.09765625, 1.0]]), 6.099)
    assert cols.tolist() == [0]


def test_threshold_zero_is_plain_vectorwise_int8() -> None:
    x = torch.tensor([[1.0, 100.0, 0.5]])
    codes, scale, cols = quantize_activations(x, 0.0)
    assert cols.numel() == 0 and scale.tolist() == [100.0] and codes.tolist() == [[1, 127, 1]]


def test_zero_token_gives_zero_output_not_nan() -> None:
    lin = _layer(6.0, bias=False)
    y = lin(torch.zeros(2, 64))
    assert torch.equal(y, torch.zeros(2, 48))


def test_int8_products_are_summed_exactly_beyond_2_24() -> None:
    k = 3000  # 3000 · 127² > 2**24: a single float32 GEMM would round
    a = torch.full((2, k), 127, dtype=torch.int8)
    a[1, ::3] = -128 + 1
    b = torch.full((3, k), 127, dtype=torch.int8)
    b[2, 1::2] = -127
    got = int8_matmul_exact(a.float(), b.float())
    assert torch.equal(got, (a.long() @ b.long().T).float())  # the int32 result, rounded once to float32


def test_batched_input_shape_is_kept() -> None:
    lin = _layer(6.0)
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lin(x), lin(x.reshape(10, 64)).reshape(2, 5, 48))


def test_equals_bitsandbytes_linear8bitlt_bit_for_bit() -> None:
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'lowbit[bnb]')")
    from lowbit.runtime.bnb_kernels import BnbKernelLinear

    for t, k in ((6.0, 512), (0.0, 512), (1.5, 512), (6.0, 1536)):  # 1536: past one exact GEMM chunk
        ours = _layer(t, (96, k))
        q = ours.quantized
        q.meta = {"module": "bitsandbytes", "threshold": t}
        theirs = BnbKernelLinear(q, ours.bias)
        x = torch.randn(33, k, generator=torch.Generator().manual_seed(2)) * 2
        x[:, 9] *= 8
        assert torch.equal(ours(x), theirs(x)), (t, k)
    assert bnb.__version__
