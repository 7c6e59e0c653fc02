"""The float model's next-token distributions, computed once and cached.

Full log-probabilities for 16k tokens × 49k vocabulary would be 3 GB, so the
cache keeps, per token:

* the top-``k`` token ids and their log-probabilities (exact);
* the log of the probability mass outside them (a log-sum-exp over the rest);
* ``m`` tail tokens drawn from the float distribution restricted to the tail,
  with their log-probabilities;
* the NLL of the true next token.

KL(float ‖ model) is then exact over the top-``k`` and the tail bucket, plus
an unbiased, low-variance estimate of the KL *within* the tail from the drawn
tokens (see :func:`lowbit.eval.kl.kl_from_compact`). Grouping the tail
into one bucket alone would *understate* KL (by 8% at k=128 for a 3-bit
SmolLM2 here); ``tests/eval/test_reference.py`` bounds the estimate's error
against the full-vocabulary computation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.eval.kl import softmax_summary
from lowbit.utils.atomic import atomic_file
from lowbit.utils.hashing import model_fingerprint, sha256_json
from lowbit.utils.paths import cache_dir
from lowbit.utils.progress import track
from lowbit.utils.tensors import flush_denormal

TOP_K = 128
TAIL_SAMPLES = 32
CACHE_VERSION = 5


@dataclass
class Reference:
    """Compact float-model outputs on the evaluation windows.

    Per-token tensors have shape ``[windows, window_tokens - 1]`` (+ ``[k]`` / ``[m]``).

    Attributes:
        nll: negative log-likelihood of each true next token (nats).
        top_idx: int64 ids of the ``k`` most likely tokens, most likely first.
        top_logp: their log-probabilities.
        tail_logp: log of the probability mass outside the top ``k``.
        tail_idx: int64 ids of tokens sampled from the tail distribution.
        tail_sample_logp: their log-probabilities under the float model.
        tokens_per_s: evaluation throughput of the float model when computed.
    """

    nll: torch.Tensor
    top_idx: torch.Tensor
    top_logp: torch.Tensor
    tail_logp: torch.Tensor
    tail_idx: torch.Tensor
    tail_sample_logp: torch.Tensor
    tokens_per_s: float

    @property
    def ppl(self) -> float:
        """Perplexity of the float model on the evaluation tokens."""
        return float(torch.exp(self.nll.double().mean()))

    def window_slice(self, s: int, e: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(top_idx, top_logp, tail_logp, tail_idx, tail_sample_logp) of windows ``s:e`` on ``device``."""
        return tuple(t[s:e].to(device) for t in (self.top_idx, self.top_logp, self.tail_logp,
                                                 self.tail_idx, self.tail_sample_logp))


def batch_size_for(device: torch.device) -> int:
    """Windows per forward: one on CPU (fastest per token there), eight on GPU."""
    return 8 if device.type == "cuda" else 1


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def iter_logits(model: nn.Module, windows: torch.Tensor, desc: str) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, logits[b, T-1, V])`` (float32, last position dropped) per batch of windows."""
    device = model_device(model)
    bs = batch_size_for(device)
    starts = range(0, windows.shape[0], bs)
    with flush_denormal():
        for s in track(starts, desc, total=len(starts)):
            batch = windows[s : s + bs].to(device)
            yield s, model(input_ids=batch, use_cache=False).logits[:, :-1].float()


@torch.inference_mode()
def compute_reference(model: nn.Module, data: TokenSet, k: int = TOP_K, m: int = TAIL_SAMPLES,
                      seed: int = 0) -> Reference:
    """Run the float model over ``data`` and keep its compact distributions."""
    w = data.windows
    n, t = w.shape
    out = {
        "nll": torch.empty(n, t - 1),
        "top_idx": torch.empty(n, t - 1, k, dtype=torch.int64),
        "top_logp": torch.empty(n, t - 1, k),
        "tail_logp": torch.empty(n, t - 1),
        "tail_idx": torch.empty(n, t - 1, m, dtype=torch.int64),
        "tail_sample_logp": torch.empty(n, t - 1, m),
    }
    gen: torch.Generator | None = None
    start = time.perf_counter()
    for s, logits in iter_logits(model, w, "float reference"):
        if gen is None:
            gen = torch.Generator(device=logits.device).manual_seed(seed)
        b = logits.shape[0]
        targets = w[s : s + b, 1:].to(logits.device)
        # Same operations, in the same order, as the model side in
        # eval/metrics.py, so identical models compare bit-identically.
        idx = torch.topk(logits, k, dim=-1).indices
        summary = softmax_summary(logits, idx)
        lse = summary.lse
        rows = {
            "nll": -(logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse),
            "top_idx": idx,
            "top_logp": logits.gather(-1, idx) - lse.unsqueeze(-1),
        }
        tail_logits = logits.scatter(-1, idx, float("-inf"))
        # Tail tokens drawn in proportion to the float probability (renormalised
        # over the tail); a tail with zero mass contributes nothing either way.
        probs = torch.softmax(tail_logits.reshape(-1, logits.shape[-1]), dim=-1).nan_to_num_(0.0)
        del tail_logits
        probs[probs.sum(-1) == 0, 0] = 1.0
        drawn = torch.multinomial(probs, m, replacement=True, generator=gen).reshape(b, t - 1, m)
        del probs
        rows["tail_idx"] = drawn
        rows["tail_sample_logp"] = logits.gather(-1, drawn) - lse.unsqueeze(-1)
        rows["tail_logp"] = summary.tail_logp
        for key, value in rows.items():
            out[key][s : s + b] = value.cpu()
    elapsed = time.perf_counter() - start
    return Reference(**out, tokens_per_s=n * t / elapsed)


def reference_key(model: nn.Module, data: TokenSet, k: int, m: int) -> str:
    """Cache key: model weights, evaluation tokens, compaction sizes, cache layout version."""
    return sha256_json([model_fingerprint(model), data.sha256, k, m, CACHE_VERSION])


_INT_FIELDS = ("top_idx", "tail_idx")
_FIELDS = ("nll", "top_idx", "top_logp", "tail_logp", "tail_idx", "tail_sample_logp")


def load_or_compute_reference(model: nn.Module, data: TokenSet, k: int = TOP_K, m: int = TAIL_SAMPLES,
                              use_cache: bool = True) -> Reference:
    """The float reference for ``model`` on ``data``, from the on-disk cache when present."""
    path = cache_dir() / "reference" / f"{reference_key(model, data, k, m)[:32]}.safetensors"
    if use_cache and path.is_file():
        t = load_file(str(path))
        fields = {f: t[f].long() if f in _INT_FIELDS else t[f] for f in _FIELDS}
        return Reference(**fields, tokens_per_s=float(t["tokens_per_s"]))
    ref = compute_reference(model, data, k, m)
    if use_cache:
        _save(path, ref)
    return ref


def _save(path: Path, ref: Reference) -> None:
    tensors = {f: getattr(ref, f).to(torch.int32 if f in _INT_FIELDS else torch.float32).contiguous()
               for f in _FIELDS}
    tensors["tokens_per_s"] = torch.tensor(ref.tokens_per_s, dtype=torch.float64)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp))
