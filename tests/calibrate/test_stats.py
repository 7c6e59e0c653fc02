"""Input statistics: the banded upper-triangular Hessian equals the full product."""

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
