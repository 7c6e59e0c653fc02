import json
from pathlib import Path

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.models import load_model
from lowbit.models.loader import save_float_folder


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_tiny_models_are_seeded(name: str) -> None:
    a, b, c = load_model(name, seed=0), load_model(name, seed=0), load_model(name, seed=1)
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_gpt2_conv1d_becomes_linear_with_same_outputs() -> None:
    from transformers import GPT2LMHeadModel

    from lowbit.models.tiny import build_tiny

    raw, _ = build_tiny("tiny-gpt2", 0)
    assert not isinstance(raw.transformer.h[0].attn.c_attn, torch.nn.Linear)
    loaded = load_model("tiny-gpt2")
    assert isinstance(loaded.model.transformer.h[0].attn.c_attn, torch.nn.Linear)
    ids = torch.randint(0, 256, (1, 16))
    with torch.inference_mode():
        torch.testing.assert_close(raw(ids).logits, loaded.model(ids).logits)
    assert isinstance(raw, GPT2LMHeadModel)


def test_hf_folder_round_trip_and_sharding(tmp_path: Path) -> None:
    loaded = load_model("tiny-llama")
    save_float_folder(loaded.model, loaded.tokenizer, tmp_path)
    again = load_model(str(tmp_path))
    ids = torch.randint(0, 256, (1, 16))
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, again.model(ids).logits)
    assert again.params == loaded.params
    # Tied embeddings stored once.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    # A sharded checkpoint (as transformers writes it) loads too.
    sharded = tmp_path / "sharded"
    loaded.model.save_pretrained(sharded, max_shard_size="500KB")
    loaded.tokenizer.save_pretrained(sharded)
    assert len(list(sharded.glob("*.safetensors"))) > 1
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, load_model(str(sharded)).model(ids).logits)


def test_missing_model_path() -> None:
    with pytest.raises(LowbitError, match="not found"):
        load_model("/no/such/model")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="no config.json"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(LowbitError, match="unsupported architecture 'mamba'"):
        load_model(str(tmp_path))


def test_pickle_only_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(LowbitError, match="no .safetensors"):
        load_model(str(tmp_path))


def test_non_gguf_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(LowbitError, match="not a .gguf"):
        load_model(str(tmp_path / "weights.pt"))


def test_nan_weights_are_refused_at_load(tmp_path: Path) -> None:
    loaded = load_model("tiny-llama")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.up_proj.weight[3, 3] = float("inf")
    save_float_folder(loaded.model, loaded.tokenizer, tmp_path)
    with pytest.raises(LowbitError, match="model.layers.0.mlp.up_proj.weight.*NaN/Inf"):
        load_model(str(tmp_path))


def test_minilm_is_bundled() -> None:
    loaded = load_model("minilm")
    assert loaded.arch.kind == "encoder" and loaded.params > 20_000_000
