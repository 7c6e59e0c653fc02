"""Contracts every scheme and every method must pass.

A new scheme subclasses :class:`SchemeConformance` and sets ``specs``; a new
method subclasses :class:`MethodConformance` and sets ``variants``. Adding
one then means passing the same tests as every other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant, select_targets
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from lowbit.schemes import parse_scheme
from lowbit.schemes.base import Scheme


def weights(shape: tuple[int, int], seed: int = 0, outlier: bool = True) -> torch.Tensor:
    """Gaussian weights with a heavy tail (and one 24-sigma outlier), like real linear layers."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.02
    # Student-t(3) tail, drawn from the same generator so the test is deterministic.
    chi2 = torch.randn((3, *shape), generator=g).pow(2).sum(0) / 3
    w += torch.randn(shape, generator=g) / chi2.sqrt() * 0.002
    if outlier:
        w[0, 0] = 0.5
    return w


class SchemeConformance:
    """Subclass and set ``specs`` (scheme strings) and ``shapes`` the scheme supports."""

    specs: ClassVar[list[str]] = []
    shapes: ClassVar[list[tuple[int, int]]] = [(64, 256), (48, 512)]

    def schemes(self) -> list[Scheme]:
        return [parse_scheme(s) for s in self.specs]

    def test_spec_round_trips(self) -> None:
        for s in self.schemes():
            assert parse_scheme(s.spec()) == s

    def test_quantize_is_deterministic_and_shaped(self) -> None:
        for s in self.schemes():
            for shape in self.shapes:
                w = weights(shape)
                q1, q2 = s.quantize(w), s.quantize(w)
                assert q1.shape == shape
                assert torch.equal(q1.codes, q2.codes)
                d = s.dequantize(q1)
                assert d.shape == shape and d.dtype == torch.float32
                assert torch.isfinite(d).all()

    def test_dequantized_error_is_small(self) -> None:
        for s in self.schemes():
            w = weights(self.shapes[0], outlier=False)  # one outlier would dominate per-tensor grids
            err = (s.dequantize(s.quantize(w)) - w).pow(2).mean().sqrt()
            # A grid of b bits must beat a 1-bit sign code by far on Gaussian-ish weights.
            assert err < w.std() * 2.0 ** (1 - s.weight_bits) * 2, s.spec()

    def test_packed_codes_round_trip(self) -> None:
        for s in self.schemes():
            q = s.quantize(weights(self.shapes[0]))
            packed = s.pack_codes(q)
            assert packed.dtype == torch.uint8
            assert torch.equal(s.unpack_codes(packed, q.shape), q.codes)

    def test_storage_bits_count_every_stored_byte(self) -> None:
        for s in self.schemes():
            shape = self.shapes[0]
            q = s.quantize(weights(shape))
            stored = s.pack_codes(q).numel() * 8
            for p in q.params.values():
                stored += p.numel() * p.element_size() * 8
            # Packed containers may round up to whole bytes; parameters narrower
            # than their container (b-bit zero points in uint8) are counted at b bits.
            assert s.storage_bits(shape) <= stored
            assert s.bits_per_weight(shape) == pytest.approx(s.storage_bits(shape) / math.prod(shape))


class MethodConformance:
    """Subclass and set ``variants``; runs on a tiny seeded Llama-shaped model."""

    variants: ClassVar[list[str]] = []
    model: ClassVar[str] = "tiny-llama"
    needs_calib: ClassVar[bool] = False

    def calib(self):  # type: ignore[no-untyped-def]
        if not self.needs_calib:
            return None
        from lowbit.data import prepare_data

        loaded = load_model(self.model)
        return prepare_data(loaded.tokenizer, calib_samples=8, eval_tokens=512, window_tokens=128).calib

    def test_every_target_is_quantized(self) -> None:
        for text in self.variants:
            loaded = load_model(self.model)
            targets = set(select_targets(loaded))
            quantize_model(loaded, resolve_variant(text), self.calib())
            assert {n for n, _ in quantized_modules(loaded.model)} == targets

    def test_output_stays_close_to_float(self) -> None:
        ids = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
        for text in self.variants:
            ref = load_model(self.model)
            q = load_model(self.model)
            quantize_model(q, resolve_variant(text), self.calib())
            with torch.inference_mode():
                a, b = ref.model(ids).logits, q.model(ids).logits
            rel = (a - b).norm() / a.norm()
            # The tiny model amplifies weight error (w8: 0.03, w4: 0.47, w3: 0.8
            # for RTN); the bound doubles per bit removed.
            bound = 0.05 * 2.0 ** (8 - resolve_variant(text).scheme.weight_bits)
            assert 0 < rel < bound, f"{text}: relative logit error {rel:.3f} ≥ {bound}"

    def test_lowbit_format_reloads_exactly(self, tmp_path: Path) -> None:
        from lowbit.formats.lowbit_format import save_lowbit_folder

        ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(1))
        for i, text in enumerate(self.variants):
            q = load_model(self.model)
            quantize_model(q, resolve_variant(text), self.calib())
            out = save_lowbit_folder(q, tmp_path / f"v{i}")
            again = load_model(str(out))
            with torch.inference_mode():
                assert torch.equal(q.model(ids).logits, again.model(ids).logits)

    def test_nan_weights_are_refused(self) -> None:
        loaded = load_model(self.model)
        name, lin = next(iter(select_targets(loaded).items()))
        with torch.no_grad():
            lin.weight[0, 0] = float("nan")
        with pytest.raises(LowbitError, match="NaN"):
            quantize_model(loaded, resolve_variant(self.variants[0]), self.calib())
