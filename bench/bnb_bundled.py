"""bitsandbytes grids on the bundled SmolLM2-135M: speed, exactness and quality targets (issue #4).

    python bench/bnb_bundled.py [--eval-tokens 16384] [--skip-compare]

Measures, and writes to bench/results/bnb_bundled.json:

* seconds to quantize the whole model to NF4-dq (target: < 10 s);
* for every linear of the model, whether lowbit's bytes equal bitsandbytes'
  (``quantize_4bit`` state for nf4 / nf4-dq / fp4, ``Int8Params`` CB/SCB) —
  when bitsandbytes is installed;
* a `lowbit compare` of the bnb variants against their RTN counterparts
  (targets: bnb:int8 mean KLD below rtn:w8ch's or within its CI; NF4 mean KLD
  below rtn:w4g64asym's, same block size), with bitsandbytes' kernels as extra
  rows where it is installed.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time

import torch
from _common import write_result

from lowbit.compare import CompareOptions, run_compare
from lowbit.formats.bnb_layout import to_bnb
from lowbit.methods import quantize_model, resolve_variant, select_targets
from lowbit.models import load_model
from lowbit.report.table import print_table
from lowbit.schemes import parse_scheme
from lowbit.utils.tensors import flush_denormal

VARIANTS = ["rtn:w8ch", "rtn:w4g64asym", "bnb:int8", "bnb:int8+t=0", "bnb:nf4", "bnb:nf4-dq", "bnb:fp4"]
KERNEL_VARIANTS = ["bnb:int8+runtime=bitsandbytes", "bnb:nf4+runtime=bitsandbytes", "bnb:nf4-dq+runtime=bitsandbytes"]


def quant_time(model: str) -> float:
    loaded = load_model(model)
    with flush_denormal():
        start = time.perf_counter()
        quantize_model(loaded, resolve_variant("bnb:nf4-dq"), None)
        return time.perf_counter() - start


def exactness(model: str) -> dict[str, object]:
    """Per grid: linears whose lowbit bytes equal bitsandbytes' (all of them, or the names that differ)."""
    import bitsandbytes as bnb

    loaded = load_model(model)
    weights = {n: lin.weight.detach().clone() for n, lin in select_targets(loaded).items()}
    out: dict[str, object] = {"bitsandbytes": bnb.__version__, "linears": len(weights)}
    for spec in ["nf4", "nf4-dq", "fp4"]:
        s = parse_scheme(spec)
        bad = []
        for name, w in weights.items():
            mine = to_bnb(s.quantize(w))
            packed, state = bnb.functional.quantize_4bit(w, blocksize=s.blocksize, quant_type=s.quant_type,
                                                         compress_statistics=s.double_quant)
            theirs = {"weight": packed, **{f"weight.{k}": v for k, v in state.as_dict(packed=True).items()}}
            if sorted(mine) != sorted(theirs) or not all(torch.equal(mine[k], theirs[k]) for k in theirs):
                bad.append(name)
        out[spec] = {"identical": len(weights) - len(bad), "differ": bad}
    s = parse_scheme("int8")
    bad = []
    for name, w in weights.items():
        q = s.quantize(w)
        p = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False).to("cpu")
        if not (torch.equal(q.codes, p.CB) and torch.equal(q.params["SCB"], p.SCB)):
            bad.append(name)
    out["int8"] = {"identical": len(weights) - len(bad), "differ": bad}
    return out


def targets(rows: dict[str, dict]) -> dict[str, object]:
    def kld(v: str) -> tuple[float, list[float]]:
        return rows[v]["kld_mean"], rows[v]["kld_ci"]

    i8, i8_ci = kld("bnb:int8")
    w8, w8_ci = kld("rtn:w8ch")
    nf4, _ = kld("bnb:nf4")
    a4, _ = kld("rtn:w4g64asym")
    return {
        "int8_kld_below_or_within_w8ch_ci": bool(i8 < w8 or w8_ci[0] <= i8 <= w8_ci[1]),
        "int8_vs_w8ch": {"bnb:int8": [i8, i8_ci], "rtn:w8ch": [w8, w8_ci]},
        "nf4_kld_below_w4g64asym": bool(nf4 < a4),
        "nf4_vs_w4g64asym": {"bnb:nf4": nf4, "rtn:w4g64asym": a4, "ratio": nf4 / a4},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--skip-compare", action="store_true")
    args = p.parse_args()
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    result: dict[str, object] = {"model": args.model, "nf4_dq_quant_seconds": quant_time(args.model)}
    result["nf4_dq_under_10s"] = result["nf4_dq_quant_seconds"] < 10  # type: ignore[operator]
    if have_bnb:
        result["exact_vs_bitsandbytes"] = exactness(args.model)
    if not args.skip_compare:
        variants = copy.copy(VARIANTS) + (KERNEL_VARIANTS if have_bnb else [])
        with flush_denormal():
            report = run_compare(CompareOptions(model=args.model, variants=variants, eval_tokens=args.eval_tokens,
                                                device="cpu"))
        print_table(report)
        result["targets"] = targets({r["variant"]: r for r in report["results"]})
        result["report"] = report
    write_result("bnb_bundled", result)


if __name__ == "__main__":
    main()
