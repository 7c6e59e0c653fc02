"""`lowbit compare`: every variant on the same model, data and float reference.

Load once → build eval/calibration sets → float reference (cached) → for each
variant: copy the float model, quantize, evaluate, record a row. A variant
that fails records its error and the run goes on.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from lowbit.data import DEFAULT_EVAL, DataSets, prepare_data
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
from lowbit.runtime.llama_cpp import speed_fields as llama_speed_fields
from lowbit.runtime.bnb_kernels import bnb_speed_fields
from lowbit.runtime.quant_linear import run_stats, storage_bytes
from lowbit.runtime.quant_linear import runtime_name as module_runtime_name
from lowbit.runtime.speed import (
    DEFAULT_DECODE_STEPS,
    DEFAULT_REPEATS,
    FLOAT_RUNTIME,
    SpeedResult,
    candidate_runtimes,
    fastest,
    measure_runtimes,
    speed_fields,
    speed_prompt,
)
from lowbit.runtime.w8a8 import w8a8_runtime_name
from lowbit.utils.memory import PeakRSS
from lowbit.utils.progress import info
from lowbit.utils.tensors import flush_denormal
from lowbit.variant import VariantString

#: What `lowbit compare` runs when no --variants are given: one row per branch of the decision
#: rule that runs here — 8-bit weight-only (RTN, LLM.int8()), the 4-bit GPU candidates against
#: their RTN baseline (GPTQ and AWQ, at 4 and 3 bits), NF4, and W8A8 for small latency-bound
#: models. The other grids (rtn:w8t, w4g128asym, w2g32, bnb:nf4-dq, ...) and the methods that
#: train or need llama.cpp (qat, smoothquant, gguf) run when named. With COMPARE_EVAL_TOKENS and
#: COMPARE_CALIB_SAMPLES the whole default run stays under 10 minutes on 2 cores
#: (bench/compare_default.py).
DEFAULT_VARIANTS = ["rtn:w8ch", "bnb:int8", "rtn:w4g64", "gptq:w4g64", "awq:w4g64", "bnb:nf4",
                    "rtn:w3g64", "gptq:w3g64", "awq:w3g64", "rtn:w8a8"]
#: Evaluation tokens and calibration windows when not given. 8k tokens resolve KLD differences
#: of ~0.01 at 4 bits (each row prints what its set can detect); 16 windows (8k tokens) are
#: more than GPTQ's widest Hessian needs, and on the bundled model gave GPTQ w4g64 the same KLD
#: as 64 windows (0.128 vs 0.126). `lowbit quantize` calibrates on lowbit.data.DEFAULT_CALIB_SAMPLES.
COMPARE_EVAL_TOKENS = 8192
COMPARE_CALIB_SAMPLES = 16
QUICK_VARIANTS = ["rtn:w8ch", "rtn:w4g64", "rtn:w3g64"]
QUICK_EVAL_TOKENS = 4096
QUICK_CALIB_SAMPLES = 16
#: (decode steps, repeats) of each speed measurement: --quick times one repeat of fewer steps.
QUICK_SPEED = (8, 1)



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
    #: measure prefill/decode tokens/s of the float model and every variant
    speed: bool = True
    #: single-token decode steps and timed repeats per speed measurement (None: by mode, see QUICK_SPEED)
    speed_decode_steps: int | None = None
    speed_repeats: int | None = None
    #: deployment target name for the "no accelerated path" flag (None: this machine)
    target: str | None = None
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


def runtime_name(model: torch.nn.Module) -> str:
    """The kernel a quantized model's outputs came from (W8A8 names its int8 GEMM or its fallback)."""
    return w8a8_runtime_name(model) or module_runtime_name(model)


@dataclass
class SpeedSetup:
    """What every speed measurement of one run shares: the prompt and the float model's result."""

    prompt: torch.Tensor
    float_best: SpeedResult | None
    decode_steps: int = DEFAULT_DECODE_STEPS
    repeats: int = DEFAULT_REPEATS
    #: (scheme, runtime, candidate runtimes) → (variant measured, its results). How fast a model
    #: runs depends on its grid and kernel, not on the method that chose the codes: gptq:w4g64
    #: and awq:w4g64 reuse rtn:w4g64's measurement and say so.
    measured: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[SpeedResult]]] = field(default_factory=dict)


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


def runtime_row_stats(model: torch.nn.Module) -> dict[str, Any]:
    """Row fields measured while evaluating: the share of input columns LLM.int8() kept in float."""
    stats = run_stats(model)
    if stats.get("input_cols"):
        return {"outlier_col_share": stats["outlier_cols"] / stats["input_cols"]}
    return {}


def quick_variant(v: Variant) -> Variant:
    """``v`` with its method's cheaper ``--quick`` settings (options written in the variant are kept)."""
    given = {name for name, _ in VariantString.parse(v.text).options}
    options = v.method.quick_options(dict(v.options), given)
    # The row names what actually ran: e.g. qat:w3g64 → qat:w3g64+steps=4.
    text = v.text + "".join(f"+{k}={options[k]}" for k in options if options[k] != v.options.get(k))
    return dataclasses.replace(v, text=text, options=options)


