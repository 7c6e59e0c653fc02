"""Bit-exact tests of lowbit.schemes.gguf against llama.cpp's libggml.

The oracle is ``ggml_quantize_chunk`` / ``dequantize_row_*`` from the
libggml-base bundled with llama-cpp-python, called through ctypes (the
approach of gguf-py's tests/test_quants.py). Decoding is also checked against
gguf-py's independent numpy decoder.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.schemes.gguf import TYPES, bits_per_weight, dequantize, quantize
from lowbit.schemes.gguf.libggml import GGML as _GGML
from lowbit.schemes.gguf.libggml import find_libggml_base

gguf = pytest.importorskip("gguf", reason="gguf-py is needed for the independent decoder")

TYPE_NAMES = list(TYPES)


@pytest.fixture(scope="module")
def ggml() -> _GGML:
    """libggml-base from llama-cpp-python, or from $LOWBIT_LIBGGML_BASE (a path to the .so)."""
    from lowbit.errors import MissingExtraError

    try:
        return _GGML(find_libggml_base())
    except MissingExtraError as e:
        pytest.skip(f"no libggml oracle: {e}")


def _random_rows() -> np.ndarray:
    """Gaussian rows with deliberate outliers, an all-zero row and awkward blocks."""
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((7, 512)).astype(np.float32)
    x[0, rng.integers(0, 512, 6)] *= np.float32(40.0)   # isolated outliers
    x[1] = 0.0                                          # all-zero row
    x[2, :32] = 0.0                                     # one zero 32-block, one zero 16-block
    x[2, 256:272] = 0.0
    x[3] = np.abs(x[3])                                 # all positive: min clamps to 0
    x[4] = -np.abs(x[4]) * np.float32(1e-3)             # all negative, small
    x[5, :256] = np.float32(0.25)                       # constant super-block
    x[6] *= np.float32(1e-8)                            # tiny, near fp16 subnormals
    return x


def _weight_rows() -> np.ndarray:
    """Heavy-tailed 'real-ish' weights (Student t, df 3) with a per-column gain."""
    rng = np.random.default_rng(99)
    x = rng.standard_t(3, size=(16, 768)) * 0.02
    x *= np.exp(rng.normal(0.0, 0.5, size=(1, 768)))
    return x.astype(np.float32)


def _edge_rows() -> np.ndarray:
    """Rows that stress the C details: ±0 mixes, ties on a coarse grid, extremes."""
    rng = np.random.default_rng(7)
    x = np.zeros((7, 512), dtype=np.float32)
    x[0] = np.where(rng.random(512) < 0.5, -0.0, 0.0)      # signs of zero reach fp16 fields
    x[0, 5] = 1.0
    x[1] = rng.integers(-16, 17, 512) / 8                  # exact .5 ties in the roundings
    x[2] = rng.choice([-1.0, 2.0], 512)                    # two-valued blocks
    x[3] = rng.standard_normal(512) * 1e-39                # float32 subnormals
    x[4] = rng.standard_normal(512) * 1e30                 # x*x overflows to inf
    x[5] = rng.standard_normal(512) * 1e6                  # fp16 scale overflow
    x[6] = rng.standard_normal(512)                        # non-finite inputs, as C treats them
    x[6, [0, 40, 77]] = np.nan
    x[6, [300, 301]] = [np.inf, -np.inf]
    return x


DATA = {"random": _random_rows(), "weights": _weight_rows(), "edge": _edge_rows()}


def _imatrix(n: int, seed: int) -> np.ndarray:
    """Positive importance vector shaped like mean squared activations."""
    rng = np.random.default_rng(seed)
    return (rng.lognormal(0.0, 1.0, n) * 1e-2).astype(np.float32)


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("data", list(DATA))
@pytest.mark.parametrize("qtype", TYPE_NAMES)
def test_quantize_matches_ggml(ggml: _GGML, qtype: str, data: str, with_imatrix: bool) -> None:
    x = DATA[data]
    imatrix = _imatrix(x.shape[1], 7) if with_imatrix else None
    ours = quantize(x, qtype, imatrix)
    ref = ggml.quantize(x, qtype, imatrix)
    assert ours.shape == ref.shape
    bad = np.flatnonzero((ours.reshape(-1, TYPES[qtype].type_size) != ref.reshape(-1, TYPES[qtype].type_size)).any(axis=1))
    assert bad.size == 0, f"{qtype}: {bad.size} blocks differ, first at block {bad[:5]}"


def _sweep_rows(kind: str, rng: np.random.Generator) -> np.ndarray:
    """More distributions, for the broader sweep: ties, sparsity, wide dynamic range."""
    shape = (16, 1024)
    x = {
        "t2": lambda: rng.standard_t(2, shape) * 0.01,
        "uniform": lambda: rng.uniform(-1, 1, shape),
        "grid": lambda: np.round(rng.standard_normal(shape) * 4) / 4,
        "sparse": lambda: rng.standard_normal(shape) * (rng.random(shape) < 0.2),
        "lognormal": lambda: rng.lognormal(0, 2, shape) * rng.choice([-1, 1], shape),
        "row_scales": lambda: rng.standard_normal(shape) * np.exp(rng.uniform(-30, 10, (shape[0], 1))),
    }[kind]()
    return x.astype(np.float32)


@pytest.mark.parametrize("qtype", TYPE_NAMES)
def test_quantize_sweep(ggml: _GGML, qtype: str) -> None:
    """Six more weight distributions × {none, lognormal, partly-zero} imatrix."""
    rng = np.random.default_rng(2024)
    for kind in ("t2", "uniform", "grid", "sparse", "lognormal", "row_scales"):
        x = _sweep_rows(kind, rng)
        sparse_im = rng.random(1024).astype(np.float32) * (rng.random(1024) > 0.3)
        for im_name, im in (("none", None), ("lognormal", _imatrix(1024, 11)), ("partly-zero", sparse_im)):
            assert np.array_equal(quantize(x, qtype, im), ggml.quantize(x, qtype, im)), f"{kind}, imatrix {im_name}"


def test_iq4_best_index_matches_binary_search() -> None:
    """The threshold form of best_index_int8 equals C's binary search, including ulps around ties."""
    from lowbit.schemes.gguf.iq4 import KVALUES, best_index, best_index_reference

    probes = []
    for centre in np.concatenate([KVALUES.astype(np.float32), (KVALUES[1:].astype(np.float32) + KVALUES[:-1]) / 2]):
        v = np.float32(centre)
        for _ in range(3):
            v = np.nextafter(v, np.float32(-np.inf))
        for _ in range(7):
            probes.append(v)
            v = np.nextafter(v, np.float32(np.inf))
    rng = np.random.default_rng(0)
    probes += list((rng.standard_normal(2000) * 80).astype(np.float32)) + [np.float32(v) for v in (0.0, -0.0, np.inf, -np.inf, np.nan)]
    vals = np.array(probes, dtype=np.float32)
    assert best_index(vals).tolist() == [best_index_reference(v) for v in vals]


