import torch

from lowbit.data.windows import TokenSet
from lowbit.eval.reference import reference_key
from lowbit.models import load_model


def test_same_tokens_in_other_windows_get_another_cache_key() -> None:
    model = load_model("tiny-llama").model
    ids = torch.arange(256) % 250
    short, long = TokenSet("a", ids.reshape(4, 64), 1), TokenSet("a", ids.reshape(2, 128), 1)
    assert short.sha256 == long.sha256  # same stream...
    assert reference_key(model, short, 8, 4) != reference_key(model, long, 8, 4)  # ...different reference
