"""Per-layer sensitivity: how much KL divergence quantizing one linear at b bits costs.

Two estimates, both in nats per token of KL(float ‖ model):

* ``kld`` — the definition: quantize one layer at a time, run the model on the
  sensitivity windows, measure the mean KLD against the float model. Exact
  but ``layers × bit widths`` forward passes.
* ``fisher`` — the cheap proxy, one forward and one backward pass over the
  same windows. To second order, ``KL ≈ ½ E_t[Δy_tᵀ F_t Δy_t]`` where ``y``
  is the layer's output and ``F`` the Fisher information of the model's
  next-token distribution with respect to it. With a diagonal Fisher,
  estimated from gradients of the log-probability of tokens *sampled from the
  model itself* (so ``E[g gᵀ] = F``), and weight errors independent across
  inputs, ``KL_l(b) ≈ ½ Σ_kj F_k · A_j · ΔW_kj²`` with ``F_k`` the mean
  squared output gradient of output ``k`` and ``A_j`` the mean squared input
  ``j``. ``tests/advisor/test_sensitivity.py`` checks it ranks layers as the
  exact measurement does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.schemes.int_affine import IntScheme

DEFAULT_BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclass
class Sensitivity:
    """Predicted (or measured) KLD of quantizing each layer alone, per bit width.

    Attributes:
        cost: layer → bits → KLD (nats/token) with only that layer quantized.
        shapes: layer → ``(out, in)``.
        base: the grid family every option shares (group size, symmetry).
        method: ``fisher`` or ``kld``.
        tokens: tokens the estimate was computed on.
        seconds: wall time it took.
    """

    cost: dict[str, dict[int, float]]
    shapes: dict[str, tuple[int, int]]
    base: IntScheme
    method: str
    tokens: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form (cache files, reports)."""
        return {"cost": {n: {str(b): c for b, c in v.items()} for n, v in self.cost.items()},
                "shapes": {n: list(s) for n, s in self.shapes.items()}, "base": self.base.spec(),
                "method": self.method, "tokens": self.tokens, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any], base: IntScheme) -> Sensitivity:
        """Inverse of :meth:`to_json` (``base`` is the grid the caller asked for)."""
        cost = {n: {int(b): float(c) for b, c in v.items()} for n, v in d["cost"].items()}
        shapes = {n: (int(s[0]), int(s[1])) for n, s in d["shapes"].items()}
        return cls(cost, shapes, base, str(d["method"]), int(d["tokens"]), float(d.get("seconds", 0.0)))


def with_bits(base: IntScheme, bits: int) -> IntScheme:
    """``base`` with another code width."""
    return IntScheme(bits, base.symmetric, base.group, base.gran)


def sensitivity_windows(calib: TokenSet, windows: int) -> torch.Tensor:
    """The first ``windows`` calibration windows (they are already a seeded sample)."""
    return calib.windows[:windows]


def _input_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def fisher_sensitivity(model: nn.Module, targets: dict[str, nn.Linear], calib: TokenSet, base: IntScheme,
                       bits: tuple[int, ...] = DEFAULT_BITS, windows: int = 8, seed: int = 0) -> Sensitivity:
    """The Fisher proxy (module docstring) from ``windows`` calibration windows."""
    start = time.perf_counter()
    ids = sensitivity_windows(calib, windows)
    dev = _input_device(model)
    a_sq = {n: torch.zeros(lin.in_features, dtype=torch.float64) for n, lin in targets.items()}
    g_sq = {n: torch.zeros(lin.out_features, dtype=torch.float64) for n, lin in targets.items()}
    counted = 0
    handles = []

    def hook(name: str):  # type: ignore[no-untyped-def]
        def grad(g: torch.Tensor) -> None:
            g_sq[name] += g.detach().reshape(-1, g.shape[-1]).double().pow(2).sum(0).cpu()

        def fwd(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            a_sq[name] += x.pow(2).sum(0).cpu()
            if out.requires_grad:
                out.register_hook(grad)
        return fwd

    for n, lin in targets.items():
        handles.append(lin.register_forward_hook(hook(n)))
    emb = model.get_input_embeddings()
    handles.append(emb.register_forward_hook(lambda m, i, o: o.requires_grad_(True)))
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.enable_grad():
            for w in ids:
                batch = w.unsqueeze(0).to(dev)
                logits = model(input_ids=batch, use_cache=False).logits[0, :-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                # Labels drawn from the model's own distribution: E[g gᵀ] is then the Fisher.
                drawn = torch.multinomial(logp.detach().exp().cpu(), 1, generator=gen).to(logits.device)
                logp.gather(-1, drawn).sum().backward()
                counted += logits.shape[0]
    finally:
        for h in handles:
            h.remove()
    cost: dict[str, dict[int, float]] = {}
    for n, lin in targets.items():
        w = lin.weight.detach().float()
        a = (a_sq[n] / max(1, counted)).float().to(w.device)
        f = (g_sq[n] / max(1, counted)).float().to(w.device)
        cost[n] = {}
        for b in bits:
            s = with_bits(base, b)
            dw = s.dequantize(s.quantize(w)) - w
            cost[n][b] = float(0.5 * (f.unsqueeze(1) * dw.pow(2) * a.unsqueeze(0)).sum())
    shapes = {n: (lin.out_features, lin.in_features) for n, lin in targets.items()}
    return Sensitivity(cost, shapes, base, "fisher", counted, time.perf_counter() - start)


@torch.inference_mode()
def kld_sensitivity(model: nn.Module, targets: dict[str, nn.Linear], calib: TokenSet, base: IntScheme,
                    bits: tuple[int, ...] = DEFAULT_BITS, windows: int = 8) -> Sensitivity:
    """The definition: KLD against the float model with one layer quantized at a time."""
    from lowbit.eval.metrics import token_metrics
    from lowbit.eval.reference import compute_reference

    start = time.perf_counter()
    data = TokenSet(f"{calib.source} (sensitivity windows)", sensitivity_windows(calib, windows), calib.documents)
    ref = compute_reference(model, data)
    cost: dict[str, dict[int, float]] = {}
    for n, lin in targets.items():
        original = lin.weight.data
        cost[n] = {}
        for b in bits:
            s = with_bits(base, b)
            lin.weight.data = s.dequantize(s.quantize(original.float())).to(original.dtype)
            try:
                m = token_metrics(model, data, ref, f"sensitivity {n} w{b}")
            finally:
                lin.weight.data = original
            assert m.kld is not None
            cost[n][b] = float(m.kld.double().mean())
    shapes = {n: (lin.out_features, lin.in_features) for n, lin in targets.items()}
    return Sensitivity(cost, shapes, base, "kld", data.tokens, time.perf_counter() - start)


def rank_correlation(a: dict[str, float], b: dict[str, float]) -> float:
    """Spearman's rank correlation of two scores over the same keys (ties broken by order)."""
    keys = sorted(a)
    n = len(keys)
    if n < 2:
        return float("nan")

    def ranks(d: dict[str, float]) -> torch.Tensor:
        order = sorted(keys, key=lambda k: d[k])
        r = torch.empty(n, dtype=torch.float64)
        for i, k in enumerate(order):
            r[keys.index(k)] = i
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))
