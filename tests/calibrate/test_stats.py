"""Input statistics: the banded upper-triangular Hessian equals the full product; Hessian-only stats."""

import pytest
import torch

from lowbit.calibrate.stats import InputStats


@pytest.mark.parametrize("features", [7, 130, 576])  # widths not divisible by the band count too
def test_hessian_from_bands_equals_the_full_product(features: int) -> None:
    g = torch.Generator().manual_seed(features)
    batches = [torch.randn(2, 50, features, generator=g) for _ in range(3)]
    st = InputStats(features, torch.device("cpu"), hessian=True)
    for b in batches:
        st.add(b)
    x = torch.cat([b.reshape(-1, features) for b in batches]).double()
    h = st.hessian()
    assert st.tokens == 300
    assert torch.equal(h, h.t())
    torch.testing.assert_close(h.double(), x.t() @ x / 300, rtol=0, atol=1e-5)
    torch.testing.assert_close(st.mean_sq().double(), torch.diag(x.t() @ x) / 300, rtol=0, atol=1e-5)


def test_hessian_only_stats_skip_the_moments_and_read_mean_sq_off_the_diagonal() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 40, 96, generator=g)
    full = InputStats(96, torch.device("cpu"), hessian=True)
    lean = InputStats(96, torch.device("cpu"), hessian=True, moments=False)
    full.add(x)
    lean.add(x)
    assert lean.sum_abs is None and lean.sum_sq is None and lean.max_abs is None
    assert torch.equal(lean.hessian(), full.hessian())
    torch.testing.assert_close(lean.mean_sq(), full.mean_sq(), rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="moments"):
        lean.mean_abs()
    with pytest.raises(ValueError, match="moments"):
        lean.amax()
    with pytest.raises(ValueError, match="Hessian, the per-channel moments"):
        InputStats(96, torch.device("cpu"), hessian=False, moments=False)
