"""llama.cpp (through llama-cpp-python) as a runtime for GGUF files lowbit writes.

Used for two things: checking that llama.cpp computes what lowbit's reference
runtime computes on the same quantized weights (per-token log-probabilities),
and measuring llama.cpp's own speed (prompt processing and generation
tokens/s), which is what a GGUF user will see.

llama.cpp's CPU backend multiplies quantized weights by *quantized
activations* (Q8_K / Q8_0 per block), so its log-probabilities differ from the
exact dequantize-then-matmul reference by that activation rounding; the tests
state the tolerance measured.

The "extra buffer types" (weight repacking, AMX tiles) are disabled by
default: the llama-cpp-python wheel built on this machine's CPU
(``-march=native``, AMX) dies with SIGILL in the AMX matmul inside this VM
(AMX is advertised but its tile state is not usable), and a crash would take
the Python process with it. ``LOWBIT_LLAMA_EXTRA_BUFTS=1`` turns them back on
where they work; speed figures name the setting.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.errors import MissingExtraError


def extra_bufts_enabled() -> bool:
    """Whether llama.cpp may use repacked/AMX weight buffers (``LOWBIT_LLAMA_EXTRA_BUFTS=1``)."""
    return os.environ.get("LOWBIT_LLAMA_EXTRA_BUFTS", "0") == "1"


def _import() -> Any:
    try:
        import llama_cpp
        import llama_cpp.llama
    except ImportError:
        raise MissingExtraError("llama-cpp-python", "llama", "running GGUF files in llama.cpp") from None
    return llama_cpp


@contextlib.contextmanager
def _model_params_patch(llama_cpp: Any) -> Iterator[None]:
    """Make ``Llama`` build its model params with ``use_extra_bufts`` as configured."""
    mod = llama_cpp.llama.llama_cpp
    orig = mod.llama_model_default_params
    enabled = extra_bufts_enabled()

    def params() -> Any:
        p = orig()
        p.use_extra_bufts = enabled
        return p

    mod.llama_model_default_params = params
    try:
        yield
    finally:
        mod.llama_model_default_params = orig


def load(path: Path, n_ctx: int = 512, n_threads: int | None = None, logits_all: bool = True) -> Any:
    """A ``llama_cpp.Llama`` for the GGUF file ``path`` (CPU, quiet)."""
    llama_cpp = _import()
    threads = n_threads or max(1, os.cpu_count() or 1)
    with _model_params_patch(llama_cpp):
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=logits_all,
                               n_threads=threads, n_threads_batch=threads, verbose=False)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def token_logprobs(path: Path, windows: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    """llama.cpp's log-probabilities of every next token: ``[n_windows, T-1, vocab]`` (float64).

    Each window is evaluated from an empty context, with no BOS added, so the
    positions match a plain ``model(input_ids=window)`` forward.
    """
    windows = np.asarray(windows, dtype=np.int64)
    llm = load(path, n_ctx=int(windows.shape[1]), n_threads=n_threads)
    out = []
    try:
        for win in windows:
            llm.reset()
            llm.eval([int(t) for t in win])
            out.append(log_softmax(np.array(llm.scores[: len(win) - 1], dtype=np.float32)))
    finally:
        llm.close()
    return np.stack(out)


@dataclass
class Speed:
    """llama.cpp throughput on one machine (tokens/s) and how it was measured."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prompt_tokens: int
    generated_tokens: int
    threads: int
    detail: str

    def as_row(self) -> dict[str, Any]:
        """The entry recorded under a result row's ``speeds``."""
        return {"runtime": "llama.cpp", "prefill_tokens_per_s": self.prefill_tokens_per_s,
                "decode_tokens_per_s": self.decode_tokens_per_s, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens, "threads": self.threads, "detail": self.detail}


def measure_speed(path: Path, prompt: list[int], n_gen: int = 32, n_threads: int | None = None,
                  repeats: int = 2) -> Speed:
    """Prompt-processing and generation speed of llama.cpp on ``path`` (best of ``repeats``).

    Prefill: one ``eval`` of ``prompt``. Decode: ``n_gen`` single-token evals
    after it (greedy argmax, no sampling overhead beyond that).
    """
    llama_cpp = _import()
    threads = n_threads or max(1, os.cpu_count() or 1)
    llm = load(path, n_ctx=len(prompt) + n_gen + 1, n_threads=threads, logits_all=False)
    best_p, best_d = 0.0, 0.0
    try:
        for _ in range(max(1, repeats)):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(list(prompt))
            t1 = time.perf_counter()
            for _ in range(n_gen):
                tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                llm.eval([tok])
            t2 = time.perf_counter()
            best_p = max(best_p, len(prompt) / (t1 - t0))
            best_d = max(best_d, n_gen / (t2 - t1))
    finally:
        llm.close()
    detail = (f"llama-cpp-python {llama_cpp.__version__}, CPU, {threads} threads, "
              f"extra buffer types {'on' if extra_bufts_enabled() else 'off'}, best of {max(1, repeats)}")
    return Speed(best_p, best_d, len(prompt), n_gen, threads, detail)


#: Tokens for the speed figure recorded in `lowbit compare` rows.
SPEED_PROMPT_TOKENS = 128
SPEED_GEN_TOKENS = 16


def speed_threads() -> int:
    """Threads for llama.cpp speed figures: ``LOWBIT_LLAMA_THREADS``, else torch's (the reference runtime's)."""
    import torch

    env = os.environ.get("LOWBIT_LLAMA_THREADS")
    return int(env) if env and env.isdigit() and int(env) > 0 else max(1, torch.get_num_threads())


def speed_fields(loaded: Any, eval_set: Any, row: dict[str, Any]) -> dict[str, Any]:
    """``{"speeds": [...]}`` for a compare row of a GGUF variant, llama.cpp's measured speed included.

    Empty for non-GGUF variants, when llama-cpp-python is not installed, and
    with ``LOWBIT_LLAMA_SPEED=0``. The file is written to a temporary folder
    and deleted afterwards.
    """
    import tempfile

    from lowbit.methods.gguf import file_type_of

    if file_type_of(loaded) is None or os.environ.get("LOWBIT_LLAMA_SPEED", "1") == "0":
        return {}
    try:
        _import()
    except MissingExtraError:
        return {}
    from lowbit.formats.gguf_format import save_gguf

    speeds: list[dict[str, Any]] = [{"runtime": row.get("runtime"), "tokens_per_s": row.get("tokens_per_s")}]
    prompt = [int(t) for t in eval_set.windows.reshape(-1)[:SPEED_PROMPT_TOKENS]]
    try:
        with tempfile.TemporaryDirectory(prefix="lowbit-gguf-") as tmp:
            path = save_gguf(loaded, Path(tmp) / "variant.gguf")
            speed = measure_speed(path, prompt, SPEED_GEN_TOKENS, speed_threads())
    except Exception as e:  # noqa: BLE001 - a speed figure must not lose the variant's accuracy results
        speeds.append({"runtime": "llama.cpp", "error": f"{type(e).__name__}: {e}"})
        return {"speeds": speeds}
    speeds.append(speed.as_row())
    said = f"llama.cpp {speed.prefill_tokens_per_s:.0f} pp / {speed.decode_tokens_per_s:.1f} tg tok/s ({speed.threads} thr)"
    return {"speeds": speeds, "note": f"{row['note']}; {said}" if row.get("note") else said}


__all__ = ["Speed", "extra_bufts_enabled", "load", "log_softmax", "measure_speed", "speed_fields", "speed_threads",
           "token_logprobs"]
