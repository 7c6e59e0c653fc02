"""Tokenize documents into fixed windows of token ids."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from lowbit.utils.hashing import sha256_tokens

DEFAULT_WINDOW = 512


@dataclass
class TokenSet:
    """Fixed-length token windows and where they came from.

    Attributes:
        source: human-readable origin (spec, which part, seed).
        windows: int64 ``[n_windows, window_tokens]``.
        documents: number of documents the windows were cut from.
    """

    source: str
    windows: torch.Tensor
    documents: int

    @property
    def window_tokens(self) -> int:
        """Tokens per window."""
        return int(self.windows.shape[1])

    @property
    def tokens(self) -> int:
        """Total tokens in all windows."""
        return int(self.windows.numel())

    @property
    def sha256(self) -> str:
        """Hash of the token ids (cache key and report field)."""
        return sha256_tokens(self.windows)


def token_stream(tokenizer: Any, docs: list[str]) -> list[int]:
    """All documents tokenized and joined, each followed by the end-of-text token when there is one."""
    enc = tokenizer(docs, add_special_tokens=False)["input_ids"]
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for ids in enc:
        stream.extend(ids)
        if eos is not None:
            stream.append(int(eos))
    return stream


def cut_windows(stream: list[int], window_tokens: int) -> torch.Tensor:
    """Non-overlapping windows of ``window_tokens`` ids; the partial tail is dropped."""
    n = len(stream) // window_tokens
    return torch.tensor(stream[: n * window_tokens], dtype=torch.int64).reshape(n, window_tokens)


def sample_windows(windows: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct windows chosen by ``seed`` (all of them, in order, if ``n`` ≥ available)."""
    if n >= windows.shape[0]:
        return windows
    idx = sorted(random.Random(seed).sample(range(windows.shape[0]), n))
    return windows[idx]
