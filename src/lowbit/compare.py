"""`lowbit compare`: every variant on the same model, data and float reference.

Load once → build eval/calibration sets → float reference (cached) → for each
variant: copy the float model, quantize, evaluate, record a row. A variant
that fails records its error and the run goes on.
"""

from __future__ import annotations

import copy
import gc
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from lowbit.data import DEFAULT_CALIB_SAMPLES, DEFAULT_EVAL, DEFAULT_EVAL_TOKENS, DataSets, prepare_data
from lowbit.data.windows import DEFAULT_WINDOW
from lowbit.devices import select_device
from lowbit.errors import LowbitError
from lowbit.eval.detect import compare_all, detectable_from_zero
from lowbit.eval.layer_error import RESCALING_METHODS, layer_errors
from lowbit.eval.metrics import TokenMetrics, summarize, token_metrics
from lowbit.eval.reference import Reference, load_or_compute_reference
from lowbit.methods import Variant, quantize_model, resolve_variant
from lowbit.models import DEFAULT_MODEL, LoadedModel, load_model
from lowbit.models.bundled import source_grid_note
from lowbit.report.schema import ROW_KEYS, build_report, empty_row
from lowbit.runtime.llama_cpp import speed_fields
from lowbit.runtime.quant_linear import storage_bytes
from lowbit.utils.memory import PeakRSS
from lowbit.utils.progress import info
from lowbit.utils.tensors import flush_denormal

#: What `lowbit compare` runs when no --variants are given (later issues extend these).
DEFAULT_VARIANTS = ["rtn:w8ch", "rtn:w8t", "rtn:w4g64", "rtn:w4g128asym", "rtn:w3g64", "rtn:w2g32"]
QUICK_VARIANTS = ["rtn:w8ch", "rtn:w4g64", "rtn:w3g64"]
QUICK_EVAL_TOKENS = 4096
QUICK_CALIB_SAMPLES = 16

#: How the reference runtime computes (named in every row, as speed claims must be).
REFERENCE_RUNTIME = "lowbit-reference (dequantize once, torch float matmul)"


@dataclass
class CompareOptions:
    """Inputs of one `lowbit compare` run (CLI flags map one to one)."""

    model: str = DEFAULT_MODEL
    variants: list[str] | None = None
    eval: str = DEFAULT_EVAL
    calib: str | None = None
    eval_tokens: int | None = None
    calib_samples: int | None = None
    window_tokens: int = DEFAULT_WINDOW
    seed: int = 0
    quick: bool = False
    device: str = "auto"
    text_field: str = "text"
    use_cache: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_variants(self) -> list[str]:
        """Variant strings to run."""
        if self.variants:
            return list(self.variants)
        return list(QUICK_VARIANTS if self.quick else DEFAULT_VARIANTS)


def require_causal_lm(loaded: LoadedModel) -> None:
    """Text metrics (perplexity, KLD, top-1) need next-token predictions."""
    if loaded.arch.kind != "causal-lm":
        raise LowbitError(
            f"{loaded.name} is a {loaded.arch.kind} ({loaded.arch.family}); perplexity/KLD evaluation needs a "
            "causal language model. Encoders can be quantized and saved (lowbit quantize) but not yet compared."
        )


def variant_fields(v: Variant) -> dict[str, Any]:
    """The axes of a variant that do not depend on the model."""
    return {
        "method": v.method.name,
        "scheme": v.scheme.spec(),
        "weight_bits": v.scheme.weight_bits,
        "act_bits": v.act_bits,
        "granularity": v.scheme.granularity,
        "group_size": v.scheme.group_size,
    }