def run_variant(float_model: LoadedModel, v: Variant, data: DataSets, ref: Reference,
                device: torch.device, speed: SpeedSetup | None = None, target: Any = None,
                keep: dict[str, TokenMetrics] | None = None) -> dict[str, Any]:
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
            "note": "; ".join(n for n in (source_grid_note(float_model.spec, v.scheme), result.stats.get("note")) if n)
                    or None,
        })
        if v.method.name not in RESCALING_METHODS:
            row["layer_error"] = layer_errors(float_model.model, loaded.model)
        metrics = token_metrics(loaded.model, data.eval, ref, f"eval {v.text}")
        row.update(summarize(metrics, ref))
        row.update(runtime_row_stats(loaded.model))
        if metrics.kld is not None:
            row["kld_mde"] = detectable_from_zero(metrics.kld)
        if keep is not None:
            keep[v.text] = metrics
        row.update({k: val for k, val in result.stats.items() if k in ROW_KEYS and row.get(k) is None})
        # After evaluating, so a W8A8 kernel that fell back is named; a method's own runtime name is kept.
        row["runtime"] = w8a8_runtime_name(loaded.model) or row.get("runtime") or module_runtime_name(loaded.model)
        row.update(llama_speed_fields(loaded, data.eval, row))
        if speed is not None:
            candidates = candidate_runtimes(loaded, row["runtime"])
            key = (v.scheme.spec(), str(row["runtime"]), tuple(c.name for c in candidates))
            if key in speed.measured:
                source, results = speed.measured[key]
                row["speed_shared_with"] = source
            else:
                info(f"speed {v.text}")
                results = measure_runtimes(candidates, speed.prompt, speed.decode_steps, speed.repeats)
                speed.measured[key] = (v.text, results)
            row.update(speed_fields(fastest(results), results, speed.float_best))
        if target is not None:
            from lowbit.hardware import target_fields

            row.update(target_fields(v.scheme, target))
        row.update(bnb_speed_fields(loaded, data.eval, row))  # last: it swaps in bitsandbytes' modules
    finally:
        del loaded
        gc.collect()
    return row


def run_compare(opts: CompareOptions) -> dict[str, Any]:
    """Run the comparison and return the JSON report (see :mod:`lowbit.report.schema`)."""
    from lowbit.hardware import get_target, target_here

    variants = [resolve_variant(t) for t in opts.resolved_variants()]  # fail fast on bad strings
    if opts.quick:
        variants = [quick_variant(v) for v in variants]
    device = select_device(opts.device)
    target = get_target(opts.target) if opts.target else target_here(device.type)
    eval_tokens = opts.eval_tokens or (QUICK_EVAL_TOKENS if opts.quick else COMPARE_EVAL_TOKENS)
    calib_samples = opts.calib_samples or (QUICK_CALIB_SAMPLES if opts.quick else COMPARE_CALIB_SAMPLES)
    info(f"loading {opts.model}")
    float_model = load_model(opts.model, seed=opts.seed)
    require_causal_lm(float_model)
    float_model.model.to(device)
    data = prepare_data(float_model.tokenizer, opts.eval, opts.calib, eval_tokens, calib_samples,
                        opts.window_tokens, opts.seed, opts.text_field)
    info(f"eval: {data.eval.tokens} tokens from {data.eval.source}")
    ref = load_or_compute_reference(float_model.model, data.eval, use_cache=opts.use_cache)
    speed = None
    float_results: list[SpeedResult] = []
    if opts.speed:
        info("speed of the float model")
        prompt = speed_prompt(data.eval.windows)
        steps, repeats = QUICK_SPEED if opts.quick else (DEFAULT_DECODE_STEPS, DEFAULT_REPEATS)
        steps = opts.speed_decode_steps or steps
        repeats = opts.speed_repeats or repeats
        float_results = measure_runtimes(candidate_runtimes(float_model, FLOAT_RUNTIME), prompt, steps, repeats)
        speed = SpeedSetup(prompt, fastest(float_results), steps, repeats)
    rows = []
    kept: dict[str, TokenMetrics] = {}
    for v in variants:
        info(f"variant {v.text}")
        try:
            rows.append(run_variant(float_model, v, data, ref, device, speed, target, kept))
        except LowbitError as e:
            rows.append({**empty_row(v.text), **variant_fields(v), "error": str(e)})
        except Exception as e:  # noqa: BLE001 - one broken variant must not lose the others' results
            traceback.print_exc()
            rows.append({**empty_row(v.text), **variant_fields(v), "error": f"{type(e).__name__}: {e}"})
    report = build_report(float_model, data, ref, rows, float_model.float_bytes, float_model.params)
    if report["reference"] is not None and speed is not None:
        best = speed.float_best
        report["reference"].update({
            "prefill_tokens_per_s": best.prefill_tokens_per_s if best else None,
            "decode_tokens_per_s": best.decode_tokens_per_s if best else None,
            "speed_runtime": best.runtime if best else None,
            "speed_prompt_tokens": int(speed.prompt.shape[1]),
            "speed_candidates": [r.as_dict() for r in float_results],
        })
    report["target"] = {"name": target.name, "given": opts.target is not None, "summary": target.summary}
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
