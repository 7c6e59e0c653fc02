"""Method ``gguf``: llama.cpp file types (``gguf:Q4_K_M``, ``gguf:Q6_K`` …) tensor by tensor.

For every 2-D weight the GGUF file will hold, the type ``llama-quantize``
would choose (:mod:`.rules`: attn_v / ffn_down bumps, Q6_K output and tied
token embedding, the shape fallback) is quantized with lowbit's bit-exact
codecs, optionally weighted by an importance matrix (``+imatrix`` from the
calibration text, ``+imatrix=FILE`` from a llama.cpp imatrix file).

Decisions where llama.cpp and lowbit's runtime differ:

* The output head and a tied token embedding are quantized by default, as
  llama.cpp does (``+lm_head=false`` keeps both float). A tied pair is stored
  once, as ``token_embd.weight``: the head holds the quantized matrix and the
  input embedding looks its rows up (:mod:`lowbit.runtime.quant_embedding`),
  so size and bits per weight count it once. An untied ``token_embd`` gets
  the default type, as in llama.cpp.
* ``fallback_tensors`` counts what llama.cpp's "N of M tensor(s) required
  fallback quantization" counts; ``--no-fallback`` (``+no_fallback``) refuses
  instead.
* ``+gptq`` keeps every tensor's type and lets GPTQ choose the codes of the
  decoder-block linears on that type's grid (:mod:`.with_gptq`); llama.cpp
  has no such mode, but its loader reads the result like any other file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.methods.base import Method, QuantContext
from lowbit.models.gguf_arch import gguf_arch, hparams, module_name_of, tensor_name, tied_embeddings
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.schemes.gguf.mixture import GGUFMixture, get_file_type
from lowbit.schemes.gguf.scheme import GGUFScheme
from lowbit.utils.progress import track, warn
from lowbit.variant import OptionSpec

from .imatrix import Imatrix, check_against_model, collect_imatrix
from .rules import ModelFacts, TypePlan, plan_types, sort_key
from .with_gptq import gptq_targets, solve_mixture

#: ``+imatrix`` without a file: collect one from the calibration text.
FROM_CALIB = "calib"


def weight_names(model: nn.Module) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """GGUF names of the model's 2-D weights, and the shapes of every 2-D tensor the file holds.

    Returns ``(module → GGUF name, GGUF name → (rows, ncols))``. A tied output
    head maps to ``token_embd.weight`` (the file stores the pair once).
    """
    arch = gguf_arch(model.config.model_type)
    hp = hparams(model.config)
    tied = tied_embeddings(model)
    head = module_name_of(model, model.get_output_embeddings())
    names: dict[str, str] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for mname, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if not isinstance(mod, nn.Linear | nn.Embedding) or not isinstance(w, torch.Tensor) or w.dim() != 2:
            continue
        if tied and mname == head:
            continue
        g = tensor_name(arch, hp.n_layer, f"{mname}.weight")
        if g is None:
            raise LowbitError(f"no llama.cpp tensor name for '{mname}.weight' (architecture {arch.name})")
        names[mname] = g
        shapes[g] = (int(w.shape[0]), int(w.shape[1]))
    if tied and head is not None:
        emb = module_name_of(model, model.get_input_embeddings())
        names[head] = names[emb] if emb in names else "token_embd.weight"
    return names, shapes


class GGUF(Method):
    """llama.cpp's quantization: a file type's per-tensor GGUF types, encoded bit-exactly."""

    name = "gguf"
    summary = "llama.cpp file types (Q4_K_M, Q6_K, Q4_0 …), bit-exact with llama-quantize"
    needs_calibration = True  # read only with +imatrix
    options: ClassVar[dict[str, OptionSpec]] = {
        "lm_head": OptionSpec("lm_head", bool, True, "quantize output.weight and a tied token_embd as llama.cpp "
                              "does (Q6_K, or Q8_0 when rows are not 256-multiples); false keeps them float"),
        "imatrix": OptionSpec("imatrix", str, "", "importance matrix: +imatrix collects one from the calibration "
                              "text, +imatrix=FILE reads a llama.cpp imatrix (.gguf or legacy .dat)", bare=FROM_CALIB),
        "no_fallback": OptionSpec("no_fallback", bool, False, "refuse a tensor whose rows are not whole blocks of "
                                  "its type instead of falling back as llama.cpp does"),
        "gptq": OptionSpec("gptq", bool, False, "choose the codes of every block linear by GPTQ on its type's grid "
                           "(k-quant grids fitted up front and held fixed), from the calibration text"),
    }

    def uses_calibration(self, options: dict[str, Any]) -> bool:
        """Only ``+imatrix`` (collected from text) and ``+gptq`` read calibration windows."""
        return options.get("imatrix") == FROM_CALIB or bool(options.get("gptq"))

    def check_options(self, scheme: Scheme, options: dict[str, Any]) -> None:
        if options.get("gptq") and isinstance(scheme, GGUFMixture) and not scheme.default_scheme.has_column_grid:
            raise LowbitError(f"gguf:{scheme.ftype}+gptq: {scheme.file_type.default} has no grid GPTQ can choose "
                              "codes on (only Q4_0 … Q8_0 and Q2_K … Q6_K do); drop +gptq or pick such a file type")

    def resolve_scheme(self, text: str) -> Scheme:
        """The scheme part names a llama.cpp file type (``Q4_K_M``, ``Q6_K``, ``F16`` …)."""
        body = text.split(":", 1)[1] if ":" in text else text
        return GGUFMixture(get_file_type(body).name)

    def check_scheme(self, scheme: Scheme) -> None:
        if not isinstance(scheme, GGUFMixture):
            raise LowbitError(f"method gguf takes a llama.cpp file type (e.g. gguf:Q4_K_M), not {scheme.spec()}")

    def quantize(self, ctx: QuantContext) -> None:
        mix = ctx.scheme
        assert isinstance(mix, GGUFMixture)
        model = ctx.model
        names, shapes = weight_names(model)
        tied = tied_embeddings(model)
        head = module_name_of(model, model.get_output_embeddings())
        emb = module_name_of(model, model.get_input_embeddings())
        quant_head = bool(ctx.options["lm_head"])
        wanted: dict[str, nn.Module] = dict(ctx.targets)
        if quant_head:
            for extra in (head, None if tied else emb):
                if extra is not None and extra in names:
                    wanted[extra] = model.get_submodule(extra)
        unnamed = [m for m in wanted if m not in names]
        if unnamed:
            raise LowbitError(f"gguf: no llama.cpp tensor for linear '{unnamed[0]}'")
        keep_float = frozenset() if quant_head else frozenset(names[m] for m in (head, emb) if m in names)
        imatrix = self._importance(ctx, names, wanted)
        hp = hparams(model.config)
        facts = ModelFacts(gguf_arch(model.config.model_type).name, hp.n_layer, hp.n_head, hp.n_head_kv)
        plan = plan_types(mix.file_type, shapes, facts, imatrix is not None, keep_float)
        self._check_fallbacks(ctx, plan, shapes)
        types = {m: plan.types[names[m]] for m in wanted}

        def importance(module: str) -> torch.Tensor | None:
            g = names[module]
            if imatrix is None or g not in imatrix or not g.startswith("blk."):  # llama-imatrix only sees blk.*
                return None
            return torch.from_numpy(imatrix.mean(g))

        def place(module: str, q: QuantizedTensor) -> None:
            q.meta["gguf_name"] = names[module]
            if tied and module == head and emb is not None:
                q.meta["tied_embedding"] = emb
            ctx.install(module, q)

        solved = gptq_targets(ctx, wanted, types) if ctx.options["gptq"] else {}
        # the rest first: GPTQ's calibration then sees the quantized embedding, as the file will
        rest = sorted((m for m in wanted if m not in solved), key=lambda m: sort_key(names[m]))
        for module in track(rest, f"gguf {mix.ftype}: tensors"):
            w = wanted[module].weight.detach().to(ctx.device)
            place(module, GGUFScheme(types[module]).quantize(w, importance(module)))
        if solved:
            seconds, record = solve_mixture(ctx, solved, types, importance, place)
            ctx.stats["calib_seconds"] = ctx.stats.get("calib_seconds", 0.0) + seconds
            ctx.stats["gptq"] = {**record, "plain": [names[m] for m in rest]}
        ctx.loaded.extra["gguf"] = {"file_type": mix.ftype, "imatrix": ctx.stats.get("imatrix")}

    def _check_fallbacks(self, ctx: QuantContext, plan: TypePlan, shapes: dict[str, tuple[int, int]]) -> None:
        lines = plan.describe_fallbacks(shapes)
        # llama-quantize counts against every tensor of the file (norms included): tied pairs once
        total = len({p.data_ptr() for p in ctx.model.parameters()})
        ctx.stats["fallback_tensors"] = len(plan.fallbacks)
        ctx.stats["gguf_tensor_types"] = dict(plan.types)
        ctx.stats["gguf_fallbacks"] = lines
        if lines and ctx.options["no_fallback"]:
            raise LowbitError(f"gguf: {len(lines)} of {total} tensors would need fallback quantization "
                              f"(+no_fallback): {lines[0]}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""))
        if lines:
            warn(f"gguf: {len(lines)} of {total} tensor(s) required fallback quantization, e.g. {lines[0]}")
            ctx.stats["note"] = f"{len(lines)} of {total} tensors fell back (rows not whole blocks of their type)"

    def _importance(self, ctx: QuantContext, names: dict[str, str], wanted: dict[str, nn.Module]) -> Imatrix | None:
        """The importance matrix the options ask for, keyed by GGUF name (None without +imatrix)."""
        opt = str(ctx.options["imatrix"] or "")
        if not opt:
            return None
        blocks = {m: mod for m, mod in wanted.items() if names[m].startswith("blk.") and isinstance(mod, nn.Linear)}
        if opt == FROM_CALIB:
            calib = ctx.require_calib("gguf +imatrix")
            start = time.perf_counter()
            im = collect_imatrix(ctx.loaded, calib, blocks, names, ctx.device)
            ctx.stats["calib_seconds"] = time.perf_counter() - start
            source = f"collected from {calib.source}"
        else:
            from .imatrix_file import read_imatrix

            path = Path(opt).expanduser()
            im = read_imatrix(path)
            missing = check_against_model(im, {names[m]: int(mod.in_features) for m, mod in blocks.items()}, str(path))
            if missing:
                warn(f"imatrix {path} has no entry for {len(missing)} tensor(s), e.g. {missing[0]}; "
                      "they are quantized without one (as llama.cpp does)")
            source = str(path)
        ctx.stats["imatrix"] = {"source": source, "entries": len(im), "chunks": im.chunks,
                                "datasets": list(im.datasets)}
        ctx.stats["imatrix_data"] = im
        return im


def file_type_of(loaded: Any) -> str | None:
    """The llama.cpp file type a model was quantized to by method gguf (None otherwise)."""
    info = getattr(loaded, "extra", {}).get("gguf")
    return info.get("file_type") if isinstance(info, dict) else None


__all__ = ["FROM_CALIB", "GGUF", "file_type_of", "weight_names"]
