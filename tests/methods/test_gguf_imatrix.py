"""llama.cpp imatrix files: both formats written and read, bad files refused by name."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant
from lowbit.methods.gguf.imatrix import Imatrix, check_against_model
from lowbit.methods.gguf.imatrix_file import read_imatrix, write_imatrix
from lowbit.models import load_model


def _im() -> Imatrix:
    rng = np.random.default_rng(1)
    im = Imatrix(chunks=5, chunk_size=64, datasets=["calib.txt"])
    for name, n in (("blk.0.attn_q.weight", 256), ("blk.0.ffn_down.weight", 512)):
        im.sums[name] = rng.random(n) * 320
        im.counts[name] = 320
    return im


def test_gguf_format_round_trip_and_layout(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    im = _im()
    path = write_imatrix(im, tmp_path / "im.gguf")
    r = gguf.GGUFReader(str(path))
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.chunk_count"].contents() == 5 and r.fields["imatrix.chunk_size"].contents() == 64
    assert list(r.fields["imatrix.datasets"].contents()) == ["calib.txt"]
    t = {x.name: x for x in r.tensors}
    assert list(t["blk.0.ffn_down.weight.in_sum2"].shape) == [512, 1]  # ne0 = columns, as llama-imatrix writes
    assert list(t["blk.0.ffn_down.weight.counts"].shape) == [1, 1]
    back = read_imatrix(path)
    for name in im.sums:
        np.testing.assert_array_equal(back.mean(name), im.mean(name))
        assert back.counts[name] == 320


def test_legacy_dat_layout_and_round_trip(tmp_path: Path) -> None:
    im = _im()
    path = write_imatrix(im, tmp_path / "im.dat")
    raw = path.read_bytes()
    n_entries, name_len = struct.unpack_from("<ii", raw, 0)
    name = raw[8:8 + name_len].decode()
    ncall, nval = struct.unpack_from("<ii", raw, 8 + name_len)
    assert (n_entries, name, ncall, nval) == (2, "blk.0.attn_q.weight", 5, 256)  # ncall = ceil(320 / 64)
    first = np.frombuffer(raw, "<f4", count=1, offset=16 + name_len)[0]
    assert first == pytest.approx(im.mean(name)[0] * 5)  # stored as (sum / count) · ncall
    back = read_imatrix(path)
    assert back.chunks == 5 and back.datasets == ["calib.txt"]
    for n in im.sums:
        np.testing.assert_allclose(back.mean(n), im.mean(n), rtol=1e-6)


def test_dat_written_by_hand_like_llama_imatrix(tmp_path: Path) -> None:
    vals = np.arange(1, 33, dtype="<f4") * 3  # ncall 3 → importance 1..32
    body = struct.pack("<i", 1) + struct.pack("<i", 19) + b"blk.0.attn_k.weight" + struct.pack("<ii", 3, 32)
    (tmp_path / "x.dat").write_bytes(body + vals.tobytes())  # no trailing chunk count: optional
    im = read_imatrix(tmp_path / "x.dat")
    np.testing.assert_allclose(im.mean("blk.0.attn_k.weight"), np.arange(1, 33))


@pytest.mark.parametrize("cut", [3, 10, 30, 100])
def test_truncated_dat_is_refused_with_the_field(tmp_path: Path, cut: int) -> None:
    raw = write_imatrix(_im(), tmp_path / "im.dat").read_bytes()
    bad = tmp_path / "bad.dat"
    bad.write_bytes(raw[:cut])
    with pytest.raises(LowbitError, match="truncated|not an imatrix"):
        read_imatrix(bad)


def test_absurd_counts_do_not_allocate(tmp_path: Path) -> None:
    bad = tmp_path / "huge.dat"
    bad.write_bytes(struct.pack("<ii", 1, 4) + b"abcd" + struct.pack("<ii", 1, 2**30))
    with pytest.raises(LowbitError, match="values of 'abcd'"):
        read_imatrix(bad)
    bad.write_bytes(struct.pack("<i", 2**31 - 1))
    with pytest.raises(LowbitError, match="not an imatrix"):
        read_imatrix(bad)


def test_model_file_is_not_an_imatrix(tmp_path: Path) -> None:
    from lowbit.formats.gguf_format import save_gguf

    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("gguf:Q8_0"), None)
    path = save_gguf(loaded, tmp_path / "m.gguf")
    with pytest.raises(LowbitError, match="without imatrix metadata"):
        read_imatrix(path)


def test_mismatched_imatrix_names_the_tensor(tmp_path: Path) -> None:
    im = Imatrix(chunks=1, chunk_size=8)
    im.sums["blk.0.attn_q.weight"], im.counts["blk.0.attn_q.weight"] = np.ones(100), 8
    path = write_imatrix(im, tmp_path / "wrong.gguf")
    with pytest.raises(LowbitError, match=r"'blk\.0\.attn_q\.weight' has 100 values, but the tensor has 256"):
        quantize_model(load_model("tiny-llama"), resolve_variant(f"gguf:Q4_K_M+imatrix={path}"), None)
    other = Imatrix(chunks=1, chunk_size=8)
    other.sums["blk.99.ffn_down.weight"], other.counts["blk.99.ffn_down.weight"] = np.ones(4), 8
    path = write_imatrix(other, tmp_path / "other.gguf")
    with pytest.raises(LowbitError, match="names none of this model's tensors"):
        quantize_model(load_model("tiny-llama"), resolve_variant(f"gguf:Q4_K_M+imatrix={path}"), None)
    with pytest.raises(LowbitError, match="does not exist"):
        quantize_model(load_model("tiny-llama"), resolve_variant(f"gguf:Q4_K_M+imatrix={tmp_path}/none.dat"), None)


def test_nan_entries_and_missing_tensors() -> None:
    im = Imatrix()
    im.sums["a"], im.counts["a"] = np.array([1.0, np.nan]), 1
    with pytest.raises(LowbitError, match="NaN"):
        check_against_model(im, {"a": 2, "b": 4}, "x")
    im.sums["a"] = np.ones(2)
    assert check_against_model(im, {"a": 2, "b": 4}, "x") == ["b"]
    assert np.array_equal(Imatrix(sums={"z": np.zeros(3)}, counts={"z": 0}).mean("z"), np.ones(3))  # unseen → 1


def test_collected_imatrix_written_and_reused(tmp_path: Path) -> None:
    from lowbit.data import prepare_data

    loaded = load_model("tiny-llama")
    calib = prepare_data(loaded.tokenizer, calib_samples=4, eval_tokens=256, window_tokens=64).calib
    res = quantize_model(loaded, resolve_variant("gguf:Q4_K_M+imatrix"), calib)
    path = write_imatrix(res.stats["imatrix_data"], tmp_path / "collected.gguf")
    again = quantize_model(load_model("tiny-llama"), resolve_variant(f"gguf:Q4_K_M+imatrix={path}"), None)
    for name, q in res.tensors.items():
        assert np.array_equal(q.codes.numpy(), again.tensors[name].codes.numpy()), name


def test_cli_imatrix_file_feeds_a_variant(tmp_path: Path) -> None:
    from lowbit.cli import main

    out = tmp_path / "tiny.imatrix.gguf"
    assert main(["--quiet", "imatrix", "--model", "tiny-llama", "--calib-samples", "2", "--window-tokens", "64",
                 "--out", str(out)]) == 0
    im = read_imatrix(out)
    assert len(im) == 14 and im.chunks == 2 and im.chunk_size == 64 and im.counts["blk.1.ffn_down.weight"] == 128
    res = quantize_model(load_model("tiny-llama"), resolve_variant(f"gguf:Q4_K_M+imatrix={out}"), None)
    assert res.stats["imatrix"]["entries"] == 14
