"""The bnb format: folders transformers + bitsandbytes load, and lowbit loading theirs.

The central test writes ``lowbit quantize --variant bnb:nf4-dq --format bnb``
and loads the folder with ``AutoModelForCausalLM.from_pretrained(DIR,
device_map="cpu")``; a second one has transformers quantize and save the same
float model and compares the two folders tensor by tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lowbit.cli import main
from lowbit.errors import LowbitError
from lowbit.formats.bnb_format import save_bnb_folder
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model
from lowbit.models.loader import save_float_folder
from lowbit.runtime import quantized_modules

IDS = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(3))
VARIANTS = ["bnb:nf4-dq", "bnb:fp4", "bnb:int8", "bnb:int8+t=0"]


def _lowbit_logits(variant: str) -> torch.Tensor:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant(variant), None)
    with torch.inference_mode():
        return loaded.model(IDS).logits


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def bnb():  # type: ignore[no-untyped-def]
    return pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'lowbit[bnb]')")


def _hf_load(folder: Path, bf16_kernel: bool = False):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    if not bf16_kernel:
        # On AVX512-BF16 CPUs Linear4bit otherwise switches to a bf16 kernel; the float32 path
        # (dequantize_4bit + matmul) is what lowbit's reference path computes.
        for mod in model.modules():
            if hasattr(mod, "support_avx512bf16_for_cpu"):
                mod.support_avx512bf16_for_cpu = False
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_loads_lowbit_bnb_folder_with_equal_logits(bnb, tmp_path: Path, variant: str,  # type: ignore[no-untyped-def]
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q"
    assert main(["--quiet", "quantize", "--model", "tiny-llama", "--variant", variant, "--format", "bnb",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "bnb" and summary["quantized_linears"] == 14
    model = _hf_load(out)
    kind = "Linear8bitLt" if "int8" in variant else "Linear4bit"
    assert type(model.model.layers[0].mlp.down_proj).__name__ == kind
    with torch.inference_mode():
        theirs = model(IDS).logits
    ours = _lowbit_logits(variant)
    assert torch.equal(theirs, ours)  # same bytes, same float32 arithmetic
    again = load_model(str(out))  # lowbit reads its own bnb folder back exactly
    assert again.variant == variant and again.base == "tiny-llama"
    with torch.inference_mode():
        assert torch.equal(again.model(IDS).logits, ours)


def test_transformers_default_cpu_kernel_is_close(bnb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("bnb:nf4"), None)
    save_bnb_folder(loaded, tmp_path / "q")
    with torch.inference_mode():
        theirs = _hf_load(tmp_path / "q", bf16_kernel=True)(IDS).logits
        ours = loaded.model(IDS).logits
    assert float((theirs - ours).norm() / ours.norm()) < 2e-2  # bf16 activations on AVX512-BF16, else exact


@pytest.fixture(scope="module")
def transformers_saved(bnb, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """tiny-llama quantized and saved by transformers itself (BitsAndBytesConfig, device_map="cpu")."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    root = tmp_path_factory.mktemp("hf-bnb")
    base = load_model("tiny-llama")
    (root / "float").mkdir()
    save_float_folder(base.model, base.tokenizer, root / "float")
    configs = {
        "bnb:nf4-dq": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                         bnb_4bit_compute_dtype=torch.float32),
        "bnb:fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
        "bnb:int8": BitsAndBytesConfig(load_in_8bit=True),
    }
    out = {}
    for variant, cfg in configs.items():
        model = AutoModelForCausalLM.from_pretrained(root / "float", quantization_config=cfg, device_map="cpu",
                                                     dtype=torch.float32)
        model.save_pretrained(root / variant)
        out[variant] = root / variant
    return out


@pytest.mark.parametrize("variant", ["bnb:nf4-dq", "bnb:fp4", "bnb:int8"])
def test_lowbit_folder_equals_what_transformers_writes(transformers_saved: dict[str, Path], tmp_path: Path,
                                                       variant: str) -> None:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant(variant), None)
    ours = save_bnb_folder(loaded, tmp_path / "q")
    theirs = transformers_saved[variant]
    cfg = json.loads((ours / "config.json").read_text())["quantization_config"]
    assert cfg == json.loads((theirs / "config.json").read_text())["quantization_config"]
    a, b = _tensors(ours), _tensors(theirs)
    assert sorted(a) == sorted(b)
    for key in b:  # same keys, dtypes, shapes and bytes: lowbit's codes are bitsandbytes' codes
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    with safe_open(str(ours / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"


@pytest.mark.parametrize("variant", ["bnb:nf4-dq", "bnb:int8"])
def test_lowbit_loads_folders_transformers_saved(transformers_saved: dict[str, Path], variant: str) -> None:
    loaded = load_model(str(transformers_saved[variant]))
    assert loaded.variant == variant and loaded.base is None
    assert len(list(quantized_modules(loaded.model))) == 14
    hf = _hf_load(transformers_saved[variant])
    with torch.inference_mode():
        assert torch.equal(loaded.model(IDS).logits, hf(IDS).logits)


def _folder_without(tmp_path: Path, variant: str, *missing: str) -> Path:
    """A bnb folder of tiny-llama from which the tensors ``missing`` were deleted."""
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant(variant), None)
    out = save_bnb_folder(loaded, tmp_path / variant.replace(":", "_"))
    tensors = _tensors(out)
    for key in missing:
        del tensors[key]
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_missing_quant_state_is_named(tmp_path: Path) -> None:
    v = "model.layers.1.self_attn.v_proj.weight"
    out = _folder_without(tmp_path, "bnb:nf4-dq", f"{v}.quant_state.bitsandbytes__nf4")
    with pytest.raises(LowbitError, match=r"'model\.layers\.1\.self_attn\.v_proj\.weight' is quantized.*quant_state"):
        load_model(str(out))
    out = _folder_without(tmp_path / "b", "bnb:nf4-dq", f"{v}.nested_absmax")
    with pytest.raises(LowbitError, match=r"v_proj\.weight\.nested_absmax' is missing"):
        load_model(str(out))


def test_missing_scb_is_named(tmp_path: Path) -> None:
    out = _folder_without(tmp_path, "bnb:int8", "model.layers.0.mlp.up_proj.SCB")
    with pytest.raises(LowbitError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight' is quantized.*up_proj\.SCB"):
        load_model(str(out))


def test_writer_refuses_what_transformers_cannot_load(tmp_path: Path) -> None:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("rtn:w4g64"), None)
    with pytest.raises(LowbitError, match="bitsandbytes grids"):
        save_bnb_folder(loaded, tmp_path / "a")
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("bnb:nf4+lm_head"), None)
    with pytest.raises(LowbitError, match="output head"):
        save_bnb_folder(loaded, tmp_path / "b")
    assert main(["--quiet", "quantize", "--model", "tiny-llama", "--variant", "rtn:w8ch", "--format", "bnb",
                 "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
