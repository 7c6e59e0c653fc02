"""Formats: how codes and grid parameters land on disk so that a runtime loads them.

Each format is a stateless codec over the in-memory representation: a writer
``(loaded_model, out, overwrite, inputs) -> Path``. The ``lowbit`` format
(safetensors + a JSON description) reloads exactly; later formats (gptq, awq,
compressed-tensors, bnb, gguf) write what their own runtimes read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lowbit.formats.compressed_tensors_w8a8 import save_compressed_tensors
from lowbit.formats.bnb_format import save_bnb_folder
from lowbit.formats.gguf_format import save_gguf
from lowbit.formats.hf_quantized import (
    check_variant,
    save_awq_folder,
    save_compressed_tensors_folder,
    save_gptq_folder,
)
from lowbit.formats.lowbit_format import save_lowbit_folder
from lowbit.registry import Registry
from lowbit.schemes.base import Scheme

Writer = Callable[..., Path]

WRITERS: Registry[Writer] = Registry("format")
WRITERS.add("lowbit", save_lowbit_folder)
WRITERS.add("gptq", save_gptq_folder)
WRITERS.add("awq", save_awq_folder)
WRITERS.add("compressed-tensors", save_compressed_tensors_folder, "ct")
WRITERS.add("compressed-tensors-int", save_compressed_tensors, "ct-int8", "int-quantized")
WRITERS.add("bnb", save_bnb_folder, "bitsandbytes")
WRITERS.add("gguf", save_gguf)

#: Formats that constrain the grid, checked before any (possibly long) quantization.
_CHECKED = ("gptq", "awq", "compressed-tensors")


def check_format(fmt: str, scheme: Scheme, options: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise :class:`~lowbit.errors.LowbitError` if format ``fmt`` cannot store this variant on these linears."""
    name = WRITERS.canonical(fmt)
    if name in _CHECKED:
        check_variant(name, scheme, options, shapes)


__all__ = ["WRITERS", "Writer", "check_format"]
