"""GPTQ as a lowbit method: the shared calibration pipeline + the per-matrix solve.

Per block, in true-sequential stages (``ArchSpec.stages``: qkv → o → gate/up →
down for Llama), the block is re-run on its inputs with the earlier stages
already quantized, the Hessians of the stage's linears are accumulated, and
each is solved with :func:`~lowbit.methods.gptq_solver.gptq_solve`. Linears
reading the same input share one Hessian and are solved stacked (rows are
independent under GPTQ, so stacking changes nothing but speed). ``+nosequential``
collects every Hessian of the block from the float block in one pass.

Targets outside the blocks (an output head asked for with ``+lm_head``) have
no Hessian from the pipeline and are rounded to nearest; the run's stats say so.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from lowbit.calibrate import BlockContext, CalibrationPipeline, InputStats
from lowbit.errors import LowbitError
from lowbit.methods.base import Method, QuantContext
from lowbit.methods.gptq_solver import GPTQConfig, gptq_solve, split_rows
from lowbit.schemes.base import Scheme
from lowbit.utils.progress import warn
from lowbit.variant import OptionSpec


def block_stages(ctx: BlockContext, stages: tuple[tuple[str, ...], ...], sequential: bool) -> list[list[str]]:
    """The block's targets as stages of qualified names (leftovers not named by the family last)."""
    targets = list(ctx.targets)
    if not sequential:
        return [targets] if targets else []
    out: list[list[str]] = []
    named: set[str] = set()
    for stage in stages:
        names = [ctx.qualified(n) for n in stage if ctx.qualified(n) in ctx.targets]
        named.update(names)
        if names:
            out.append(names)
    rest = [n for n in targets if n not in named]
    if rest:
        out.append(rest)
    return out


def shared_input_groups(names: list[str], stats: dict[str, InputStats]) -> list[list[str]]:
    """``names`` grouped by shared statistics object (same input tensor), first-seen order."""
    groups: dict[int, list[str]] = {}
    for n in names:
        groups.setdefault(id(stats[n]), []).append(n)
    return list(groups.values())


class GPTQ(Method):
    """Hessian-guided error feedback (Frantar et al. 2023) on any column-wise scheme."""

    name = "gptq"
    summary = "GPTQ: second-order error feedback from calibration activations, block by block"
    needs_calibration = True
    options = {
        "act": OptionSpec("act", bool, False, "act-order: quantize columns by descending Hessian diagonal"),
        "static": OptionSpec("static", bool, False, "static groups: fit every group's grid up front"),
        "damp": OptionSpec("damp", float, 0.01, "dampening, fraction of the mean Hessian diagonal"),
        "block": OptionSpec("block", int, 128, "columns per lazy-batch block"),
        "nosequential": OptionSpec("nosequential", bool, False,
                                   "collect all Hessians of a block from the float block at once"),
    }

    def check_scheme(self, scheme: Scheme) -> None:
        try:
            scheme.column_group_size(1024)
        except LowbitError:
            raise LowbitError(f"gptq needs a scheme that fits grids column by column; {scheme.spec()} does not") \
                from None

    def config(self, scheme: Scheme, options: dict[str, Any]) -> GPTQConfig:
        """Validated solver options."""
        damp, block = float(options["damp"]), int(options["block"])
        if not 0 < damp <= 10:
            raise LowbitError(f"gptq option +damp must be in (0, 10], got {damp}")
        if block < 1:
            raise LowbitError(f"gptq option +block must be a positive number of columns, got {block}")
        act, static = bool(options["act"]), bool(options["static"])
        if act and not static and not scheme.supports_g_idx:
            raise LowbitError(f"gptq +act without +static needs per-column group indices, which {scheme.spec()} "
                              "cannot store; add +static")
        return GPTQConfig(damp=damp, block=block, act_order=act, static_groups=static)

    def quantize(self, ctx: QuantContext) -> None:
        calib = ctx.require_calib(self.name)
        cfg = self.config(ctx.scheme, ctx.options)
        widest = max(lin.in_features for lin in ctx.targets.values())
        if calib.tokens < widest:
            warn(f"gptq: {calib.tokens} calibration tokens are fewer than the widest layer input ({widest}); "
                 f"Hessians are rank-deficient and only dampening (+damp={cfg.damp:g}) keeps them invertible")
        sequential = not ctx.options["nosequential"]
        stages = ctx.loaded.arch.stages
        record: dict[str, Any] = {"loss": 0.0, "damp_raised": [], "rtn": []}
        stack = ctx.scheme.granularity != "tensor"  # per-tensor grids would share one scale across matrices
        solve_s = 0.0

        def on_block(bctx: BlockContext) -> None:
            nonlocal solve_s
            for stage in block_stages(bctx, stages, sequential):
                stats = bctx.collect(stage, hessian=True)
                t0 = time.perf_counter()
                for group in shared_input_groups(stage, stats):
                    parts = [group] if stack else [[n] for n in group]
                    for names in parts:
                        self._solve(ctx, names, stats[names[0]], cfg, record)
                solve_s += time.perf_counter() - t0

        pipe = CalibrationPipeline(ctx.loaded, calib, ctx.targets, ctx.device)
        for name in pipe.outside_blocks():
            record["rtn"].append(name)
            ctx.install(name, ctx.scheme.quantize(ctx.targets[name].weight.detach()))
        pipe.run(on_block, "gptq")
        ctx.stats["calib_seconds"] = pipe.seconds
        ctx.stats["gptq"] = {**record, "solve_seconds": solve_s, "calib_tokens": calib.tokens}

    def _solve(self, ctx: QuantContext, names: list[str], st: InputStats, cfg: GPTQConfig,
               record: dict[str, Any]) -> None:
        linears: list[nn.Linear] = [ctx.targets[n] for n in names]
        w = torch.cat([lin.weight.detach().float() for lin in linears], dim=0)
        label = names[0] if len(names) == 1 else "+".join(names)
        res = gptq_solve(w, st.hessian(), ctx.scheme, cfg, label)
        record["loss"] += res.loss
        if res.damp != cfg.damp:
            record["damp_raised"].append({"layers": names, "damp": res.damp})
        pieces = split_rows(res.q, [lin.out_features for lin in linears]) if len(names) > 1 else [res.q]
        for n, q in zip(names, pieces, strict=True):
            ctx.install(n, q)