def run_variant(float_model: LoadedModel, v: Variant, data: DataSets, ref: Reference,
                device: torch.device, keep: dict[str, TokenMetrics] | None = None) -> dict[str, Any]:
    """Quantize a copy of ``float_model`` with ``v``, evaluate it, return its row.

    ``keep`` (optional) receives the per-token metrics under the variant's name,
    for paired comparisons between variants.
    """
    row = empty_row(v.text)
    row.update(variant_fields(v))
    loaded = copy.deepcopy(float_model)
    try:
        with PeakRSS() as peak, flush_denormal():
            result = quantize_model(loaded, v, data.calib, device)
        row.update({
            "bits_per_weight": result.bits_per_weight,
            "size_bytes": storage_bytes(loaded.model),
            "calib_seconds": result.calib_seconds,
            "quant_seconds": result.quant_seconds,
            "peak_rss_mb": peak.peak_mb,
            "runtime": REFERENCE_RUNTIME,
            "note": source_grid_note(float_model.spec, v.scheme),
        })
        if v.method.name not in RESCALING_METHODS:
            row["layer_error"] = layer_errors(float_model.model, loaded.model)
        metrics = token_metrics(loaded.model, data.eval, ref, f"eval {v.text}")
        row.update(summarize(metrics, ref))
        if metrics.kld is not None:
            row["kld_mde"] = detectable_from_zero(metrics.kld)
        if keep is not None:
            keep[v.text] = metrics
        row.update({k: val for k, val in result.stats.items() if k in ROW_KEYS and row.get(k) is None})
        row.update(speed_fields(loaded, data.eval, row))
    finally:
        del loaded
        gc.collect()
    return row


def run_compare(opts: CompareOptions) -> dict[str, Any]:
    """Run the comparison and return the JSON report (see :mod:`lowbit.report.schema`)."""
    variants = [resolve_variant(t) for t in opts.resolved_variants()]  # fail fast on bad strings
    device = select_device(opts.device)
    eval_tokens = opts.eval_tokens or (QUICK_EVAL_TOKENS if opts.quick else DEFAULT_EVAL_TOKENS)
    calib_samples = opts.calib_samples or (QUICK_CALIB_SAMPLES if opts.quick else DEFAULT_CALIB_SAMPLES)
    info(f"loading {opts.model}")
    float_model = load_model(opts.model, seed=opts.seed)
    require_causal_lm(float_model)
    float_model.model.to(device)
    data = prepare_data(float_model.tokenizer, opts.eval, opts.calib, eval_tokens, calib_samples,
                        opts.window_tokens, opts.seed, opts.text_field)
    info(f"eval: {data.eval.tokens} tokens from {data.eval.source}")
    ref = load_or_compute_reference(float_model.model, data.eval, use_cache=opts.use_cache)
    rows = []
    kept: dict[str, TokenMetrics] = {}
    for v in variants:
        info(f"variant {v.text}")
        try:
            rows.append(run_variant(float_model, v, data, ref, device, kept))
        except LowbitError as e:
            rows.append({**empty_row(v.text), **variant_fields(v), "error": str(e)})
        except Exception as e:  # noqa: BLE001 - one broken variant must not lose the others' results
            traceback.print_exc()
            rows.append({**empty_row(v.text), **variant_fields(v), "error": f"{type(e).__name__}: {e}"})
    report = build_report(float_model, data, ref, rows, float_model.float_bytes, float_model.params)
    report["detectability"] = detectability_block(rows, kept)
    return report


def detectability_block(rows: list[dict[str, Any]], kept: dict[str, TokenMetrics]) -> dict[str, Any]:
    """Paired comparisons between the variants (largest first), of KLD and of NLL (= Δ ln ppl)."""
    order = [r["variant"] for r in sorted((r for r in rows if not r.get("error") and r.get("bits_per_weight")),
                                          key=lambda r: -r["bits_per_weight"])]
    per_token = {name: {"kld": m.kld, "nll": m.nll} for name, m in kept.items() if m.kld is not None}
    return {"metric": "kld", "power": 0.8, "alpha": 0.05,
            "pairs": [p.as_dict() for p in compare_all(per_token, order, "kld")],
            "nll_pairs": [p.as_dict() for p in compare_all(per_token, order, "nll")]}
