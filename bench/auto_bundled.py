"""`lowbit auto --max-kld 0.05` on the bundled SmolLM2-135M, and mixed precision at the size of rtn:w4g64.

    python bench/auto_bundled.py [--max-kld 0.05] [--skip-mixed] [--warm]

Target (issue 8): the search finishes in under 20 minutes on 2 cores and returns a
variant whose KLD upper bound is under the bar on held-out text; mixed precision
at 4.25 bits per weight has a lower KLD than rtn:w4g64. By default the advisor's
caches start empty (a private LOWBIT_CACHE that shares only the one-time float
conversion of the model), so the time is a cold search; --warm reuses them.
Writes bench/results/auto_bundled.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import write_result


def _private_cache() -> str:
    shared = Path(os.environ.get("LOWBIT_CACHE") or Path.home() / ".cache" / "lowbit")
    root = Path(tempfile.mkdtemp(prefix="lowbit-auto-bench-"))
    (shared / "models").mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(shared / "models")  # the Q4_1 → float conversion is not part of a search
    return str(root)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max-kld", type=float, default=0.05)
    p.add_argument("--skip-mixed", action="store_true")
    p.add_argument("--warm", action="store_true", help="reuse the advisor's caches (not a cold search)")
    args = p.parse_args()
    if not args.warm:
        os.environ["LOWBIT_CACHE"] = _private_cache()
    from lowbit.advisor.auto import AutoOptions, run_auto
    from lowbit.advisor.bar import Bar
    from lowbit.advisor.show import print_auto
    from lowbit.utils.tensors import flush_denormal

    out: dict = {"cold": not args.warm, "max_kld": args.max_kld}
    with flush_denormal():
        start = time.perf_counter()
        report = run_auto(AutoOptions(bar=Bar("kld", args.max_kld), device="cpu"))
        out["auto_wall_seconds"] = time.perf_counter() - start
        print_auto(report)
        a = report["auto"]
        out["auto"] = {"chosen": a["chosen"], "closest": a["closest"], "path": a["path"],
                       "accelerated_alternative": a.get("accelerated_alternative"),
                       "target_met": bool(a["chosen"] and a["chosen"]["holdout"]["kld_ci"][1] < args.max_kld
                                          and out["auto_wall_seconds"] < 20 * 60)}
        out["auto_report"] = report
        if not args.skip_mixed:
            start = time.perf_counter()
            mixed = run_auto(AutoOptions(target_bpw=4.25, device="cpu"))
            out["mixed_wall_seconds"] = time.perf_counter() - start
            print_auto(mixed)
            m, u = mixed["results"][0], mixed["results"][1]
            out["mixed"] = {"mixed": {k: m[k] for k in ("variant", "bits_per_weight", "kld_mean", "kld_ci")},
                            "uniform": {k: u[k] for k in ("variant", "bits_per_weight", "kld_mean", "kld_ci")},
                            "comparison": mixed["mixed"]["comparisons"][0],
                            "target_met": m["kld_mean"] < u["kld_mean"]
                            and m["bits_per_weight"] <= u["bits_per_weight"] + 1e-9,
                            "plan": mixed["mixed"]["plan"]}
    write_result("auto_bundled", out)


if __name__ == "__main__":
    main()
