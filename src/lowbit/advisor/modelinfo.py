"""What the advisor needs to know about a model without quantizing it: size and linear shapes."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.errors import LowbitError


@dataclass(frozen=True)
class ModelFacts:
    """Size and shapes of a model.

    Attributes:
        spec: the model as the user named it.
        params: parameter count (tied weights once).
        linears: qualified name → ``(out_features, in_features)`` of each linear
            lowbit quantizes by default (output heads excluded).
    """

    spec: str
    params: int
    linears: dict[str, tuple[int, int]] = field(default_factory=dict)

    def size_phrase(self) -> str:
        """``135M parameters`` style phrase."""
        p = self.params
        return f"{p / 1e9:.1f}B parameters" if p >= 1e9 else f"{p / 1e6:.0f}M parameters"


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a safetensors header (no tensor data read)."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _folder_facts(folder: Path) -> ModelFacts:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LowbitError(f"{folder} has no .safetensors weights; cannot tell the model's size")
    shapes: dict[str, list[int]] = {}
    for f in files:
        shapes.update(_safetensors_shapes(f))
    params = sum(_numel(s) for s in shapes.values())
    heads = ("lm_head", "embed", "wte", "wpe", "embeddings", "pooler", "cls.", "classifier")
    linears = {k[: -len(".weight")]: (int(s[0]), int(s[1])) for k, s in shapes.items()
               if k.endswith(".weight") and len(s) == 2 and not any(h in k for h in heads)}
    return ModelFacts(str(folder), params, linears)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def model_facts(spec: str) -> ModelFacts:
    """Size and linear shapes of ``spec`` (a folder is read from its headers; other forms are loaded)."""
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "lowbit.json").is_file():
        return _folder_facts(path)
    from lowbit.methods import select_targets
    from lowbit.models import load_model

    loaded = load_model(spec)
    linears = {n: (int(m.weight.shape[0]), int(m.weight.shape[1])) for n, m in select_targets(loaded).items()}
    return ModelFacts(spec, loaded.params, linears)
