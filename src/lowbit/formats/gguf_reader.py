"""Open GGUF files defensively.

``gguf.GGUFReader`` trusts the file: a truncated or corrupted header makes it
fail deep inside numpy, or read garbage counts. :func:`validate_gguf` walks the
header first with bounds-checked reads (magic, version, counts, every
key/value, every tensor info, data offsets and sizes) and raises a
:class:`LowbitError` naming the field that is wrong, before anything sized by
the file is allocated.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from lowbit.errors import LowbitError

# GGUF value types: id → struct format (fixed-size) ; 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_MAX_DIMS = 4


class ByteCursor:
    """Little-endian reads from a byte buffer that never run past its end.

    Every read names what it is reading, so a short or corrupt file gets an
    error like "truncated or corrupt GGUF: name of tensor 3 needs 17 bytes".
    """

    def __init__(self, data: memoryview | bytes, path: Path, kind: str = "GGUF") -> None:
        self.data, self.pos, self.path, self.kind = data, 0, path, kind

    def take(self, n: int, what: str) -> memoryview | bytes:
        """The next ``n`` bytes."""
        if n < 0 or self.pos + n > len(self.data):
            raise LowbitError(f"{self.path}: truncated or corrupt {self.kind}: {what} needs {n} bytes at offset "
                              f"{self.pos}, file has {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        """One value of struct format ``fmt`` (little-endian)."""
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    @property
    def left(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos


class _Header(ByteCursor):

    def string(self, what: str) -> str:
        n = self.unpack("Q", f"length of {what}")
        return bytes(self.take(n, what)).decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)
        if vtype == 8:
            return self.string(what)
        if vtype == 9 and depth < 4:
            etype = self.unpack("I", f"element type of {what}")
            count = self.unpack("Q", f"element count of {what}")
            if etype in _SCALARS:  # skip fixed-size elements without building them
                self.take(count * struct.calcsize("<" + _SCALARS[etype]), f"elements of {what}")
                return count
            if count > len(self.data) - self.pos:  # every element takes at least one byte
                raise LowbitError(f"{self.path}: {what} claims {count} elements, more than the file can hold")
            for i in range(count):
                self.value(etype, f"{what}[{i}]", depth + 1)
            return count
        raise LowbitError(f"{self.path}: {what} has unknown value type {vtype}")


def validate_gguf(path: Path) -> dict[str, Any]:
    """Check the header of the GGUF file ``path``; returns ``{"version", "tensors", "kv"}`` counts.

    Raises LowbitError naming the offending field for a bad magic, an
    unsupported version, counts or lengths beyond the file, an unknown value
    or tensor type, a tensor with too many dimensions, or tensor data that
    lies outside the file.
    """
    import mmap

    import gguf

    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"GGUF file {path} does not exist")
    with open(path, "rb") as f:
        if path.stat().st_size < 24:
            raise LowbitError(f"{path}: {path.stat().st_size} bytes is too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            h = _Header(memoryview(mm), path)
            try:
                return _walk(h, path, gguf)
            finally:
                h.data.release()


def _walk(h: _Header, path: Path, gguf: Any) -> dict[str, Any]:
    magic = bytes(h.take(4, "magic"))
    if magic != b"GGUF":
        raise LowbitError(f"{path}: bad magic {magic!r}; not a GGUF file (expected b'GGUF')")
    version = h.unpack("I", "version")
    if version not in (2, 3):
        raise LowbitError(f"{path}: GGUF version {version} is not supported (expected 2 or 3)")
    n_tensors = h.unpack("Q", "tensor count")
    n_kv = h.unpack("Q", "metadata count")
    if n_tensors > len(h.data) // 24 or n_kv > len(h.data) // 12:
        raise LowbitError(f"{path}: header claims {n_tensors} tensors and {n_kv} metadata entries, "
                          f"more than a {len(h.data)}-byte file can hold")
    alignment = 32
    for i in range(n_kv):
        key = h.string(f"key of metadata entry {i}")
        vtype = h.unpack("I", f"value type of '{key}'")
        val = h.value(vtype, f"value of '{key}'")
        if key == "general.alignment":
            if not isinstance(val, int) or val <= 0 or val % 8:
                raise LowbitError(f"{path}: general.alignment is {val}; it must be a positive multiple of 8")
            alignment = val
    infos = []
    for i in range(n_tensors):
        name = h.string(f"name of tensor {i}")
        n_dims = h.unpack("I", f"dimension count of '{name}'")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise LowbitError(f"{path}: tensor '{name}' has {n_dims} dimensions (1 to {_MAX_DIMS} allowed)")
        dims = [h.unpack("Q", f"dimension {d} of '{name}'") for d in range(n_dims)]
        type_id = h.unpack("I", f"type of '{name}'")
        offset = h.unpack("Q", f"data offset of '{name}'")
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
        except ValueError:
            qtype = None
        if qtype is None or qtype not in gguf.GGML_QUANT_SIZES:
            raise LowbitError(f"{path}: tensor '{name}' has unknown ggml type id {type_id}")
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if dims[0] % block:
            raise LowbitError(f"{path}: tensor '{name}' rows of {dims[0]} are not whole {qtype.name} blocks of {block}")
        n = 1
        for d in dims:
            n *= d
        infos.append((name, offset, n // block * type_size))
    data_start = (h.pos + alignment - 1) // alignment * alignment
    for name, offset, nbytes in infos:
        if offset % alignment or data_start + offset + nbytes > len(h.data):
            raise LowbitError(f"{path}: data of tensor '{name}' ({nbytes} bytes at offset {offset}) lies outside "
                              f"the file or is misaligned (file has {len(h.data)} bytes, data from {data_start})")
    return {"version": version, "tensors": n_tensors, "kv": n_kv}


def open_gguf(path: Path) -> Any:
    """``gguf.GGUFReader`` on ``path`` after :func:`validate_gguf`."""
    import gguf

    validate_gguf(path)
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, KeyError, IndexError, struct.error) as e:
        raise LowbitError(f"could not read GGUF file {path}: {e}") from e


__all__ = ["ByteCursor", "open_gguf", "validate_gguf"]
