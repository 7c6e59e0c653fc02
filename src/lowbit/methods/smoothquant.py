"""SmoothQuant (Xiao et al., ICML 2023): move activation outliers into the weights, then W8A8.

``X·Wᵀ = (X·diag(s)⁻¹)·(W·diag(s))ᵀ``. Per input channel ``j`` of a group of
linears sharing one input, ``s_j = max|X_j|^α / max|W_j|^(1−α)`` with the
activation maximum from calibration and the weight maximum over every linear
of the group. ``1/s`` is folded into the op producing the input — a norm's
weight and bias, or a linear's output rows and bias — and ``s`` into the
consumers' weight columns, so no tensor is added and the float model computes
the same function (checked on a calibration window after folding).

Which groups exist comes from :class:`~lowbit.models.arch.ArchSpec.groups`. A
group is smoothed when its producer is a norm, or a linear whose outputs are
exactly the group's inputs (Llama ``up_proj → down_proj``; not ``v_proj →
o_proj`` under grouped-query attention, where one value channel feeds several
heads). Others are quantized unsmoothed; ``ctx.stats`` lists them.

Options: ``alpha`` (default 0.5, as llm-compressor's SmoothQuantModifier) or
``alpha=auto``: per group, the α in 0.3, 0.4 … 0.9 whose W8A8 outputs are
closest (squared error, summed over the group's linears) to the float outputs
on the first :data:`SEARCH_WINDOWS` calibration windows.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.methods.act_stats import collect_input_absmax, input_hooks, run_windows
from lowbit.methods.base import Method, QuantContext
from lowbit.schemes.base import Scheme
from lowbit.schemes.w8a8 import ACT_QMAX, W8A8Scheme
from lowbit.variant import OptionSpec

ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SEARCH_WINDOWS = 8
#: Relative change of the float model's output that folding may cause (fp32 rounding only).
FOLD_TOLERANCE = 1e-4
_MIN_SCALE = 1e-5  # the reference implementation's clamp on s
_MIN_INPUT_SCALE = 1e-12


def alpha_value(raw: str) -> float | str:
    """``+alpha=`` value: a number in [0, 1], or ``auto``."""
    if raw.strip().lower() == "auto":
        return "auto"
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(raw)
    return value


alpha_value.__name__ = "a number in [0, 1] or 'auto'"


@dataclass
class SmoothGroup:
    """Linears sharing one input, and the op that produces it.

    Attributes:
        prev: qualified name of the producer (a norm or a linear).
        linears: qualified names of the consumers.
        act_max: calibration max|x| per input channel, fp32 ``[in]``.
        weight_max: max|W[:, j]| over the consumers, fp32 ``[in]``.
    """

    prev: str
    linears: tuple[str, ...]
    act_max: torch.Tensor
    weight_max: torch.Tensor
    alpha: float = 0.5
    scale: torch.Tensor | None = field(default=None, repr=False)


def smoothing_factors(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s = max|X|^α / max|W|^(1−α)``; 1 for a channel that is all zero on either side."""
    s = act_max.double().pow(alpha) / weight_max.double().pow(1.0 - alpha)
    live = (act_max > 0) & (weight_max > 0)
    return torch.where(live, s, torch.ones_like(s)).clamp(min=_MIN_SCALE).float()


def plan_groups(ctx: QuantContext, act_max: dict[str, torch.Tensor]) -> tuple[list[SmoothGroup], list[str]]:
    """The groups to smooth, and a reason for every group of the architecture that is not."""
    arch, model = ctx.loaded.arch, ctx.model
    blocks = model.get_submodule(arch.blocks)
    groups: list[SmoothGroup] = []
    skipped: list[str] = []
    for i in range(len(blocks)):  # type: ignore[arg-type]
        base = f"{arch.blocks}.{i}"
        for g in arch.groups:
            linears = tuple(f"{base}.{n}" for n in g.linears)
            where = f"{base}: {'/'.join(g.linears)}"
            if not g.prev:
                skipped.append(f"{where}: input comes from outside the block")
                continue
            if any(n not in ctx.targets for n in linears):
                skipped.append(f"{where}: not every linear of the group is quantized")
                continue
            prev_name = f"{base}.{g.prev}"
            prev = model.get_submodule(prev_name)
            width = ctx.targets[linears[0]].in_features
            if not _foldable(prev, width):
                skipped.append(f"{where}: {g.prev} ({type(prev).__name__}) outputs do not map 1:1 onto the inputs")
                continue
            w_max = torch.stack([ctx.targets[n].weight.detach().abs().amax(dim=0).float().cpu() for n in linears])
            groups.append(SmoothGroup(prev_name, linears, act_max[linears[0]], w_max.amax(dim=0)))
    return groups, skipped


def _foldable(prev: nn.Module, width: int) -> bool:
    if isinstance(prev, nn.Linear):
        return prev.out_features == width
    w = getattr(prev, "weight", None)
    return isinstance(w, torch.Tensor) and tuple(w.shape) == (width,)


