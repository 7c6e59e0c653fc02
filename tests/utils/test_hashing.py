import torch

from lowbit.utils.hashing import sha256_tokens


def test_token_hash_depends_on_window_shape() -> None:
    stream = torch.arange(4096)
    assert sha256_tokens(stream.reshape(8, 512)) != sha256_tokens(stream.reshape(16, 256))
    assert sha256_tokens(stream.reshape(8, 512)) == sha256_tokens(stream.reshape(8, 512).clone())
