"""GPTQ / AWQ / compressed-tensors folders: exact round trips, and each format's own reader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.formats import WRITERS
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import LoadedModel, load_model
from lowbit.packing import pack_int32, unpack_int32
from lowbit.runtime import quantized_modules

IDS = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
CALIB = TokenSet("t", torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(1)), 1)


def quantized(variant: str, model: str = "tiny-llama") -> LoadedModel:
    m = load_model(model)
    quantize_model(m, resolve_variant(variant), CALIB)
    return m


def logits(m: LoadedModel) -> torch.Tensor:
    with torch.inference_mode():
        return m.model(IDS).logits


def dequantized(m: LoadedModel) -> dict[str, torch.Tensor]:
    return {n: mod.dequantized_weight() for n, mod in quantized_modules(m.model)}


CASES = [
    ("gptq", "gptq:w4g64+static=off", "tiny-llama"),  # dynamic act-order: non-monotone g_idx in the file
    ("gptq", "rtn:w3g64asym", "tiny-gpt2"),  # 3-bit words straddle; asym → gptq_v2; biases
    ("gptq", "rtn:w8ch", "tiny-llama"),
    ("awq", "rtn:w4g64", "tiny-llama"),
    ("awq", "rtn:w4g32", "tiny-gpt2"),
    ("compressed-tensors", "gptq:w4g64", "tiny-llama"),  # the default: act-order, static groups
    ("compressed-tensors", "rtn:w4ch", "tiny-gpt2"),
    ("compressed-tensors", "rtn:w3g32asym", "tiny-llama"),
    # QAT converts to the same representation as any PTQ method, so the serving formats take it.
    ("gptq", "qat:w4g64+steps=2+lr=1e-3", "tiny-llama"),
    ("compressed-tensors", "qat:w3g64+steps=2+lr=1e-3+lsq", "tiny-llama"),
]


@pytest.mark.parametrize(("fmt", "variant", "model"), CASES)
def test_folder_round_trip_gives_the_same_logits(tmp_path: Path, fmt: str, variant: str, model: str) -> None:
    m = quantized(variant, model)
    out = WRITERS.get(fmt)(m, tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    again = load_model(str(out))
    assert again.variant == variant and again.base == model
    assert torch.equal(logits(again), logits(m))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == fmt


def test_gptq_file_matches_the_documented_v1_formula(tmp_path: Path) -> None:
    """Dequantize with the reference formula, written out bit by bit, independent of lowbit's unpacker."""
    m = quantized("gptq:w4g64+static=off")
    out = WRITERS.get("gptq")(m, tmp_path / "g")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["checkpoint_format"], qc["sym"], qc["desc_act"], qc["bits"]) == ("gptq", True, True, 4)
    t = load_file(str(out / "model.safetensors"))
    for name, want in dequantized(m).items():
        qweight, qzeros = t[f"{name}.qweight"].long() & 0xFFFFFFFF, t[f"{name}.qzeros"].long() & 0xFFFFFFFF
        scales, g_idx = t[f"{name}.scales"].float(), t[f"{name}.g_idx"].long()
        assert torch.all(qzeros == 0x77777777)  # symmetric v1: every zero stored as 8 − 1
        i, o = qweight.shape[0] * 8, qweight.shape[1]
        shifts = torch.arange(8) * 4
        q = ((qweight.unsqueeze(1) >> shifts.view(1, 8, 1)) & 0xF).reshape(i, o)  # q[i, o]
        z = ((qzeros.unsqueeze(2) >> shifts.view(1, 1, 8)) & 0xF).reshape(-1, o) + 1  # v1: stored + 1
        w = scales[g_idx] * (q - z[g_idx]).float()  # [I, O]
        assert torch.equal(w.t(), want), name
        assert not torch.equal(g_idx, torch.arange(i) // 64)  # act-order really permuted the groups


def test_gptq_static_act_order_writes_natural_g_idx(tmp_path: Path) -> None:
    m = quantized("gptq:w4g64+act+static")
    out = WRITERS.get("gptq")(m, tmp_path / "g")
    t = load_file(str(out / "model.safetensors"))
    g_idx = t["model.layers.0.mlp.down_proj.g_idx"]
    assert torch.equal(g_idx, (torch.arange(512) // 64).to(torch.int32))
    assert json.loads((out / "config.json").read_text())["quantization_config"]["desc_act"] is False


def _awq_dequantize_gemm():  # type: ignore[no-untyped-def]
    """AutoAWQ's own pure-torch dequantizer, loaded from its file (its package import needs CUDA-era pins)."""
    spec = importlib.util.find_spec("awq")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("autoawq not installed (pip install --no-deps autoawq==0.2.9)")
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "packing_utils.py"
    mod_spec = importlib.util.spec_from_file_location("awq_packing_utils", path)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.dequantize_gemm


@pytest.mark.parametrize("variant", ["rtn:w4g64", "rtn:w4g32asym"])
def test_autoawq_dequantizes_our_awq_file_exactly(tmp_path: Path, variant: str) -> None:
    dequantize_gemm = _awq_dequantize_gemm()
    m = quantized(variant)
    out = WRITERS.get("awq")(m, tmp_path / "a")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    t = load_file(str(out / "model.safetensors"))
    for name, want in dequantized(m).items():
        # AutoAWQ computes in the scales' fp16; compare with lowbit's dequantization rounded the same way.
        got = dequantize_gemm(t[f"{name}.qweight"], t[f"{name}.qzeros"], t[f"{name}.scales"], 4, qc["group_size"])
        assert torch.equal(got.t().float(), want.half().float()), name


def test_awq_interleave_matches_the_documented_nibble_order() -> None:
    codes = torch.randint(0, 16, (3, 16), dtype=torch.uint8)  # [I, O]
    from lowbit.formats.int_codecs import _interleave

    word = pack_int32(_interleave(codes), 4).long() & 0xFFFFFFFF  # [I, 2]
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    for c in range(2):
        for k in range(8):
            assert torch.equal((word[:, c] >> (4 * k)) & 0xF, codes[:, 8 * c + order[k]].long())


@pytest.mark.parametrize("variant", ["gptq:w4g64", "rtn:w4g32asym", "rtn:w8ch", "rtn:w3chasym"])
def test_compressed_tensors_decompresses_our_folder_exactly(tmp_path: Path, variant: str) -> None:
    ct = pytest.importorskip("compressed_tensors", reason="compressed-tensors is in the dev extra")
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig

    m = quantized(variant)
    out = WRITERS.get("compressed-tensors")(m, tmp_path / "ct")
    qc = QuantizationConfig.model_validate(json.loads((out / "config.json").read_text())["quantization_config"])
    scheme = qc.config_groups["group_0"]
    t = load_file(str(out / "model.safetensors"))
    assert ct.__version__
    for name, want in dequantized(m).items():
        local = {k[len(name) + 1:]: v for k, v in t.items() if k.startswith(name + ".") and k.count(".") ==
                 name.count(".") + 1}
        got = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
        assert torch.equal(got, want), name


def test_word_packing_round_trips_every_width() -> None:
    for bits in (2, 3, 4, 5, 8):
        codes = torch.randint(0, 1 << bits, (5, 70), dtype=torch.uint8)
        words = pack_int32(codes, bits)
        assert words.dtype == torch.int32 and words.shape == (5, (70 * bits + 31) // 32)
        assert torch.equal(unpack_int32(words, bits, 70), codes)


@pytest.mark.parametrize(("fmt", "variant", "match"), [
    ("gptq", "gptq:w4g96", "group size to divide every input width: '.*' has 256 inputs"),
    ("awq", "awq:w3g64", "4-bit codes, not 3-bit"),
    ("awq", "rtn:w4ch", "stores group scales"),
    ("awq", "gptq:w4g64+static=off", "cannot store act-order group indices"),
    ("compressed-tensors", "gptq:w4g64+static=off", "cannot store act-order group indices"),
    ("gptq", "rtn:w4t", "per-tensor"),
])
def test_formats_refuse_what_they_cannot_store_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fmt: str, variant: str, match: str) -> None:
    import lowbit.quantize as qmod

    def never(*a: object, **k: object) -> None:
        raise AssertionError("quantization started before the format check")

    monkeypatch.setattr(qmod, "quantize_model", never)
    with pytest.raises(LowbitError, match=match):
        qmod.run_quantize("tiny-llama", variant, tmp_path / "x", fmt=fmt)


def test_cli_quantize_writes_a_folder_that_lowbit_eval_reads(tmp_path: Path) -> None:
    from lowbit.cli import main

    out = tmp_path / "gptq-folder"
    assert main(["--quiet", "quantize", "--model", "tiny-llama", "--variant", "gptq:w4g64", "--format", "gptq",
                 "--calib-samples", "4", "--window-tokens", "64", "--out", str(out)]) == 0
    loaded = load_model(str(out))
    assert loaded.variant == "gptq:w4g64" and len(list(quantized_modules(loaded.model))) == 14
    report = tmp_path / "eval.json"
    assert main(["--quiet", "eval", "--model", str(out), "--eval-tokens", "256", "--window-tokens", "64",
                 "--json", str(report)]) == 0
    row = json.loads(report.read_text())["results"][0]
    assert row["kld_mean"] is not None and row["kld_mean"] > 0