@torch.no_grad()
def fold(model: nn.Module, group: SmoothGroup, s: torch.Tensor) -> None:
    """Divide the producer's outputs by ``s`` and multiply the consumers' input columns by ``s``."""
    prev = model.get_submodule(group.prev)
    w = prev.weight
    inv = (1.0 / s).to(w.device, w.dtype)
    if isinstance(prev, nn.Linear):
        w.mul_(inv.unsqueeze(1))
    else:
        w.mul_(inv)
    bias = getattr(prev, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.mul_(inv)
    for name in group.linears:
        lin = model.get_submodule(name)
        lin.weight.mul_(s.to(lin.weight.device, lin.weight.dtype).unsqueeze(0))


def _output(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a causal LM, last hidden state of an encoder."""
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False)[0].float()


def group_error(scheme: W8A8Scheme, x: torch.Tensor, weights: list[torch.Tensor], s: torch.Tensor,
                act_max: torch.Tensor) -> float:
    """Squared error of the group's W8A8 outputs against float, with smoothing ``s``, on inputs ``x``."""
    xs = x / s
    static = torch.tensor([max(float((act_max / s).max()) / ACT_QMAX, _MIN_INPUT_SCALE)]) if scheme.static else None
    xq = scheme.fake_quant_act(xs, static)
    err = 0.0
    for w in weights:
        ws = w * s
        wq = scheme.dequantize(scheme.quantize(ws))
        err += float((xq @ wq.T - x @ w.T).pow(2).sum())
    return err


def search_alpha(ctx: QuantContext, scheme: W8A8Scheme, groups: list[SmoothGroup]) -> None:
    """Set each group's α to the grid value with the least output error on calibration windows."""
    calib = ctx.require_calib("smoothquant")
    first = {g.linears[0]: g for g in groups}
    errors = {g.linears[0]: torch.zeros(len(ALPHA_GRID), dtype=torch.float64) for g in groups}
    scales = {n: [smoothing_factors(g.act_max, g.weight_max, a).to(ctx.device) for a in ALPHA_GRID]
              for n, g in first.items()}

    def score(name: str, x: torch.Tensor) -> None:
        g = first[name]
        weights = [ctx.targets[n].weight.detach().float() for n in g.linears]
        act_max = g.act_max.to(x.device)
        for k, s in enumerate(scales[name]):
            errors[name][k] += group_error(scheme, x, weights, s, act_max)

    with input_hooks(ctx.model, list(first), score):
        run_windows(ctx.model, calib.windows[:SEARCH_WINDOWS], "smoothquant: alpha search")
    for name, g in first.items():
        g.alpha = ALPHA_GRID[int(errors[name].argmin())]


class SmoothQuant(Method):
    """SmoothQuant smoothing folded into the model, then W8A8 round-to-nearest."""

    name = "smoothquant"
    summary = "SmoothQuant: migrate activation outliers into weights, then int8 weights and activations"
    needs_calibration = True
    options = {
        "alpha": OptionSpec("alpha", alpha_value, 0.5,  # type: ignore[arg-type]
                            "migration strength in [0, 1], or auto (per group, best of 0.3–0.9 on calibration)"),
    }

    def check_scheme(self, scheme: Scheme) -> None:
        if not isinstance(scheme, W8A8Scheme):
            raise LowbitError(f"smoothquant quantizes weights and activations; scheme {scheme.spec()} leaves "
                              "activations float. Use smoothquant:w8a8 or smoothquant:w8a8static")

    def quantize(self, ctx: QuantContext) -> None:
        scheme = ctx.scheme
        assert isinstance(scheme, W8A8Scheme)
        calib = ctx.require_calib(self.name)
        start = time.perf_counter()
        act_max = collect_input_absmax(ctx.model, list(ctx.targets), calib)
        groups, skipped = plan_groups(ctx, act_max)
        if ctx.options["alpha"] == "auto":
            search_alpha(ctx, scheme, groups)
        else:
            for g in groups:
                g.alpha = float(ctx.options["alpha"])
        ctx.stats["calib_seconds"] = time.perf_counter() - start
        probe = calib.windows[:1, :128].to(ctx.device)
        before = _output(ctx.model, probe)
        post_max = dict(act_max)
        for g in groups:
            g.scale = smoothing_factors(g.act_max, g.weight_max, g.alpha)
            fold(ctx.model, g, g.scale)
            for n in g.linears:
                post_max[n] = act_max[n] / g.scale
        drift = float((_output(ctx.model, probe) - before).norm() / before.norm().clamp(min=1e-30))
        if not drift <= FOLD_TOLERANCE:
            raise LowbitError(
                f"smoothquant: folding the smoothing factors changed the float model's output by {drift:.2e} "
                f"(relative); in the {ctx.loaded.arch.family} architecture a smoothed norm or linear also feeds "
                "something outside its group. Use rtn:w8a8 for this model")
        for name, lin in ctx.targets.items():
            q = scheme.quantize(lin.weight.detach().to(ctx.device))
            if scheme.static:
                q = scheme.with_input_scale(q, max(float(post_max[name].max()) / ACT_QMAX, _MIN_INPUT_SCALE), name)
            ctx.install(name, q)
        alphas = [g.alpha for g in groups]
        ctx.stats.update({
            "smoothed_groups": len(groups),
            "skipped_groups": skipped,
            "fold_drift": drift,
            "alphas": alphas,
            "note": _note(alphas, len(skipped), ctx.options["alpha"] == "auto"),
        })


def _note(alphas: list[float], n_skipped: int, auto: bool) -> str:
    if not alphas:
        return f"no group could be smoothed ({n_skipped} skipped)"
    a = (f"alpha auto: median {statistics.median(alphas):.1f} (range {min(alphas):.1f}–{max(alphas):.1f})"
         if auto else f"alpha {alphas[0]:g}")
    return f"{a}; {len(alphas)} groups smoothed, {n_skipped} left unsmoothed"

