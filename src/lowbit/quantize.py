"""`lowbit quantize`: one variant, one model, one output in the chosen format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit.data import DEFAULT_CALIB_SAMPLES, prepare_calibration
from lowbit.data.windows import DEFAULT_WINDOW
from lowbit.devices import select_device
from lowbit.formats import WRITERS, check_format
from lowbit.methods import quantize_model, resolve_variant, select_targets
from lowbit.models import load_model
from lowbit.runtime.quant_linear import storage_bytes
from lowbit.utils.atomic import check_output_path
from lowbit.utils.progress import info


def run_quantize(model: str, variant: str, out: Path, fmt: str = "lowbit", calib: str | None = None,
                 calib_samples: int | None = None, window_tokens: int = DEFAULT_WINDOW, seed: int = 0,
                 text_field: str = "text", device: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Quantize ``model`` with ``variant`` and write it to ``out`` in format ``fmt``.

    Everything that can be checked before the (possibly long) quantization is
    checked first: the variant string, the format name, the output path.
    """
    v = resolve_variant(variant)
    writer = WRITERS.get(fmt)
    out = Path(out)
    inputs = check_model_output(model, out, overwrite)
    dev = select_device(device)
    info(f"loading {model}")
    loaded = load_model(model, seed=seed)
    targets = select_targets(loaded, bool(v.options.get("lm_head")))
    check_format(fmt, v.scheme, v.options, {n: tuple(m.weight.shape) for n, m in targets.items()})
    loaded.model.to(dev)
    calib_set = None
    if v.method.uses_calibration(v.options):
        calib_set = prepare_calibration(loaded.tokenizer, calib, calib_samples or DEFAULT_CALIB_SAMPLES,
                                        window_tokens, seed, text_field)
    result = quantize_model(loaded, v, calib_set, dev)
    loaded.model.to("cpu")
    path = writer(loaded, out, overwrite=overwrite, inputs=inputs)
    return {
        "out": str(path),
        "format": fmt,
        "variant": v.text,
        "bits_per_weight": result.bits_per_weight,
        "size_bytes": storage_bytes(loaded.model),
        "quantized_linears": len(result.tensors),
        "calib_seconds": result.calib_seconds,
        "quant_seconds": result.quant_seconds,
        "calib": calib_set.source if calib_set is not None else None,
        # method-specific facts a user should see (GGUF: tensors that fell back to another type)
        **{k: result.stats[k] for k in ("fallback_tensors", "note") if k in result.stats},
    }


def check_model_output(model: str, out: Path, overwrite: bool) -> list[Path]:
    """Refuse ``out`` before any work if it exists (without ``overwrite``) or is the model itself;
    returns the input paths a writer must never overwrite."""
    model_path = Path(model).expanduser()
    inputs = [model_path] if model_path.exists() else []
    check_output_path(out, inputs, overwrite)
    return inputs
