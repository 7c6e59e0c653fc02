"""Formats: how codes and grid parameters land on disk so that a runtime loads them.

Each format is a stateless codec over the in-memory representation: a writer
``(loaded_model, out, overwrite, inputs) -> Path``. The ``lowbit`` format
(safetensors + a JSON description) reloads exactly; later formats (gptq, awq,
compressed-tensors, bnb, gguf) write what their own runtimes read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lowbit.formats.gguf_format import save_gguf
from lowbit.formats.lowbit_format import save_lowbit_folder
from lowbit.registry import Registry

Writer = Callable[..., Path]

WRITERS: Registry[Writer] = Registry("format")
WRITERS.add("lowbit", save_lowbit_folder)
WRITERS.add("gguf", save_gguf)

__all__ = ["WRITERS", "Writer"]
