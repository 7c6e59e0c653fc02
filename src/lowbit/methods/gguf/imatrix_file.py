"""llama.cpp's two imatrix file formats, read and written.

Both as in llama.cpp 0c1e570 (``tools/imatrix/imatrix.cpp`` writes,
``common/imatrix-loader.cpp`` reads):

* **GGUF** (default of current llama-imatrix): ``general.type = "imatrix"``,
  ``imatrix.datasets`` (string array), ``imatrix.chunk_count`` and
  ``imatrix.chunk_size`` (u32); per tensor ``NAME.in_sum2`` (F32, Σx² per
  column, ne = [n, 1]) and ``NAME.counts`` (F32, tokens, ne = [1, 1]).
  Importance = in_sum2 / counts.
* **legacy .dat**: i32 entry count; per entry i32 name length, name bytes,
  i32 ncall (chunks), i32 nval, nval float32 = (Σx²/tokens)·ncall; then
  optionally i32 chunk count, i32 length + dataset name. Importance =
  value / ncall.

The reader checks every count and length against the file size before
allocating, so a truncated or corrupt file gives a LowbitError naming the
field, never a huge allocation.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from lowbit.errors import LowbitError
from lowbit.utils.atomic import atomic_file

from .imatrix import Imatrix

GGUF_MAGIC = b"GGUF"


def read_imatrix(path: Path) -> Imatrix:
    """Read an imatrix file in either format (detected by the GGUF magic)."""
    path = Path(path)
    if not path.is_file():
        raise LowbitError(f"imatrix file {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    return _read_gguf(path) if magic == GGUF_MAGIC else _read_dat(path)


def _read_gguf(path: Path) -> Imatrix:
    from lowbit.formats.gguf_reader import open_gguf

    reader = open_gguf(path)
    fields = reader.fields

    def scalar(key: str) -> int:
        f = fields.get(key)
        return int(f.contents()) if f is not None else 0

    datasets = list(fields["imatrix.datasets"].contents()) if "imatrix.datasets" in fields else []
    if "imatrix.chunk_count" not in fields and "imatrix.datasets" not in fields:
        raise LowbitError(f"{path} is a GGUF file without imatrix metadata (imatrix.datasets, imatrix.chunk_count); "
                          "is it a model rather than an importance matrix?")
    im = Imatrix(chunks=scalar("imatrix.chunk_count"), chunk_size=scalar("imatrix.chunk_size"), datasets=datasets)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.tensor_type.name != "F32":
            raise LowbitError(f"{path}: imatrix tensor '{t.name}' is {t.tensor_type.name}; sums and counts must be F32")
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = data
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = data
    if not sums:
        raise LowbitError(f"{path}: no '.in_sum2' tensors; not an importance matrix")
    for name, s in sums.items():
        if name not in counts:
            raise LowbitError(f"{path}: imatrix entry '{name}' has sums but no '.counts' tensor")
        c = counts[name]
        if c.size != 1:
            # per-expert counts (MoE): lowbit's architectures are dense
            raise LowbitError(f"{path}: imatrix entry '{name}' has {c.size} expert counts; only dense models are supported")
        im.sums[name] = s.astype(np.float64)
        im.counts[name] = int(round(float(c[0])))
    return im


def _read_dat(path: Path) -> Imatrix:
    from lowbit.formats.gguf_reader import ByteCursor

    cur = ByteCursor(path.read_bytes(), path, "imatrix")
    n_entries = cur.unpack("i", "entry count")
    if n_entries < 1 or n_entries * 12 > cur.left:
        raise LowbitError(f"{path}: not an imatrix file (entry count {n_entries} for a {len(cur.data)}-byte file)")
    im = Imatrix()
    for i in range(n_entries):
        length = cur.unpack("i", f"name length of entry {i}")
        name = bytes(cur.take(length, f"name of entry {i}")).decode("utf-8", errors="replace")
        ncall = cur.unpack("i", f"ncall of '{name}'")
        nval = cur.unpack("i", f"value count of '{name}'")
        if nval < 1:
            raise LowbitError(f"{path}: entry '{name}' has {nval} values")
        values = np.frombuffer(bytes(cur.take(4 * nval, f"values of '{name}'")), dtype="<f4").astype(np.float64)
        im.sums[name] = values
        im.counts[name] = ncall if ncall > 0 else 1  # llama.cpp uses the values as they are when ncall is 0
    if cur.left >= 4:
        im.chunks = cur.unpack("i", "chunk count")
        if cur.left >= 4:
            length = cur.unpack("i", "dataset name length")
            if 0 < length <= cur.left:
                im.datasets = [bytes(cur.take(length, "dataset name")).decode("utf-8", errors="replace")]
    return im


def write_imatrix(im: Imatrix, path: Path, fmt: str | None = None) -> Path:
    """Write ``im`` as ``fmt`` (``gguf`` or ``dat``; default: ``dat`` for a .dat path, else gguf), atomically."""
    path = Path(path)
    fmt = (fmt or ("dat" if path.suffix == ".dat" else "gguf")).lower()
    if fmt not in ("gguf", "dat"):
        raise LowbitError(f"imatrix format must be gguf or dat, got '{fmt}'")
    if not im.sums:
        raise LowbitError("the importance matrix is empty; nothing to write")
    with atomic_file(path) as tmp:
        (_write_gguf if fmt == "gguf" else _write_dat)(im, tmp)
    return path


def _write_gguf(im: Imatrix, path: Path) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch="imatrix", use_temp_file=False)
    # llama-imatrix writes general.type and the imatrix.* keys, not general.architecture
    w.kv_data[0].pop("general.architecture", None)
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", list(im.datasets) or ["unknown"])
    w.add_uint32("imatrix.chunk_count", int(im.chunks))
    w.add_uint32("imatrix.chunk_size", int(im.chunk_size))
    for name in sorted(im.sums):  # llama-imatrix sorts names for a deterministic file
        w.add_tensor(f"{name}.in_sum2", im.sums[name].astype(np.float32).reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.array([[float(im.counts[name])]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_dat(im: Imatrix, path: Path) -> None:
    chunk = max(1, int(im.chunk_size))
    out = bytearray(struct.pack("<i", len(im.sums)))
    for name in sorted(im.sums):
        raw = name.encode("utf-8")
        count = int(im.counts.get(name, 0))
        ncall = max(1, (count + chunk - 1) // chunk)  # llama-imatrix: ceiling of tokens / chunk size
        values = (im.mean(name) * np.float32(ncall)).astype("<f4")
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size) + values.tobytes()
    dataset = (im.datasets[-1] if im.datasets else "").encode("utf-8")
    out += struct.pack("<i", int(im.chunks)) + struct.pack("<i", len(dataset)) + dataset
    path.write_bytes(bytes(out))


__all__ = ["read_imatrix", "write_imatrix"]
