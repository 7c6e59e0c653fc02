"""`lowbit qat`: train one QAT variant on the user's text, measure it on held-out text, export it.

Training text plays the role of calibration text: ``--train`` and ``--eval``
go through :func:`lowbit.data.prepare_data`, so the two never share a document
(the same source is split; a separate source has eval documents removed).
The float reference on the eval windows is computed once (and cached); the
curve's points are scored on its first ``curve_tokens`` tokens, the PTQ start
and the trained result on all of it, with paired confidence intervals.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit.data import DEFAULT_EVAL, DEFAULT_EVAL_TOKENS, prepare_data
from lowbit.data.windows import DEFAULT_WINDOW, TokenSet, token_stream
from lowbit.devices import select_device
from lowbit.errors import LowbitError
from lowbit.eval.metrics import summarize, token_metrics
from lowbit.eval.reference import Reference, load_or_compute_reference
from lowbit.eval.stats import clustered_mean
from lowbit.formats import WRITERS
from lowbit.methods import Variant, quantize_model, resolve_variant
from lowbit.methods.qat import QAT, QATRun, validate_options
from lowbit.models import load_model
from lowbit.qat.checkpoint import read_info
from lowbit.qat.memory import available_bytes, estimate_memory, format_estimate
from lowbit.quantize import check_model_output
from lowbit.runtime.quant_linear import storage_bytes
from lowbit.utils.hashing import sha256_json
from lowbit.utils.progress import info, warn

CURVE_KEYS = ("kld_mean", "kld_ci", "top1_agreement", "ppl", "delta_ppl", "delta_ppl_ci")


def _slice(ref: Reference, n: int) -> Reference:
    """The reference restricted to its first ``n`` windows."""
    fields = {f.name: getattr(ref, f.name) for f in dataclasses.fields(ref)}
    return Reference(**{k: (v[:n] if isinstance(v, torch.Tensor) else v) for k, v in fields.items()})


def training_windows(v: Variant, window_tokens: int) -> int:
    """Distinct training windows to draw: ``+tokens`` worth, or one per window the schedule reads (one epoch)."""
    tokens = int(v.options["tokens"])
    if tokens:
        return max(1, -(-tokens // window_tokens))
    return int(v.options["steps"]) * int(v.options["batch"])


def checkpoint_dir_for(out: Path) -> Path:
    """Default checkpoint folder next to ``out``."""
    return out.with_name(out.name + ".qat-checkpoint")


def _check_variant(variant: str) -> Variant:
    v = resolve_variant(variant)
    if not isinstance(v.method, QAT):
        raise LowbitError(f"lowbit qat trains qat:… variants, got '{variant}' (method {v.method.name}); "
                          "use lowbit quantize for post-training methods")
    validate_options(v.scheme, v.options)
    return v


def run_qat(model: str, variant: str, out: Path, train: str | None = None, eval_spec: str = DEFAULT_EVAL,
            fmt: str = "lowbit", eval_tokens: int | None = None, window_tokens: int = DEFAULT_WINDOW,
            seed: int = 0, text_field: str = "text", device: str = "auto", overwrite: bool = False,
            checkpoint_every: int = 50, checkpoint_dir: Path | None = None, resume: bool = False,
            eval_every: int = 0, curve_tokens: int | None = None, max_seconds: float | None = None) -> dict[str, Any]:
    """Train ``variant`` (``qat:…``) on ``model``, write it to ``out``, and return the summary.

    ``checkpoint_every`` steps a checkpoint is written to ``checkpoint_dir``
    (default ``OUT.qat-checkpoint``); ``resume`` continues from it.
    ``eval_every`` steps a curve point is scored on ``curve_tokens`` eval tokens.
    """
    v = _check_variant(variant)
    writer = WRITERS.get(fmt)
    out = Path(out)
    inputs = check_model_output(model, out, overwrite)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else checkpoint_dir_for(out)
    if resume:
        read_info(ckpt)  # fail before loading anything if there is nothing to resume
    elif (ckpt / "state.json").exists():
        raise LowbitError(f"a QAT checkpoint already exists in {ckpt}; pass --resume to continue it, "
                          "or remove it to start over")
    dev = select_device(device)
    info(f"loading {model}")
    loaded = load_model(model, seed=seed)
    if loaded.arch.kind != "causal-lm":
        raise LowbitError(f"{loaded.name} is a {loaded.arch.kind}; QAT's losses need a causal language model")
    loaded.model.to(dev)
    data = prepare_data(loaded.tokenizer, eval_spec, train, eval_tokens or DEFAULT_EVAL_TOKENS,
                        training_windows(v, window_tokens), window_tokens, seed, text_field)
    train_set = data.calib
    if train_set is None:
        raise _short_text_error(loaded.tokenizer, train or eval_spec, text_field, window_tokens, train is None)
    info(f"train: {train_set.tokens} tokens ({train_set.windows.shape[0]} windows) from {train_set.source}")
    info(f"eval: {data.eval.tokens} tokens from {data.eval.source}")
    ref = load_or_compute_reference(loaded.model, data.eval)
    n_curve = max(1, min(data.eval.windows.shape[0], (curve_tokens or data.eval.tokens) // window_tokens))
    curve_set = TokenSet(data.eval.source, data.eval.windows[:n_curve], data.eval.documents)
    curve_ref = _slice(ref, n_curve)
    run = QATRun(checkpoint_dir=ckpt, checkpoint_every=checkpoint_every, resume=resume, eval_every=eval_every,
                 max_seconds=max_seconds, model=loaded.spec, variant=v.text,
                 train_sha256=sha256_json([train_set.source, train_set.documents, window_tokens, seed]))
    run.evaluate = _evaluator(run, data.eval, ref, curve_set, curve_ref)
    est = estimate_memory(loaded, v, window_tokens)
    info(format_estimate(est))
    avail = available_bytes()
    if avail is not None and est["total"] > avail:
        warn(f"the estimate exceeds the memory available now ({avail / 2**30:.1f} GiB); lower +batch or --window-tokens")
    result = quantize_model(loaded, dataclasses.replace(v, method=QAT(run)), train_set, dev)
    loaded.model.to("cpu")
    path = writer(loaded, out, overwrite=overwrite, inputs=inputs)
    stats = result.stats["qat"]
    before, after = stats["curve"][0], stats["curve"][-1]
    return {
        "out": str(path), "format": fmt, "variant": v.text, "checkpoint": str(ckpt),
        "bits_per_weight": result.bits_per_weight, "size_bytes": storage_bytes(loaded.model),
        "train": {"source": train_set.source, "windows": stats["training_windows"],
                  "window_tokens": stats["window_tokens"], "sha256": train_set.sha256},
        "eval": {"source": data.eval.source, "tokens": data.eval.tokens, "curve_tokens": curve_set.tokens},
        "steps": stats["step"], "finished_schedule": stats["finished_schedule"],
        "tokens_seen": stats["tokens_seen"], "train_seconds": stats["seconds"],
        "tokens_per_s": stats["tokens_seen"] / stats["seconds"] if stats["seconds"] else None,
        "memory_estimate_bytes": est,
        "before": before, "after": after, "recovery": _recovery(run),
        "curve": stats["curve"], "losses": stats["losses"],
    }


def _evaluator(run: QATRun, eval_set: TokenSet, ref: Reference, curve_set: TokenSet, curve_ref: Reference):  # type: ignore[no-untyped-def]
    """The curve callback: full eval at the start and the end, ``curve_set`` in between."""
    same = curve_set.tokens == eval_set.tokens

    def evaluate(model: nn.Module, step: int, final: bool) -> dict[str, Any]:
        full = final or step == 0
        ts, r = (eval_set, ref) if full else (curve_set, curve_ref)
        m = token_metrics(model, ts, r, f"eval step {step}")
        row = {k: v for k, v in summarize(m, r).items() if k in CURVE_KEYS}
        if full and m.kld is not None:
            run.eval_tensors["kld_final" if final else "kld_start"] = m.kld
            if not same:  # keep the curve on one token set: add the curve-set value too
                row["curve_kld_mean"] = float(m.kld[: curve_set.windows.shape[0]].mean())
        return {"step": step, "tokens": eval_set.tokens if full else curve_set.tokens, **row}

    return evaluate


def _recovery(run: QATRun) -> dict[str, Any] | None:
    """Share of the start's mean KLD that training removed, with a paired 95% interval."""
    start, final = run.eval_tensors.get("kld_start"), run.eval_tensors.get("kld_final")
    if start is None or final is None:
        return None
    gap = clustered_mean(start)
    gain = clustered_mean(start.double() - final.double())
    return {"kld_start": gap.mean, "kld_final": float(final.double().mean()), "kld_removed": gain.mean,
            "kld_removed_ci": [gain.lo, gain.hi], "fraction": gain.mean / gap.mean if gap.mean else None,
            "fraction_ci": [gain.lo / gap.mean, gain.hi / gap.mean] if gap.mean else None}


def _short_text_error(tokenizer: Any, spec: str, text_field: str, window: int, split: bool) -> LowbitError:
    from lowbit.data import load_documents

    n = len(token_stream(tokenizer, load_documents(spec, text_field)))
    part = " (its training part, after holding out the eval documents)" if split else ""
    return LowbitError(f"training text '{spec}'{part} has fewer tokens than one window of {window} "
                       f"(whole source: {n} tokens); give more --train text or a smaller --window-tokens")

