"""The JSON report (``--json``). Stable: later versions add fields, never rename.

```
{"lowbit_version", "created", "command", "machine": {"cpu", "cores", "ram_gb", "gpu"},
 "model": {"name", "params", "float_bytes"},
 "eval": {"source", "tokens", "windows", "window_tokens", "sha256"},
 "calib": {"source", "samples", "window_tokens", "sha256"},
 "reference": {"ppl", "tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "speed_runtime", …},
 "target": {"name", "given", "summary"},
 "results": [ROW, ...]}
```
Each ROW has every key of :data:`ROW_KEYS` (None where not applicable).
``outlier_col_share``: for LLM.int8() rows, the share of (linear call, input
column) pairs that went through the float path on the evaluation set.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from lowbit import __version__
from lowbit.data import DataSets
from lowbit.data.windows import TokenSet
from lowbit.eval.reference import Reference
from lowbit.models.loader import LoadedModel
from lowbit.utils.atomic import write_text_atomic
from lowbit.utils.machine import machine_info

ROW_KEYS = (
    "variant", "method", "scheme", "weight_bits", "act_bits", "granularity", "group_size",
    "bits_per_weight", "size_bytes",
    "ppl", "ppl_ci", "delta_ppl", "delta_ppl_ci", "delta_ppl_mde",
    "kld_mean", "kld_ci", "kld_p50", "kld_p90", "kld_p99", "kld_max",
    "top1_agreement", "top1_ci",
    "calib_seconds", "quant_seconds", "peak_rss_mb", "tokens_per_s",
    "runtime", "note", "error",
    # Added by the advisor (0.1+): the smallest KLD this eval set detects against
    # the float model, and ‖W−Ŵ‖/‖W‖ per quantized linear.
    "kld_mde", "layer_error",
    # GGUF (method gguf): tensors that fell back to another type because their rows are not whole
    # blocks (llama.cpp's count), and speed per runtime ([{"runtime": ..., tokens/s ...}], llama.cpp's included)
    "fallback_tensors", "speeds",
    # speed (lowbit.runtime.speed): fastest runtime here, ratio to the float model, the flag
    "prefill_tokens_per_s", "decode_tokens_per_s", "speed_runtime", "prefill_speedup", "decode_speedup",
    "slower_than_float", "speed_candidates",
    # the variant whose speed measurement this row reuses (same scheme and runtime), or None
    "speed_shared_with",
    # deployment target (lowbit.hardware): support-matrix verdict for the variant's scheme
    "target", "target_scheme", "target_support", "target_runtimes", "no_accelerated_path",
    # LLM.int8(): share of input columns kept in float (outliers)
    "outlier_col_share",
)


def empty_row(variant: str) -> dict[str, Any]:
    """A result row with every key present and unset."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row["variant"] = variant
    return row


def token_set_block(ts: TokenSet | None, calib: bool) -> dict[str, Any] | None:
    """The ``eval`` or ``calib`` block."""
    if ts is None:
        return None
    block: dict[str, Any] = {"source": ts.source, "window_tokens": ts.window_tokens, "sha256": ts.sha256}
    if calib:
        block["samples"] = int(ts.windows.shape[0])
    else:
        block.update({"tokens": ts.tokens, "windows": int(ts.windows.shape[0])})
    return block


def build_report(loaded: LoadedModel, data: DataSets, ref: Reference | None, rows: list[dict[str, Any]],
                 float_bytes: int, params: int) -> dict[str, Any]:
    """Assemble the whole JSON document."""
    calib = token_set_block(data.calib, calib=True)
    if calib is not None:
        calib["note"] = data.calib_note
    return {
        "lowbit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "lowbit " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine_info(),
        "model": {"name": loaded.name, "params": params, "float_bytes": float_bytes},
        "eval": token_set_block(data.eval, calib=False),
        "calib": calib,
        "reference": {"ppl": ref.ppl, "tokens_per_s": ref.tokens_per_s} if ref is not None else None,
        "results": rows,
    }


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become null: JSON has no NaN, and a NaN metric means "not measurable"."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def dumps(report: dict[str, Any]) -> str:
    """The report as pretty-printed, strictly valid JSON."""
    return json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n"


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report atomically."""
    write_text_atomic(Path(path), dumps(report))
