"""Measuring one candidate for `lowbit auto` and `lowbit calib-check`, with the cache and early stopping.

Evaluation runs in looks (a quarter, half, then all of the windows). At an
interim look a candidate is decided only when its interval, widened to about
99.9% (×1.68, an O'Brien–Fleming-style boundary that keeps the overall error
near the nominal 5%), lies wholly on one side of the bar: clear passes and
clear failures cost a fraction of a full evaluation; close calls get every
window. The row reports the ordinary 95% interval of the windows measured.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
from dataclasses import dataclass, field
from typing import Any

import torch

from lowbit.advisor.bar import Bar
from lowbit.advisor.cache import Entry, concat, entry_key, load_entry, save_entry, variant_key
from lowbit.compare import runtime_name, variant_fields
from lowbit.data import DataSets
from lowbit.data.windows import TokenSet
from lowbit.eval.detect import detectable_from_zero
from lowbit.eval.layer_error import RESCALING_METHODS, layer_errors
from lowbit.eval.metrics import TokenMetrics, summarize, token_metrics
from lowbit.eval.reference import Reference, load_or_compute_reference
from lowbit.methods import Variant, quantize_model
from lowbit.models.bundled import source_grid_note
from lowbit.models.loader import LoadedModel
from lowbit.report.schema import ROW_KEYS, empty_row
from lowbit.runtime.quant_linear import storage_bytes
from lowbit.utils.hashing import model_fingerprint
from lowbit.utils.memory import PeakRSS
from lowbit.utils.tensors import flush_denormal

#: Widening of the 95% interval at interim looks (z 3.29 / z 1.96: about 99.9%).
INTERIM_WIDEN = 3.29 / 1.96
#: Fewest windows before an interim decision (Student's t with fewer is too wide to matter).
MIN_INTERIM_WINDOWS = 4


@dataclass
class Bench:
    """The float model and evaluation data every candidate of one run shares.

    ``data.eval`` is what candidates are chosen on; ``holdout`` (optional) is
    disjoint text the chosen one is confirmed on.
    """

    float_model: LoadedModel
    data: DataSets
    device: torch.device
    use_cache: bool = True
    holdout: TokenSet | None = None
    model_fp: str = ""
    refs: dict[str, Reference] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model_fp:
            self.model_fp = model_fingerprint(self.float_model.model)

    def reference(self, ts: TokenSet) -> Reference:
        """The float reference on ``ts`` (disk-cached by the eval module, memoised here)."""
        if ts.sha256 not in self.refs:
            self.refs[ts.sha256] = load_or_compute_reference(self.float_model.model, ts, use_cache=self.use_cache)
        return self.refs[ts.sha256]


def slice_reference(ref: Reference, end: int, start: int = 0) -> Reference:
    """The reference of windows ``start:end``."""
    fields = {f.name: getattr(ref, f.name) for f in dataclasses.fields(ref)}
    return Reference(**{k: (v[start:end] if isinstance(v, torch.Tensor) else v) for k, v in fields.items()})


def looks(n: int, early: bool) -> list[int]:
    """Window counts at which the evaluation is looked at: n/4, n/2, n (early), or n."""
    if not early:
        return [n]
    pts = sorted({max(MIN_INTERIM_WINDOWS, n // 4), max(MIN_INTERIM_WINDOWS, n // 2), n})
    return [p for p in pts if p <= n]


def interim_decision(bar: Bar, row: dict[str, Any], ref_ppl: float) -> str | None:
    """``pass``/``fail`` when the widened interval is wholly on one side of the bar, else None."""
    b = bar.bounds(row, ref_ppl)
    if b is None:
        return None
    est, pess, opt = b
    pess_w, opt_w = est + INTERIM_WIDEN * (pess - est), est + INTERIM_WIDEN * (opt - est)
    if bar.passes(pess_w):
        return "pass"
    if bar.fails_surely(opt_w):
        return "fail"
    return None


def _quantize(bench: Bench, v: Variant) -> tuple[LoadedModel, dict[str, Any]]:
    loaded = copy.deepcopy(bench.float_model)
    with PeakRSS() as peak, flush_denormal():
        result = quantize_model(loaded, v, bench.data.calib, bench.device)
    facts: dict[str, Any] = {
        "bits_per_weight": result.bits_per_weight, "size_bytes": storage_bytes(loaded.model),
        "calib_seconds": result.calib_seconds, "quant_seconds": result.quant_seconds, "peak_rss_mb": peak.peak_mb,
        "runtime": runtime_name(loaded.model), "note": source_grid_note(bench.float_model.spec, v.scheme),
    }
    if v.method.name not in RESCALING_METHODS:
        facts["layer_error"] = layer_errors(bench.float_model.model, loaded.model)
    if "plan" in result.stats:
        facts["plan"] = result.stats["plan"]
    # What the method reports for the row (e.g. GGUF fallbacks), as compare records it.
    facts.update({k: val for k, val in result.stats.items() if k in ROW_KEYS and facts.get(k) is None})
    return loaded, facts


def measure(bench: Bench, v: Variant, ts: TokenSet, bar: Bar | None = None,
            early: bool = False) -> tuple[dict[str, Any], TokenMetrics]:
    """Row and per-token metrics of ``v`` on ``ts`` (cached; early stopping needs a ``bar``)."""
    calib = bench.data.calib
    calib_sha = calib.sha256 if (v.method.needs_calibration and calib is not None) else None
    key = entry_key(bench.model_fp, variant_key(v.text, v.options), calib_sha, ts.sha256)
    entry = load_entry(key) if bench.use_cache else None
    ref = bench.reference(ts)
    n = int(ts.windows.shape[0])
    metrics = entry.metrics if entry else None
    facts = dict(entry.facts) if entry else {}
    cached_windows = entry.windows if entry else 0
    loaded: LoadedModel | None = None
    row: dict[str, Any] = {}
    decision = None
    try:
        for look in looks(n, early and bar is not None):
            have = 0 if metrics is None else int(metrics.nll.shape[0])
            if have < look:
                if loaded is None:
                    loaded, facts = _quantize(bench, v)
                part = TokenSet(ts.source, ts.windows[have:look], ts.documents)
                chunk = token_metrics(loaded.model, part, slice_reference(ref, look, have), f"eval {v.text}")
                metrics = concat(metrics, chunk)
                if "speeds" not in facts:
                    facts.update(_real_speed(loaded, ts, facts, metrics.tokens_per_s))
                if bench.use_cache:
                    save_entry(key, Entry(metrics, facts))
            assert metrics is not None
            used = min(look, int(metrics.nll.shape[0]))
            part_metrics = TokenMetrics(metrics.nll[:used], _cut(metrics.kld, used), _cut(metrics.top1, used),
                                        metrics.tokens_per_s)
            row = _row(v, facts, part_metrics, slice_reference(ref, used), n)
            if bar is not None and look < n:
                decision = interim_decision(bar, row, ref.ppl)
                if decision is not None:
                    break
    finally:
        del loaded
        gc.collect()
    row["cached"] = cached_windows >= int(row["windows_evaluated"])
    row["stopped_early"] = decision is not None
    return row, TokenMetrics(metrics.nll[: row["windows_evaluated"]], _cut(metrics.kld, row["windows_evaluated"]),
                             _cut(metrics.top1, row["windows_evaluated"]), metrics.tokens_per_s)


def _real_speed(loaded: LoadedModel, ts: TokenSet, facts: dict[str, Any], tokens_per_s: float) -> dict[str, Any]:
    """Speed in a real runtime where one serves the variant (llama.cpp for GGUF files), as compare records it."""
    from lowbit.runtime.llama_cpp import speed_fields

    out = speed_fields(loaded, ts, {**facts, "tokens_per_s": tokens_per_s})
    return out or {"speeds": None}


def best_decode_speed(row: dict[str, Any]) -> float:
    """Fastest measured decode speed of a row in a real runtime (tokens/s), 0 when none was measured."""
    speeds = [s.get("decode_tokens_per_s") for s in (row.get("speeds") or []) if isinstance(s, dict)]
    speeds.append(row.get("decode_tokens_per_s"))
    return max((float(x) for x in speeds if x), default=0.0)


def _cut(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if t is None else t[:n]


def _row(v: Variant, facts: dict[str, Any], m: TokenMetrics, ref: Reference, total_windows: int) -> dict[str, Any]:
    row = empty_row(v.text)
    row.update(variant_fields(v))
    row.update({k: val for k, val in facts.items() if k != "plan"})
    if "plan" in facts:
        row["plan"] = facts["plan"]
    row.update(summarize(m, ref))
    if m.kld is not None:
        row["kld_mde"] = detectable_from_zero(m.kld)
    row["windows_evaluated"] = int(m.nll.shape[0])
    row["windows_total"] = total_windows
    return row
