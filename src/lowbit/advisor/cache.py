"""On-disk cache of measured candidates, so re-runs and overlapping searches cost nothing.

A candidate's entry is keyed by everything its per-token results depend on:
the float model's weights, the variant (and a plan file's content), the
calibration tokens when the method reads them, the evaluation tokens, and the
reference compaction. It holds the per-token NLL, KLD and top-1 agreement of
the windows evaluated so far (a prefix: a search that stopped early can be
extended later) and the quantization facts of its row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lowbit.eval.metrics import TokenMetrics
from lowbit.eval.reference import TAIL_SAMPLES, TOP_K
from lowbit.utils.atomic import atomic_file, write_text_atomic
from lowbit.utils.hashing import sha256_json
from lowbit.utils.paths import cache_dir

CACHE_VERSION = 1


@dataclass
class Entry:
    """A cached candidate: per-token metrics of the first ``windows`` eval windows, and its row facts."""

    metrics: TokenMetrics
    facts: dict[str, Any]

    @property
    def windows(self) -> int:
        """Evaluation windows measured."""
        return int(self.metrics.nll.shape[0])


def variant_key(text: str, options: dict[str, Any]) -> list[Any]:
    """The variant's part of a key: its text, plus the content of any file an option names."""
    parts: list[Any] = [text]
    plan = options.get("plan")
    if isinstance(plan, str) and plan:
        p = Path(plan).expanduser()
        parts.append(p.read_text(encoding="utf-8") if p.is_file() else None)
    return parts


def entry_key(model_fp: str, variant: list[Any], calib_sha: str | None, eval_sha: str) -> str:
    """Cache key of one candidate measurement."""
    return sha256_json([CACHE_VERSION, model_fp, variant, calib_sha, eval_sha, TOP_K, TAIL_SAMPLES])[:40]


def _paths(key: str) -> tuple[Path, Path]:
    root = cache_dir() / "advisor"
    return root / f"{key}.safetensors", root / f"{key}.json"


def load_entry(key: str) -> Entry | None:
    """The cached entry, or None (a damaged entry counts as absent)."""
    tpath, jpath = _paths(key)
    if not (tpath.is_file() and jpath.is_file()):
        return None
    try:
        t = load_file(str(tpath))
        facts = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    m = TokenMetrics(t["nll"], t["kld"], t["top1"].bool(), float(facts.get("tokens_per_s") or 0.0))
    return Entry(m, facts)


def save_entry(key: str, entry: Entry) -> None:
    """Write (or extend) an entry atomically; tensors first, so a JSON file always has its tensors."""
    tpath, jpath = _paths(key)
    m = entry.metrics
    assert m.kld is not None and m.top1 is not None
    with atomic_file(tpath) as tmp:
        save_file({"nll": m.nll.float().contiguous(), "kld": m.kld.float().contiguous(),
                   "top1": m.top1.to(torch.uint8).contiguous()}, str(tmp))
    write_text_atomic(jpath, json.dumps({**entry.facts, "tokens_per_s": m.tokens_per_s}, default=str))


def concat(a: TokenMetrics | None, b: TokenMetrics) -> TokenMetrics:
    """Windows of ``a`` followed by those of ``b`` (throughput from the larger part)."""
    if a is None or a.nll.shape[0] == 0:
        return b
    assert a.kld is not None and b.kld is not None and a.top1 is not None and b.top1 is not None
    tps = a.tokens_per_s if a.nll.shape[0] >= b.nll.shape[0] else b.tokens_per_s
    return TokenMetrics(torch.cat([a.nll, b.nll]), torch.cat([a.kld, b.kld]), torch.cat([a.top1, b.top1]), tps)


def sensitivity_key(model_fp: str, calib_sha: str, base: str, bits: tuple[int, ...], how: str,
                    windows: int) -> Path:
    """Where a per-layer sensitivity table is cached (JSON)."""
    key = sha256_json([CACHE_VERSION, model_fp, calib_sha, base, list(bits), how, windows])[:40]
    return cache_dir() / "sensitivity" / f"{key}.json"
