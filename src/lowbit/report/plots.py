"""PNG plots of a report: size vs KLD with the Pareto frontier, speed vs KLD, per-layer error.

matplotlib is optional (extra ``report``) and imported only here, with the
non-interactive Agg backend, so no display is ever needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from lowbit.errors import MissingExtraError
from lowbit.utils.atomic import atomic_file


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "the report's PNG plots") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def measured(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a KLD and a size (errors and unmeasured rows left out)."""
    return [r for r in rows if not r.get("error") and r.get("kld_mean") is not None and r.get("size_bytes")]


def pareto(rows: list[dict[str, Any]], x: str = "size_bytes", y: str = "kld_mean") -> list[dict[str, Any]]:
    """Rows no other row beats on both ``x`` and ``y`` (smaller is better on both), by ``x``."""
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r[x], r[y])):
        if r[y] < best:
            front.append(r)
            best = r[y]
    return front


def _save(fig: Any, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return data


def _errorbars(r: dict[str, Any]) -> tuple[float, float]:
    lo, hi = r.get("kld_ci") or (r["kld_mean"], r["kld_mean"])
    return max(0.0, r["kld_mean"] - lo), max(0.0, hi - r["kld_mean"])


def size_vs_kld(report: dict[str, Any], path: Path) -> bytes | None:
    """Size (MB) against mean KLD (log scale, 95% CI bars); the Pareto frontier joined and ringed."""
    rows = measured(report.get("results") or [])
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    front = pareto(rows)
    on_front = {id(r) for r in front}
    for r in rows:
        lo, hi = _errorbars(r)
        ax.errorbar(r["size_bytes"] / 1e6, max(r["kld_mean"], 1e-6), yerr=[[lo], [hi]], fmt="o",
                    color="#1f77b4" if id(r) in on_front else "#999999", capsize=3, ms=6)
        ax.annotate(r["variant"], (r["size_bytes"] / 1e6, max(r["kld_mean"], 1e-6)), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.plot([r["size_bytes"] / 1e6 for r in front], [max(r["kld_mean"], 1e-6) for r in front], "-",
            color="#1f77b4", lw=1.5, label="Pareto frontier (no variant is both smaller and closer)")
    model = report.get("model") or {}
    ax.set_yscale("log")
    ax.set_xlabel("size as stored (MB)")
    ax.set_ylabel("mean KL divergence vs float (nats/token)")
    floats = f"; float model {model['float_bytes'] / 1e6:.1f} MB" if model.get("float_bytes") else ""
    ax.set_title(f"{model.get('name', '')}: size vs KLD (95% CI){floats}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    data = _save(fig, path)
    plt.close(fig)
    return data


#: Speed fields, best first: decode speed of the fastest real runtime (when measured), else the
#: evaluation throughput of the reference runtime.
SPEED_FIELDS = (("decode_tokens_per_s", "speed_runtime", "decode speed (tokens/s)"),
                ("tokens_per_s", "runtime", "evaluation throughput (tokens/s)"))


def speed_vs_kld(report: dict[str, Any], path: Path) -> bytes | None:
    """Measured speed against mean KLD; the runtime that produced it is in the title."""
    rows: list[dict[str, Any]] = []
    for key, runtime_key, label in SPEED_FIELDS:
        rows = [r for r in measured(report.get("results") or []) if r.get(key)]
        if rows:
            break
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for r in rows:
        ax.plot(r[key], max(r["kld_mean"], 1e-6), "o", color="#2ca02c")
        ax.annotate(r["variant"], (r[key], max(r["kld_mean"], 1e-6)), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ref = report.get("reference") or {}
    if ref.get(key):
        ax.axvline(ref[key], color="#d62728", ls=":", lw=1, label="float model")
        ax.legend(fontsize=8)
    runtimes = sorted({str(r.get(runtime_key)) for r in rows if r.get(runtime_key)})
    machine = (report.get("machine") or {}).get("cpu", "")
    ax.set_yscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("mean KL divergence vs float (nats/token)")
    ax.set_title(f"speed vs KLD — {'; '.join(runtimes) or 'runtime not recorded'}\n{machine}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    data = _save(fig, path)
    plt.close(fig)
    return data


def layer_error(report: dict[str, Any], path: Path, limit: int = 8) -> bytes | None:
    """‖W−Ŵ‖/‖W‖ per quantized linear, one line per variant (at most ``limit``), in model order."""
    rows = [r for r in (report.get("results") or []) if r.get("layer_error")][:limit]
    if not rows:
        return None
    plt = _plt()
    names = list(rows[0]["layer_error"])
    fig, ax = plt.subplots(figsize=(max(7.5, min(16.0, len(names) * 0.06 + 6)), 4.2))
    for r in rows:
        ys = [r["layer_error"].get(n) for n in names]
        ax.plot(range(len(names)), ys, marker="." if len(names) < 60 else None, lw=1, label=r["variant"])
    step = max(1, len(names) // 12)
    ax.set_xticks(range(0, len(names), step))
    ax.set_xticklabels([names[i].replace("model.layers.", "L") for i in range(0, len(names), step)],
                       rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("relative weight error ‖W−Ŵ‖/‖W‖")
    ax.set_title("per-layer error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    data = _save(fig, path)
    plt.close(fig)
    return data


PLOTS = {"size_vs_kld": size_vs_kld, "speed_vs_kld": speed_vs_kld, "layer_error": layer_error}


def write_plots(report: dict[str, Any], folder: Path) -> dict[str, bytes]:
    """Every plot that has data, as ``folder/<name>.png``; returns name → PNG bytes."""
    out = {}
    for name, fn in PLOTS.items():
        data = fn(report, Path(folder) / f"{name}.png")
        if data is not None:
            out[name] = data
    return out
