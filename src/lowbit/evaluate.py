"""`lowbit eval`: one model's metrics, against a float reference when one is known."""

from __future__ import annotations

from typing import Any

from lowbit.compare import REFERENCE_RUNTIME, require_causal_lm, variant_fields
from lowbit.data import DEFAULT_EVAL_TOKENS, DataSets, prepare_data
from lowbit.data.windows import DEFAULT_WINDOW
from lowbit.devices import select_device
from lowbit.errors import LowbitError
from lowbit.eval.metrics import summarize, token_metrics
from lowbit.eval.reference import load_or_compute_reference
from lowbit.methods import resolve_variant
from lowbit.models import load_model
from lowbit.report.schema import build_report, empty_row
from lowbit.runtime.quant_linear import quantized_modules, storage_bytes
from lowbit.utils.progress import info


def run_eval(model: str, reference: str | None, eval_spec: str, eval_tokens: int | None,
             window_tokens: int = DEFAULT_WINDOW, seed: int = 0, text_field: str = "text",
             device: str = "auto") -> dict[str, Any]:
    """Evaluate ``model``; KLD/top-1 against ``reference``, or the model's recorded base."""
    dev = select_device(device)
    info(f"loading {model}")
    loaded = load_model(model, seed=seed)
    require_causal_lm(loaded)
    ref_spec = reference or loaded.base
    ref_loaded = None
    if ref_spec:
        info(f"loading reference {ref_spec}")
        ref_loaded = load_model(ref_spec, seed=loaded.seed)
        if len(ref_loaded.tokenizer) != len(loaded.tokenizer):
            raise LowbitError(f"{model} and reference {ref_spec} have different vocabularies "
                              f"({len(loaded.tokenizer)} vs {len(ref_loaded.tokenizer)}); KLD needs the same one")
    tokenizer = (ref_loaded or loaded).tokenizer
    # No calibration here, so the whole eval source could be used; the split is
    # still applied so `eval` scores exactly the tokens `compare` scores.
    data: DataSets = prepare_data(tokenizer, eval_spec, None, eval_tokens or DEFAULT_EVAL_TOKENS, 1,
                                  window_tokens, seed, text_field)
    ref = None
    if ref_loaded is not None:
        ref_loaded.model.to(dev)
        ref = load_or_compute_reference(ref_loaded.model, data.eval)
        ref_loaded.model.to("cpu")
    loaded.model.to(dev)
    row = empty_row(loaded.variant or loaded.name)
    if loaded.variant:
        row.update(variant_fields(resolve_variant(loaded.variant)))
    qmods = list(quantized_modules(loaded.model))
    if qmods:
        bits = sum(m.scheme.tensor_storage_bits(m.quantized) for _, m in qmods)
        row["bits_per_weight"] = bits / sum(m.out_features * m.in_features for _, m in qmods)
    row["size_bytes"] = storage_bytes(loaded.model)
    row["runtime"] = REFERENCE_RUNTIME
    row.update(summarize(token_metrics(loaded.model, data.eval, ref, f"eval {loaded.name}"), ref))
    base = ref_loaded or loaded
    return build_report(loaded, data, ref, [row], base.float_bytes, base.params)
