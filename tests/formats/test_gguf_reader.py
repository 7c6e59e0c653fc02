"""Corrupt or truncated GGUF files: a LowbitError naming the field, never a crash or a huge allocation."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lowbit.errors import LowbitError
from lowbit.formats.gguf_format import save_gguf
from lowbit.formats.gguf_reader import validate_gguf
from lowbit.methods import quantize_model, resolve_variant
from lowbit.models import load_model

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    loaded = load_model("tiny-llama")
    quantize_model(loaded, resolve_variant("gguf:Q4_0"), None)
    path = save_gguf(loaded, tmp_path_factory.mktemp("g") / "ok.gguf")
    return path.read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    return p


def _first_tensor_info(data: bytes) -> int:
    """Offset of the first tensor info (after the metadata), found by its name."""
    return data.index(struct.pack("<Q", len(b"token_embd.weight")) + b"token_embd.weight")


def test_valid_file_passes(good: bytes, tmp_path: Path) -> None:
    info = validate_gguf(_write(tmp_path, good))
    assert info["version"] == 3 and info["tensors"] == 20


def test_bad_magic(good: bytes, tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="bad magic"):
        validate_gguf(_write(tmp_path, b"GGML" + good[4:]))


def test_truncated_everywhere(good: bytes, tmp_path: Path) -> None:
    for cut in (10, 30, 200, 5000, len(good) // 2, len(good) - 10):
        with pytest.raises(LowbitError, match="truncated|outside the file|too short"):
            validate_gguf(_write(tmp_path, good[:cut]))


def test_counts_beyond_the_file(good: bytes, tmp_path: Path) -> None:
    data = bytearray(good)
    struct.pack_into("<Q", data, 8, 2**40)  # tensor count
    with pytest.raises(LowbitError, match="claims .* tensors"):
        validate_gguf(_write(tmp_path, bytes(data)))
    data = bytearray(good)
    # the first metadata key's length
    struct.pack_into("<Q", data, 24, 2**50)
    with pytest.raises(LowbitError, match="key of metadata entry 0"):
        validate_gguf(_write(tmp_path, bytes(data)))


def test_unknown_type_and_bad_offset(good: bytes, tmp_path: Path) -> None:
    at = _first_tensor_info(good) + 8 + len("token_embd.weight")
    n_dims = struct.unpack_from("<I", good, at)[0]
    type_at = at + 4 + 8 * n_dims
    data = bytearray(good)
    struct.pack_into("<I", data, type_at, 999)
    with pytest.raises(LowbitError, match="'token_embd.weight' has unknown ggml type id 999"):
        validate_gguf(_write(tmp_path, bytes(data)))
    data = bytearray(good)
    struct.pack_into("<Q", data, type_at + 4, 2**40)
    with pytest.raises(LowbitError, match="data of tensor 'token_embd.weight'"):
        validate_gguf(_write(tmp_path, bytes(data)))
    data = bytearray(good)
    struct.pack_into("<I", data, at, 99)
    with pytest.raises(LowbitError, match="has 99 dimensions"):
        validate_gguf(_write(tmp_path, bytes(data)))


def test_load_model_refuses_a_corrupt_gguf(good: bytes, tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="truncated"):
        load_model(str(_write(tmp_path, good[:4096])))