@pytest.mark.parametrize("qtype", TYPE_NAMES)
def test_dequantize_matches_gguf_and_ggml(ggml: _GGML, qtype: str) -> None:
    x = DATA["weights"]
    raw = ggml.quantize(x, qtype, _imatrix(x.shape[1], 3))
    ours = dequantize(raw, qtype, x.shape[1])
    ref_gguf = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])
    assert np.array_equal(ours, ref_gguf)
    assert np.array_equal(ours, ggml.dequantize(raw, qtype, x.shape[1]))


@pytest.mark.parametrize("qtype", TYPE_NAMES)
def test_dequantize_arbitrary_bytes(ggml: _GGML, qtype: str) -> None:
    """Random bytes (finite fp16 fields) decode like gguf-py, covering every bit pattern of the codes."""
    t = TYPES[qtype]
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, size=(4, t.row_bytes(1024)), dtype=np.uint8)
    # keep fp16 scale fields finite (exponent bits not all set) so NaN != NaN cannot hide a match
    raw = raw.reshape(-1, t.type_size)
    raw[:, :] &= np.where(_fp16_high_bytes(qtype, t.type_size), np.uint8(0xBF), np.uint8(0xFF))
    raw = raw.reshape(4, -1)
    ours = dequantize(raw, qtype, 1024)
    assert np.array_equal(ours, gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]))
    assert np.array_equal(ours, ggml.dequantize(raw, qtype, 1024))


def _fp16_high_bytes(qtype: str, type_size: int) -> np.ndarray:
    """Mask of the bytes holding the sign/exponent half of each fp16 field of a block."""
    offsets = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
               "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
               "IQ4_NL": [0], "IQ4_XS": [0]}[qtype]
    mask = np.zeros(type_size, dtype=bool)
    mask[[o + 1 for o in offsets]] = True
    return mask


def test_bits_per_weight() -> None:
    expected = {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5, "Q2_K": 2.625,
                "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "IQ4_NL": 4.5, "IQ4_XS": 4.25}
    assert {name: bits_per_weight(name) for name in TYPES} == expected
    for name, t in TYPES.items():
        assert (t.block_size, t.type_size) == tuple(gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]])
        assert t.type_id == gguf.GGMLQuantizationType[name].value


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        quantize(np.zeros((2, 100), np.float32), "Q4_0")
    with pytest.raises(ValueError):
        quantize(np.zeros((2, 512), np.float32), "Q4_K", np.ones(256, np.float32))
    with pytest.raises(ValueError):
        quantize(np.zeros((2, 512), np.float32), "Q7_K")
