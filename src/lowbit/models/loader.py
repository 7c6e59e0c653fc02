"""``load_model(spec)``: every way a user can name a model.

* ``smollm2-135m`` (the bundled default) and ``minilm``;
* ``tiny-llama`` / ``tiny-gpt2`` / ``tiny-bert`` (seeded, built in code);
* a Hugging Face folder (config.json + safetensors, sharded or not);
* a ``.gguf`` file (dequantized to float once, cached as safetensors);
* a folder written by ``lowbit quantize`` (format ``lowbit``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.models.arch import ArchSpec, arch_for_model_type
from lowbit.models.bundled import minilm_dir, smollm2_gguf_path
from lowbit.models.tiny import TINY_BUILDERS, build_tiny
from lowbit.utils.atomic import atomic_dir
from lowbit.utils.hashing import sha256_json
from lowbit.utils.paths import cache_dir
from lowbit.utils.progress import info
from lowbit.utils.tensors import count_nonfinite

DEFAULT_MODEL = "smollm2-135m"
BUNDLED = ("smollm2-135m", "minilm")


@dataclass
class LoadedModel:
    """A model ready to quantize or evaluate, with what is known about where it came from.

    Attributes:
        model: the torch module (eval mode, float unless ``variant`` is set).
        tokenizer: its tokenizer, or None when the folder has none.
        spec: the string the user passed (``smollm2-135m``, a path, ...).
        arch: per-family knowledge (blocks, input groups, skipped heads).
        variant: the lowbit variant it was quantized with, if any.
        base: spec of the float model it was quantized from, if known.
        seed: seed used to build tiny models.
    """

    model: nn.Module
    tokenizer: Any
    spec: str
    arch: ArchSpec
    variant: str | None = None
    base: str | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Display name: the spec, shortened to the folder or file name for paths."""
        return Path(self.spec).name if ("/" in self.spec or self.spec.endswith(".gguf")) else self.spec

    @property
    def params(self) -> int:
        """Number of float-equivalent weights (unique storage, tied weights once)."""
        return sum(t.numel() for t in _unique_tensors(self.model, params_only=True))

    @property
    def float_bytes(self) -> int:
        """Bytes of the model's parameters at their current dtype (tied weights once)."""
        return sum(t.numel() * t.element_size() for t in _unique_tensors(self.model, params_only=True))


def _unique_tensors(model: nn.Module, params_only: bool) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    tensors = list(model.parameters())
    if not params_only:
        tensors += list(model.buffers())
    for t in tensors:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out.append(t)
    return out


def check_weights_finite(model: nn.Module) -> None:
    """Refuse a model with NaN/Inf weights, naming the first bad tensor."""
    for name, p in model.named_parameters():
        bad = count_nonfinite(p)
        if bad:
            raise LowbitError(f"weight '{name}' has {bad} NaN/Inf values; the model cannot be quantized or evaluated")


def conv1d_to_linear(model: nn.Module) -> None:
    """Replace GPT-2 style Conv1D ([in, out] weights) by equivalent nn.Linear."""
    from transformers.pytorch_utils import Conv1D

    for name, mod in list(model.named_modules()):
        if isinstance(mod, Conv1D):
            n_in, n_out = mod.weight.shape
            lin = nn.Linear(n_in, n_out, bias=mod.bias is not None, device=mod.weight.device, dtype=mod.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(mod.weight.t())
                if mod.bias is not None:
                    lin.bias.copy_(mod.bias)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, lin)


def _finish(model: nn.Module, arch: ArchSpec) -> nn.Module:
    if arch.family == "gpt2":
        conv1d_to_linear(model)
    model.eval()
    model.requires_grad_(False)
    check_weights_finite(model)
    return model


def _read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise LowbitError(f"{folder} has no config.json; expected a Hugging Face model folder")
    try:
        return dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise LowbitError(f"{cfg_path} is not valid JSON: {e}") from e


def load_hf_folder(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any, ArchSpec]:
    """Load a Hugging Face folder (safetensors only: lowbit never unpickles weights)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    cfg = _read_config(folder)
    arch = arch_for_model_type(str(cfg.get("model_type", "?")))
    if not any(folder.glob("*.safetensors")):
        raise LowbitError(f"{folder} has no .safetensors weights (lowbit does not load pickled .bin files)")
    cls = AutoModelForCausalLM if arch.kind == "causal-lm" else AutoModel
    try:
        model = cls.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise LowbitError(f"could not load the model in {folder}: {e}") from e
    tokenizer = None
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return _finish(model, arch), tokenizer, arch


def save_float_folder(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    """Write a float model as config.json + model.safetensors (+ tokenizer).

    Tied output embeddings are stored once, under the input embedding's name,
    as transformers expects.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    state = model.state_dict()
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    in_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if out_emb is not None and in_emb is not None and out_emb.weight.data_ptr() == in_emb.weight.data_ptr():
        for key, t in list(state.items()):
            if t.data_ptr() == out_emb.weight.data_ptr() and key.endswith("lm_head.weight"):
                del state[key]
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load_gguf(path: Path, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any, ArchSpec]:
    """Dequantize a GGUF file with transformers once; later loads read the cached float copy."""
    import transformers

    st = path.stat()
    key = sha256_json([str(path.resolve()), st.st_size, int(st.st_mtime), transformers.__version__])[:16]
    cached = cache_dir() / "models" / f"{path.stem}-{key}"
    if not (cached / "model.safetensors").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lowbit.formats.gguf_reader import validate_gguf

        validate_gguf(path)  # a corrupt header gets an error naming the field, not a crash inside a reader
        info(f"converting {path.name} to float once (cached in {cached})")
        try:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise LowbitError(f"could not load GGUF file {path}: {e}") from e
        with atomic_dir(cached, overwrite=True) as tmp:
            save_float_folder(model, tokenizer, tmp)
        del model
    return load_hf_folder(cached, dtype)


def load_model(spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, seed: int = 0) -> LoadedModel:
    """Load the model ``spec`` names (see module docstring for the accepted forms)."""
    if spec == "smollm2-135m":
        model, tok, arch = load_gguf(smollm2_gguf_path(), dtype)
        return LoadedModel(model, tok, spec, arch)
    if spec == "minilm":
        model, tok, arch = load_hf_folder(minilm_dir(), dtype)
        return LoadedModel(model, tok, spec, arch)
    if spec in TINY_BUILDERS:
        model, tok = build_tiny(spec, seed)
        arch = arch_for_model_type(model.config.model_type)
        return LoadedModel(_finish(model.to(dtype), arch), tok, spec, arch, seed=seed)
    path = Path(spec).expanduser()
    if not path.exists():
        known = ", ".join([*BUNDLED, *TINY_BUILDERS])
        raise LowbitError(f"model '{spec}' not found: no such file or folder, and not a known name ({known})")
    if path.is_file():
        if path.suffix != ".gguf":
            raise LowbitError(f"{path} is a file but not a .gguf; pass a model folder or a .gguf file")
        model, tok, arch = load_gguf(path, dtype)
        return LoadedModel(model, tok, str(path), arch)
    if (path / "lowbit.json").is_file():
        from lowbit.formats.lowbit_format import load_lowbit_folder

        return load_lowbit_folder(path, dtype)
    model, tok, arch = load_hf_folder(path, dtype)
    return LoadedModel(model, tok, str(path), arch)
