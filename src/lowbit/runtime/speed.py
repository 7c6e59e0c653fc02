"""Measured speed: prefill and single-token decode tokens/s, with the runtime named.

The interface is generic so that every runtime (torch float, the W8A8 int8
GEMM, llama.cpp for GGUF, bitsandbytes, …) is measured the same way:

* a :class:`Runnable` runs one model: ``prefill(ids)`` fills its KV cache from a
  prompt, ``decode()`` feeds back one token and computes the next, ``reset()``
  forgets the cache;
* a :class:`SpeedRuntime` is a name (the kernel, as a speed claim must say) and
  a ``build`` callable returning a Runnable;
* providers registered with :func:`register_speed_provider` offer the runtimes
  that can run a given loaded model; :func:`candidate_runtimes` collects them.

A measurement is one prefill of the prompt (logits of the last position only,
as a server's prefill computes), then ``decode_steps`` single-token steps
reusing the KV cache; best of ``repeats`` after one warm-up, because on a
shared machine the best time is the one least disturbed by other processes.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel
from lowbit.utils.tensors import flush_denormal

#: A quantized variant counts as slower than float when its speed is below this
#: fraction of float's: repeat-to-repeat noise of these short measurements is ~5%.
SLOWER_MARGIN = 0.95
DEFAULT_PREFILL_TOKENS = 512
DEFAULT_DECODE_STEPS = 16
#: Best of 2 after a warm-up: a third repeat moved no figure beyond this VM's ±15% noise and cost
#: the default compare run ~40 s of its 10 minutes.
DEFAULT_REPEATS = 2

FLOAT_RUNTIME = "torch eager fp32 (MKL / oneDNN sgemm)"


class Runnable(Protocol):
    """One model ready to generate, as a speed measurement drives it."""

    def reset(self) -> None:
        """Forget the KV cache."""

    def prefill(self, ids: torch.Tensor) -> None:
        """Process the prompt ``ids`` ``[1, T]`` (int64) and keep its KV cache."""

    def decode(self) -> None:
        """Process one more token (the previous step's greedy choice) with the cache."""


@dataclass(frozen=True)
class SpeedRuntime:
    """A way to run a model, named by the kernel that does the work."""

    name: str
    build: Callable[[], Runnable]
    #: Called after measuring, to name what actually ran (e.g. a kernel fell back).
    describe: Callable[[], str] | None = None


SpeedProvider = Callable[[LoadedModel], list[SpeedRuntime]]
_PROVIDERS: list[SpeedProvider] = []


def register_speed_provider(provider: SpeedProvider) -> SpeedProvider:
    """Add a provider of runtimes (it returns [] for models it cannot run)."""
    _PROVIDERS.append(provider)
    return provider


class TorchCausalLM:
    """A transformers causal LM driven eagerly with its own KV cache."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = next(iter(model.parameters())).device
        # Servers compute logits of the last prompt position only.
        params = inspect.signature(model.forward).parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers ≥ 5.2x names the KV cache argument `cache` (was `past_key_values`).
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cache: Any = None
        self._next: torch.Tensor | None = None

    def reset(self) -> None:
        self._cache = None
        self._next = None

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> None:
        out = self.model(input_ids=ids.to(self.device), use_cache=True, **self._keep)
        self._cache = self._cache_of(out)
        self._next = out.logits[:, -1:].argmax(-1)

    @torch.inference_mode()
    def decode(self) -> None:
        if self._next is None:
            raise RuntimeError("decode() before prefill()")
        out = self.model(input_ids=self._next, use_cache=True, **{self._cache_arg: self._cache})
        self._cache = self._cache_of(out)
        self._next = out.logits[:, -1:].argmax(-1)

    def _cache_of(self, out: Any) -> Any:
        return out.get(self._cache_arg, None) if hasattr(out, "get") else out.past_key_values


def torch_runtime(model: nn.Module, name: str, prepare: Callable[[], None] | None = None) -> SpeedRuntime:
    """A :class:`SpeedRuntime` running ``model`` eagerly; ``prepare`` runs first (e.g. selects a kernel)."""

    def build() -> Runnable:
        if prepare is not None:
            prepare()
        return TorchCausalLM(model)

    return SpeedRuntime(name, build)


def candidate_runtimes(loaded: LoadedModel, default_name: str) -> list[SpeedRuntime]:
    """Runtimes available here for ``loaded``: every provider's, else plain torch named ``default_name``."""
    found: list[SpeedRuntime] = []
    for provider in _PROVIDERS:
        found.extend(provider(loaded))
    return found or [torch_runtime(loaded.model, default_name)]


@dataclass
class SpeedResult:
    """One runtime's measured speed on this machine.

    Attributes:
        runtime: the kernel/runtime that ran (as named by its SpeedRuntime).
        prefill_tokens_per_s: prompt tokens processed per second (one prompt of ``prefill_tokens``).
        decode_tokens_per_s: tokens per second generating one token at a time with the KV cache.
        prefill_tokens: prompt length (tokens).
        decode_steps: single-token steps timed.
        repeats: timed repeats (best kept), after one warm-up.
        error: why it could not be measured (speeds None then).
    """

    runtime: str
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    prefill_tokens: int = 0
    decode_steps: int = 0
    repeats: int = 0
    error: str | None = None

    @property
    def request_seconds(self) -> float:
        """Time of one request (the prompt, then the decode steps); inf when unmeasured."""
        if not self.prefill_tokens_per_s or not self.decode_tokens_per_s:
            return float("inf")
        return self.prefill_tokens / self.prefill_tokens_per_s + self.decode_steps / self.decode_tokens_per_s

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def measure(runnable: Runnable, ids: torch.Tensor, decode_steps: int = DEFAULT_DECODE_STEPS,
            repeats: int = DEFAULT_REPEATS, name: str = "") -> SpeedResult:
    """Time ``runnable`` on the prompt ``ids`` ``[1, T]``; best of ``repeats`` after a warm-up."""
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
        raise LowbitError(f"speed prompt must have shape [1, T], got {list(ids.shape)}")
    best_p = best_d = float("inf")
    with flush_denormal():
        for r in range(repeats + 1):
            runnable.reset()
            t0 = time.perf_counter()
            runnable.prefill(ids)
            t1 = time.perf_counter()
            for _ in range(decode_steps):
                runnable.decode()
            t2 = time.perf_counter()
            if r == 0:
                continue  # warm-up: first-call allocations, weight caches, kernel selection
            best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
    runnable.reset()
    return SpeedResult(name, ids.shape[1] / best_p, decode_steps / best_d if decode_steps else None,
                       int(ids.shape[1]), decode_steps, repeats)


def measure_runtimes(runtimes: list[SpeedRuntime], ids: torch.Tensor, decode_steps: int = DEFAULT_DECODE_STEPS,
                     repeats: int = DEFAULT_REPEATS) -> list[SpeedResult]:
    """Measure each runtime; one that fails to build or run records its error instead."""
    out = []
    for rt in runtimes:
        try:
            result = measure(rt.build(), ids, decode_steps, repeats, rt.name)
            result.runtime = rt.describe() if rt.describe is not None else rt.name
            out.append(result)
        except (LowbitError, RuntimeError, NotImplementedError, ImportError) as e:
            out.append(SpeedResult(rt.name, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    return out


def fastest(results: list[SpeedResult]) -> SpeedResult | None:
    """The runtime that serves one request (prompt + decode steps) soonest; None if none ran."""
    ok = [r for r in results if r.error is None]
    return min(ok, key=lambda r: r.request_seconds) if ok else None


def speed_fields(best: SpeedResult | None, results: list[SpeedResult], float_speed: SpeedResult | None) -> dict[str, Any]:
    """Row fields: the fastest runtime's speeds, their ratio to float, and the slower-than-float flag."""
    fields: dict[str, Any] = {
        "prefill_tokens_per_s": None, "decode_tokens_per_s": None, "speed_runtime": None,
        "prefill_speedup": None, "decode_speedup": None, "slower_than_float": None,
        "speed_candidates": [r.as_dict() for r in results],
    }
    if best is None:
        return fields
    fields.update({"prefill_tokens_per_s": best.prefill_tokens_per_s, "decode_tokens_per_s": best.decode_tokens_per_s,
                   "speed_runtime": best.runtime})
    if float_speed is not None and float_speed.error is None:
        p = _ratio(best.prefill_tokens_per_s, float_speed.prefill_tokens_per_s)
        d = _ratio(best.decode_tokens_per_s, float_speed.decode_tokens_per_s)
        fields.update({"prefill_speedup": p, "decode_speedup": d,
                       "slower_than_float": any(x is not None and x < SLOWER_MARGIN for x in (p, d))})
    return fields


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def speed_prompt(windows: torch.Tensor, tokens: int = DEFAULT_PREFILL_TOKENS) -> torch.Tensor:
    """A real prompt for the measurement: the first ``tokens`` tokens of the first evaluation window."""
    if windows.numel() == 0:
        raise LowbitError("no evaluation tokens to time a prompt with")
    return windows[:1, :tokens].long()
