import json
from pathlib import Path

import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.formats.lowbit_format import save_lowbit_folder
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.runtime import quantized_modules
from lowbit.runtime.quant_linear import storage_bytes


def _quantized(variant: str = "rtn:w4g64", model: str = "tiny-llama"):  # type: ignore[no-untyped-def]
    loaded = load_model(model)
    quantize_model(loaded, resolve_variant(variant), None)
    return loaded


def test_reload_is_exact_and_remembers_its_base(tmp_path: Path) -> None:
    q = _quantized("rtn:w3g64asym")
    out = save_lowbit_folder(q, tmp_path / "out")
    again = load_model(str(out))
    assert again.variant == "rtn:w3g64asym" and again.base == "tiny-llama"
    for (n1, m1), (n2, m2) in zip(quantized_modules(q.model), quantized_modules(again.model), strict=True):
        assert n1 == n2 and torch.equal(m1.codes, m2.codes)
        for p in m1.quantized.params:
            assert torch.equal(m1.quantized.params[p], m2.quantized.params[p])


def test_file_size_matches_the_counted_size(tmp_path: Path) -> None:
    q = _quantized("rtn:w4g64")
    out = save_lowbit_folder(q, tmp_path / "out")
    on_disk = (out / "model.safetensors").stat().st_size
    counted = storage_bytes(q.model)
    # safetensors adds a JSON header; zero points are stored in whole bytes.
    assert counted <= on_disk < counted * 1.05 + 20_000


def test_refuses_to_overwrite_and_to_write_into_input(tmp_path: Path) -> None:
    q = _quantized()
    out = save_lowbit_folder(q, tmp_path / "out")
    with pytest.raises(LowbitError, match="already exists"):
        save_lowbit_folder(q, out)
    with pytest.raises(LowbitError, match="overwrite the input"):
        save_lowbit_folder(q, out / "inner", inputs=[out])
    save_lowbit_folder(q, out, overwrite=True)
    assert not list(tmp_path.glob(".*partial*"))


def test_float_model_cannot_be_saved_as_lowbit(tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="no quantized layers"):
        save_lowbit_folder(load_model("tiny-llama"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_description_is_reported(tmp_path: Path) -> None:
    out = save_lowbit_folder(_quantized(), tmp_path / "out")
    (out / "lowbit.json").write_text("{")
    with pytest.raises(LowbitError, match="lowbit.json is not valid JSON"):
        load_model(str(out))
    desc = {"format": "lowbit", "format_version": 99}
    (out / "lowbit.json").write_text(json.dumps(desc))
    with pytest.raises(LowbitError, match="newer lowbit"):
        load_model(str(out))


def test_encoder_round_trip(tmp_path: Path) -> None:
    q = _quantized("rtn:w8ch", "tiny-bert")
    again = load_model(str(save_lowbit_folder(q, tmp_path / "bert")))
    ids = torch.randint(0, 256, (2, 12))
    with torch.inference_mode():
        assert torch.equal(q.model(ids).last_hidden_state, again.model(ids).last_hidden_state)
