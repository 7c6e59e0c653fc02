"""llama.cpp file types (``Q4_K_M``, ``Q3_K_S`` …): per-tensor mixtures of GGUF types.

A file type names a *default* block type and a set of per-tensor rules
(``llama_tensor_get_type`` in llama.cpp's ``src/llama-quant.cpp``: attn_v and
ffn_down bumps, a Q6_K output …). The rules need each tensor's GGUF name and
layer, so only method ``gguf`` can apply a mixture; as a scheme it records
which file type was asked for, and every quantized tensor carries its own
:class:`~lowbit.schemes.gguf.scheme.GGUFScheme` (``gguf:Q6_K`` …), which is what
bits-per-weight sums over.

Canonical spec: ``gguf-mix:Q4_K_M`` (distinct from ``gguf:Q6_K``, the single
block type that the file type ``Q6_K`` mostly uses).
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme

from .scheme import FLOAT_TYPES, GGUFScheme, block_size


@dataclass(frozen=True)
class FileType:
    """One ``llama_ftype``.

    Attributes:
        name: the name ``llama-quantize`` takes (``Q4_K_M``).
        ftype_id: value of ``general.file_type``.
        default: ggml type of tensors no rule singles out.
    """

    name: str
    ftype_id: int
    default: str


FILE_TYPES: dict[str, FileType] = {
    f.name: f
    for f in (
        FileType("F32", 0, "F32"),
        FileType("F16", 1, "F16"),
        FileType("BF16", 32, "BF16"),
        FileType("Q4_0", 2, "Q4_0"),
        FileType("Q4_1", 3, "Q4_1"),
        FileType("Q8_0", 7, "Q8_0"),
        FileType("Q5_0", 8, "Q5_0"),
        FileType("Q5_1", 9, "Q5_1"),
        FileType("Q2_K", 10, "Q2_K"),
        FileType("Q3_K_S", 11, "Q3_K"),
        FileType("Q3_K_M", 12, "Q3_K"),
        FileType("Q3_K_L", 13, "Q3_K"),
        FileType("Q4_K_S", 14, "Q4_K"),
        FileType("Q4_K_M", 15, "Q4_K"),
        FileType("Q5_K_S", 16, "Q5_K"),
        FileType("Q5_K_M", 17, "Q5_K"),
        FileType("Q6_K", 18, "Q6_K"),
        FileType("IQ4_NL", 25, "IQ4_NL"),
        FileType("IQ4_XS", 30, "IQ4_XS"),
    )
}
"""The file types lowbit writes, by name."""


def get_file_type(name: str) -> FileType:
    """Look a file type up (case-insensitive); LowbitError listing the choices if unknown."""
    key = name.strip().upper()
    if key not in FILE_TYPES:
        hint = ""
        if key in ("Q3_K", "Q4_K", "Q5_K"):
            hint = (f" ({key} is a block type; its llama.cpp file types are {key}_S/{key}_M"
                    f"{'/' + key + '_L' if key == 'Q3_K' else ''}; rtn:gguf:{key} puts every linear in {key})")
        raise LowbitError(f"unknown llama.cpp file type '{name}'{hint}; choose one of {', '.join(FILE_TYPES)}")
    return FILE_TYPES[key]


def fallback_type(qtype: str, ncols: int) -> str:
    """llama.cpp's ``tensor_type_fallback``: the type a row of ``ncols`` weights gets instead of ``qtype``."""
    if qtype in FLOAT_TYPES or ncols % block_size(qtype) == 0:
        return qtype
    to = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
          "IQ4_XS": "IQ4_NL"}.get(qtype, qtype)  # 32-blocks have nothing smaller to fall back to
    return to if ncols % block_size(to) == 0 else "F16"


@dataclass(frozen=True)
class GGUFMixture(Scheme):
    """A llama.cpp file type, applied tensor by tensor by method ``gguf``.

    Attributes:
        ftype: file type name (``Q4_K_M``).
    """

    ftype: str = "Q4_K_M"
    family = "gguf-mix"
    #: Only this method knows the per-tensor rules (checked by Method.check_scheme).
    requires_method = "gguf"

    def __post_init__(self) -> None:
        get_file_type(self.ftype)

    @classmethod
    def parse(cls, text: str) -> GGUFMixture | None:
        """``Q4_K_M`` → the mixture; None when ``text`` is no file type."""
        key = text.strip().upper()
        return cls(key) if key in FILE_TYPES else None

    @property
    def file_type(self) -> FileType:
        """The llama.cpp file type."""
        return FILE_TYPES[self.ftype]

    @property
    def default_scheme(self) -> GGUFScheme:
        """The block type of tensors no rule singles out."""
        return GGUFScheme(self.file_type.default)

    def spec(self) -> str:
        return f"gguf-mix:{self.ftype}"

    @property
    def weight_bits(self) -> int:
        return self.default_scheme.weight_bits

    @property
    def granularity(self) -> str:
        return self.default_scheme.granularity

    @property
    def group_size(self) -> int | None:
        return self.default_scheme.group_size

    def check_shape(self, shape: tuple[int, ...], name: str = "weight") -> None:
        # Any row length is representable: the fallback ends at F16.
        Scheme.check_shape(self, shape, name)

    def storage_bits(self, shape: tuple[int, ...]) -> int:
        """Bits for a tensor no rule singles out (default type after the shape fallback)."""
        self.check_shape(shape)
        return GGUFScheme(fallback_type(self.file_type.default, shape[1])).storage_bits(shape)

    def _refuse(self) -> LowbitError:
        return LowbitError(f"{self.spec()} is a llama.cpp mixture whose types depend on each tensor's name and "
                           f"layer; quantize with method gguf (variant gguf:{self.ftype}), or pick one block "
                           f"type for every linear (e.g. rtn:gguf:{self.file_type.default})")

    def quantize(self, w, importance=None) -> QuantizedTensor:  # type: ignore[no-untyped-def]
        raise self._refuse()

    def dequantize(self, q, dtype=None):  # type: ignore[no-untyped-def]
        raise self._refuse()
