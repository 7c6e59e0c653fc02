import numpy as np
import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.packing import pack_bits, packed_length, unpack_bits


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 32, 33, 577])
def test_pack_unpack_round_trip(bits: int, n: int) -> None:
    codes = torch.randint(0, 2**bits, (3, n), dtype=torch.uint8, generator=torch.Generator().manual_seed(bits * n))
    packed = pack_bits(codes, bits)
    assert packed.shape == (3, packed_length(n, bits))
    assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_layout_is_lsb_first_little_endian_like_gptq_qweight() -> None:
    # GPTQ packs eight 4-bit values into an int32 word, value k in bits 4k..4k+3.
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8)
    word = pack_bits(codes, 4).numpy().view("<u4")[0, 0]
    assert word == 0x87654321


def test_three_bit_values_straddle_bytes_continuously() -> None:
    codes = torch.tensor([[7, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.uint8)
    assert pack_bits(codes, 3).tolist() == [[7, 0, 0]]
    codes = torch.tensor([[0, 0, 7, 0, 0, 0, 0, 0]], dtype=torch.uint8)  # bits 6..8
    assert pack_bits(codes, 3).tolist() == [[0b11000000, 0b1, 0]]


def test_out_of_range_codes_and_widths_are_refused() -> None:
    with pytest.raises(LowbitError, match="out of range"):
        pack_bits(torch.tensor([[16]], dtype=torch.uint8), 4)
    with pytest.raises(LowbitError, match="between 1 and 8"):
        pack_bits(np.zeros((1, 8), dtype=np.uint8), 9)
    with pytest.raises(LowbitError, match="expected"):
        unpack_bits(torch.zeros(1, 3, dtype=torch.uint8), 4, 8)
