"""Calibration and evaluation sets, built the same way for every command.

The rule the seed states: calibrate on the distribution you will serve. When a
user names ``--eval`` but no ``--calib``, calibration comes from a disjoint
part of the same source; the report records where calibration came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lowbit.data.sources import BUILTINS, load_documents
from lowbit.data.split import remove_overlap, split_documents
from lowbit.data.windows import DEFAULT_WINDOW, TokenSet, cut_windows, sample_windows, token_stream
from lowbit.errors import LowbitError
from lowbit.utils.progress import warn

DEFAULT_EVAL = "builtin:python-docs"
DEFAULT_EVAL_TOKENS = 16384
DEFAULT_CALIB_SAMPLES = 128


@dataclass
class DataSets:
    """The evaluation set and the calibration set (None if the source leaves nothing for it)."""

    eval: TokenSet
    calib: TokenSet | None
    calib_note: str = ""


def _eval_set(tokenizer: Any, spec: str, docs: list[str], part: str, eval_tokens: int, window: int) -> TokenSet:
    windows = cut_windows(token_stream(tokenizer, docs), window)
    if windows.shape[0] == 0:
        n = len(token_stream(tokenizer, docs))
        raise LowbitError(
            f"eval set '{spec}'{part} has {n} tokens, fewer than one window of {window}; "
            "give more text or a smaller --window-tokens"
        )
    wanted = max(1, eval_tokens // window)
    if windows.shape[0] < wanted:
        warn(f"eval set '{spec}'{part} has {windows.shape[0]} windows of {window} tokens; "
             f"using all {windows.numel()} tokens instead of {eval_tokens}")
    return TokenSet(f"{spec}{part}", windows[:wanted], len(docs))


def _calib_set(tokenizer: Any, source: str, docs: list[str], samples: int, window: int, seed: int) -> TokenSet | None:
    if not docs:
        return None
    windows = cut_windows(token_stream(tokenizer, docs), window)
    if windows.shape[0] == 0:
        return None
    if windows.shape[0] < samples:
        warn(f"calibration text '{source}' has {windows.shape[0]} windows of {window} tokens; using all of them, "
             f"not the {samples} asked for")
    return TokenSet(source, sample_windows(windows, samples, seed), len(docs))


def prepare_data(
    tokenizer: Any,
    eval_spec: str = DEFAULT_EVAL,
    calib_spec: str | None = None,
    eval_tokens: int = DEFAULT_EVAL_TOKENS,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    window_tokens: int = DEFAULT_WINDOW,
    seed: int = 0,
    text_field: str = "text",
) -> DataSets:
    """Build the evaluation and calibration sets from the user's specs.

    Args:
        tokenizer: the model's tokenizer.
        eval_spec: evaluation text (file, folder, .jsonl, or a built-in).
        calib_spec: calibration text; None (or the same spec as ``eval_spec``)
            takes a disjoint document-level part of the evaluation source.
        eval_tokens: evaluation tokens wanted (rounded down to whole windows).
        calib_samples: calibration windows wanted.
        window_tokens: tokens per window.
        seed: seed of the document split and of the window sampling.
        text_field: JSONL field holding the text.
    """
    if tokenizer is None:
        raise LowbitError("this model folder has no tokenizer files; text evaluation needs one")
    if window_tokens < 2:
        raise LowbitError(f"--window-tokens must be at least 2, got {window_tokens}")
    if eval_tokens < 1 or calib_samples < 1:
        raise LowbitError("--eval-tokens and --calib-samples must be positive")
    eval_docs_all = load_documents(eval_spec, text_field)
    same = calib_spec is not None and calib_spec == eval_spec
    if same:
        warn(f"--calib and --eval name the same text ({eval_spec}); lowbit splits it into disjoint document parts")
    if calib_spec is None or same:
        eval_docs, calib_docs = split_documents(eval_docs_all, seed) if len(eval_docs_all) > 1 else (eval_docs_all, [])
        part = f" (eval part: {len(eval_docs)} of {len(eval_docs_all)} documents, seed {seed})"
        calib_source = (f"{eval_spec} (calibration part: {len(calib_docs)} of {len(eval_docs_all)} documents, "
                        f"disjoint from eval, seed {seed})")
        note = "same source as eval, disjoint documents"
    else:
        eval_docs, part = eval_docs_all, ""
        calib_docs, dropped = remove_overlap(load_documents(calib_spec, text_field), eval_docs)
        if dropped:
            warn(f"{dropped} calibration documents also appear in the eval set; they were left out of calibration")
        calib_source, note = calib_spec, "user-supplied"
    ev = _eval_set(tokenizer, eval_spec, eval_docs, part, eval_tokens, window_tokens)
    cal = _calib_set(tokenizer, calib_source, calib_docs, calib_samples, window_tokens, seed)
    if cal is None:
        note = "none: the source leaves no text for calibration"
    return DataSets(ev, cal, note)


def prepare_calibration(tokenizer: Any, calib_spec: str | None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
                        window_tokens: int = DEFAULT_WINDOW, seed: int = 0, text_field: str = "text") -> TokenSet:
    """Calibration windows for `lowbit quantize`, where nothing is evaluated.

    A user's ``calib_spec`` is used whole. Without one, the calibration part of
    the default evaluation source is used — the same windows `lowbit compare`
    calibrates on, so `quantize` reproduces the model `compare` measured.
    """
    if calib_spec is None:
        data = prepare_data(tokenizer, DEFAULT_EVAL, None, 1, calib_samples, window_tokens, seed, text_field)
        if data.calib is None:
            raise LowbitError(f"{DEFAULT_EVAL} left no calibration text")
        return data.calib
    docs = load_documents(calib_spec, text_field)
    cal = _calib_set(tokenizer, calib_spec, docs, calib_samples, window_tokens, seed)
    if cal is None:
        raise LowbitError(f"calibration text '{calib_spec}' is shorter than one window of {window_tokens} tokens")
    return cal


__all__ = ["BUILTINS", "DEFAULT_EVAL", "DataSets", "TokenSet", "load_documents", "prepare_calibration", "prepare_data"]
