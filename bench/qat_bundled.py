"""QAT on the bundled SmolLM2-135M: mean KLD to the float model vs training steps, on held-out text.

    python bench/qat_bundled.py --scheme w3g64 --steps 100 --lr 1e-4 --lsq --max-minutes 30

Target (issue 7): with ≤ 30 minutes of training on 2 cores, QAT removes ≥ 50% of
the mean KLD of its PTQ start (the float model's KLD is 0, so that is the
whole gap), measured on eval documents it never trained on.

Writes bench/results/qat_bundled_<scheme>[_<tag>].json (the `lowbit qat`
summary with the curve, and the command) and a .png of the curve when
matplotlib is installed (``pip install 'lowbit[plot]'``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, write_result

from lowbit.qat.run import run_qat
from lowbit.utils.tensors import flush_denormal


def plot(summary: dict[str, Any], title: str, path: Path) -> bool:
    """KLD vs step: curve points and the full-eval start/end with their 95% intervals."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install 'lowbit[plot]')")
        return False
    curve = summary["curve"]
    xs = [c["step"] for c in curve]
    ys = [c.get("curve_kld_mean", c["kld_mean"]) for c in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(xs, ys, "o-", label=f"curve ({summary['eval']['curve_tokens']} eval tokens)")
    for point, name in ((summary["before"], "PTQ start"), (summary["after"], "after QAT")):
        lo, hi = point["kld_ci"]
        ax.errorbar([point["step"]], [point["kld_mean"]], yerr=[[point["kld_mean"] - lo], [hi - point["kld_mean"]]],
                    fmt="s", capsize=4, label=f"{name} ({summary['eval']['tokens']} tokens, 95% CI)")
    ax.axhline(summary["before"]["kld_mean"] / 2, ls="--", c="gray", lw=1, label="50% of the start's KLD")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean KLD to the float model (nats/token)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scheme", default="w3g64")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lsq", action="store_true")
    p.add_argument("--init", default="rtn")
    p.add_argument("--loss", default="kd")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--window-tokens", type=int, default=256)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--curve-every", type=int, default=0, help="steps between curve points (default steps/10)")
    p.add_argument("--curve-tokens", type=int, default=2048)
    p.add_argument("--max-minutes", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = (f"qat:{args.scheme}+steps={args.steps}+lr={args.lr:g}+init={args.init}+loss={args.loss}"
               f"+batch={args.batch}" + ("+lsq" if args.lsq else ""))
    work = Path(tempfile.mkdtemp(prefix="qat-bench-"))
    start = time.perf_counter()
    try:
        with flush_denormal():
            summary = run_qat(args.model, variant, work / "out", eval_tokens=args.eval_tokens,
                              window_tokens=args.window_tokens, checkpoint_every=0,
                              checkpoint_dir=work / "ckpt", eval_every=args.curve_every or max(1, args.steps // 10),
                              curve_tokens=args.curve_tokens, max_seconds=args.max_minutes * 60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rec = summary["recovery"] or {}
    name = f"qat_bundled_{args.scheme}" + (f"_{args.tag}" if args.tag else "")
    png = RESULTS / f"{name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    title = (f"{args.model} {variant}\n{summary['steps']} steps, {summary['tokens_seen']} tokens, "
             f"{summary['train_seconds'] / 60:.1f} min training, {torch.get_num_threads()} threads")
    has_png = plot(summary, title, png)
    write_result(name, {
        "variant": variant,
        "threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - start,
        "train_minutes": summary["train_seconds"] / 60,
        "target": "QAT removes >= 50% of the PTQ start's mean KLD within 30 minutes of training",
        "fraction_removed": rec.get("fraction"),
        "fraction_removed_ci": rec.get("fraction_ci"),
        "target_met": bool(rec.get("fraction") is not None and rec["fraction"] >= 0.5
                           and summary["train_seconds"] <= 30 * 60),
        "png": str(png) if has_png else None,
        "summary": {k: v for k, v in summary.items() if k != "out"},
    })


if __name__ == "__main__":
    main()
