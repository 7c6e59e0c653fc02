import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lowbit.data import prepare_data
from lowbit.errors import LowbitError
from lowbit.formats import WRITERS
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.runtime.w8a8 import w8a8_modules


def _quantized(variant: str):  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    calib = prepare_data(loaded.tokenizer, calib_samples=2, eval_tokens=256, window_tokens=64).calib
    quantize_model(loaded, resolve_variant(variant), calib)
    return loaded


@pytest.mark.parametrize("variant", ["rtn:w8a8", "smoothquant:w8a8static"])
def test_compressed_tensors_decompressor_reproduces_lowbit_weights(tmp_path: Path, variant: str) -> None:
    ct = pytest.importorskip("compressed_tensors", reason="compressed-tensors not installed (extra 'ct')")
    from compressed_tensors.compressors.naive_quantized.base import IntQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig

    loaded = _quantized(variant)
    out = WRITERS.get("compressed-tensors-int")(loaded, tmp_path / "ct")
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["format"] == "int-quantized" and cfg["ignore"] == ["lm_head"]
    qcfg = QuantizationConfig.model_validate(cfg)  # the package's own schema accepts it
    scheme = qcfg.config_groups["group_0"]
    assert scheme.input_activations.dynamic is ("static" not in variant)
    tensors = load_file(str(out / "model.safetensors"))
    mods = dict(w8a8_modules(loaded.model))
    assert len(mods) == 14
    for name, mod in mods.items():
        sd = {k: tensors[f"{name}.{k}"] for k in ("weight", "weight_scale")}
        assert sd["weight"].dtype == torch.int8 and sd["weight_scale"].shape == (mod.out_features, 1)
        got = IntQuantizationCompressor.decompress(sd, scheme)["weight"]
        assert torch.equal(got.float(), mod.dequantized_weight()), name
        if "static" in variant:
            assert torch.equal(tensors[f"{name}.input_scale"], mod.input_scale)
    assert "model.norm.weight" in tensors and "model.layers.0.input_layernorm.weight" in tensors
    assert ct.__version__


def test_only_w8a8_models_are_written(tmp_path: Path) -> None:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("rtn:w4g64"), None)
    with pytest.raises(LowbitError, match="W8A8"):
        WRITERS.get("ct-int8")(loaded, tmp_path / "x")
    assert not (tmp_path / "x").exists()
