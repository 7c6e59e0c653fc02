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

:func:`solve_in_blocks` is the block loop on its own, with a grid per target,
so method ``gguf`` (``+gptq``) runs the same loop over a llama.cpp mixture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowbit.calibrate import BlockContext, CalibrationPipeline, InputStats
from lowbit.errors import LowbitError
from lowbit.methods.base import Method, QuantContext
from lowbit.methods.gptq_solver import GPTQConfig, gptq_solve, split_rows, uses_static_groups
from lowbit.schemes.base import QuantizedTensor, Scheme
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


def default_static_groups(scheme: Scheme) -> bool:
    """Static groups unless the grid has fewer than 4 bits (see the option's comment) and can store g_idx."""
    return scheme.weight_bits >= 4 or scheme.needs_static_groups or not scheme.supports_g_idx


class GPTQ(Method):
    """Hessian-guided error feedback (Frantar et al. 2023) on any column-wise scheme."""

    name = "gptq"
    summary = "GPTQ: second-order error feedback from calibration activations, block by block"
    needs_calibration = True
    options = {
        # Act-order is on by default, as in llm-compressor. Static groups default by bit
        # width: on SmolLM2-135M (bench/results/calib_bundled.json, calib_gptq_orderings.json)
        # act-order with static groups gave w4g64 KLD 0.126 (dynamic groups 0.142, neither
        # 0.249), but at w3g64 static groups fixed from the original weights clip what the
        # error feedback moves: 1.16, against 0.62 with dynamic groups (neither: 0.81).
        # Static groups keep the natural layout (no g_idx), which every format and fast
        # kernel takes; dynamic ones store g_idx.
        "act": OptionSpec("act", bool, True,
                          "act-order: quantize columns by descending Hessian diagonal (default on; +act=off)"),
        "static": OptionSpec("static", bool, None,
                             "static groups: fit every group's grid up front (default: on at 4 bits and more, off "
                             "below, where act-order then orders groups as processed and stores g_idx)"),
        "damp": OptionSpec("damp", float, 0.01, "dampening, fraction of the mean Hessian diagonal"),
        "block": OptionSpec("block", int, 128, "columns per lazy-batch block"),
        "nosequential": OptionSpec("nosequential", bool, False,
                                   "collect all Hessians of a block from the float block at once"),
    }

    def check_scheme(self, scheme: Scheme) -> None:
        super().check_scheme(scheme)
        try:
            scheme.column_group_size(1024)
        except LowbitError:
            raise LowbitError(f"gptq needs a scheme that fits grids column by column; {scheme.spec()} does not") \
                from None

    def check_options(self, scheme: Scheme, options: dict[str, Any]) -> None:
        if options["static"] is None:  # resolved here, so formats and reports see the effective value
            options["static"] = default_static_groups(scheme)
        self.config(scheme, options)  # bad values and unstorable act-order groups fail at resolution

    def config(self, scheme: Scheme, options: dict[str, Any]) -> GPTQConfig:
        """Validated solver options."""
        damp, block = float(options["damp"]), int(options["block"])
        if not 0 < damp <= 10:
            raise LowbitError(f"gptq option +damp must be in (0, 10], got {damp}")
        if block < 1:
            raise LowbitError(f"gptq option +block must be a positive number of columns, got {block}")
        cfg = GPTQConfig(damp=damp, block=block, act_order=bool(options["act"]), static_groups=bool(options["static"]))
        uses_static_groups(scheme, cfg)  # refuses act-order groups the scheme cannot store
        return cfg

    def quantize(self, ctx: QuantContext) -> None:
        calib = ctx.require_calib(self.name)
        cfg = self.config(ctx.scheme, ctx.options)
        pipe = CalibrationPipeline(ctx.loaded, calib, ctx.targets, ctx.device)
        rtn = pipe.outside_blocks()
        for name in rtn:
            ctx.install(name, ctx.scheme.quantize(ctx.targets[name].weight.detach()))
        record = solve_in_blocks(ctx, pipe, cfg, lambda _name: ctx.scheme, not ctx.options["nosequential"])
        ctx.stats["calib_seconds"] = pipe.seconds
        ctx.stats["gptq"] = {**record, "rtn": rtn, "calib_tokens": calib.tokens}


def _no_importance(_name: str) -> torch.Tensor | None:
    return None


def _same_importance(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is b or (a is not None and b is not None and torch.equal(a, b))


def solve_sets(names: list[str], scheme_of: Callable[[str], Scheme],
               importance_of: Callable[[str], torch.Tensor | None] = _no_importance) -> list[list[str]]:
    """Linears sharing one input, split into the sets solved stacked.

    Stacking needs one grid and one importance vector for all rows; per-tensor
    grids (one scale across the matrix) are solved alone.
    """
    sets: list[list[str]] = []
    for n in names:
        scheme, imp = scheme_of(n), importance_of(n)
        home = next((s for s in sets if scheme.granularity != "tensor" and scheme_of(s[0]) == scheme
                     and _same_importance(importance_of(s[0]), imp)), None)
        if home is None:
            sets.append([n])
        else:
            home.append(n)
    return sets


def solve_in_blocks(ctx: QuantContext, pipe: CalibrationPipeline, cfg: GPTQConfig,
                    scheme_of: Callable[[str], Scheme], sequential: bool = True,
                    importance_of: Callable[[str], torch.Tensor | None] = _no_importance,
                    install: Callable[[str, QuantizedTensor], None] | None = None) -> dict[str, Any]:
    """GPTQ on every target inside ``pipe``'s blocks, stage by stage; returns the run's record.

    Args:
        ctx: the method's context (the model is quantized in place).
        pipe: the calibration pipeline over the targets to solve.
        cfg: solver options.
        scheme_of: each target's grid (a llama.cpp mixture gives one block's
            linears different types).
        sequential: true-sequential stages (False: every Hessian from the float block).
        importance_of: each target's importance vector for static-group fits (None: unweighted).
        install: puts one result in place (default ``ctx.install``).
    Returns:
        ``loss`` (GPTQ's proxy loss, summed), ``damp_raised`` and ``solve_seconds``.
    """
    place = install or ctx.install
    widest = max((lin.in_features for lin in pipe.targets.values()), default=0)
    if pipe.calib.tokens < widest:
        warn(f"gptq: {pipe.calib.tokens} calibration tokens are fewer than the widest layer input ({widest}); "
             f"Hessians are rank-deficient and only dampening (+damp={cfg.damp:g}) keeps them invertible")
    record: dict[str, Any] = {"loss": 0.0, "damp_raised": []}
    solve_s = 0.0

    tails = ctx.loaded.arch.tails if sequential else ()

    def on_block(bctx: BlockContext) -> None:
        nonlocal solve_s
        done: set[str] = set()
        for stage in block_stages(bctx, ctx.loaded.arch.stages, sequential):
            # A stage's tail linear (o_proj, down_proj): once it is quantized, everything
            # upstream is final, so later stages and the hand-off to the next block
            # replay its module from the input kept here instead of rerunning it.
            replays = [(bctx.qualified(m), bctx.qualified(lin)) for m, lin in tails if bctx.qualified(lin) in stage]
            bctx.keep_inputs([lin for _, lin in replays])
            stats = bctx.collect(stage, hessian=True, moments=False)  # the solve reads only H
            t0 = time.perf_counter()
            for group in shared_input_groups(stage, stats):
                for names in solve_sets(group, scheme_of, importance_of):
                    _solve(ctx, names, stats[names[0]], scheme_of(names[0]), cfg, importance_of(names[0]),
                           record, place)
            solve_s += time.perf_counter() - t0
            done.update(stage)
            for module, lin in replays:
                # Only when nothing inside the module is left to quantize (a linear the
                # family table does not stage would come later and change its output).
                if all(t in done for t in bctx.targets if t.startswith(module + ".")):
                    bctx.replay(module, lin)

    pipe.run(on_block, "gptq")
    return {**record, "solve_seconds": solve_s}


def _solve(ctx: QuantContext, names: list[str], st: InputStats, scheme: Scheme, cfg: GPTQConfig,
           importance: torch.Tensor | None, record: dict[str, Any],
           install: Callable[[str, QuantizedTensor], None]) -> None:
    linears: list[nn.Linear] = [ctx.targets[n] for n in names]
    w = torch.cat([lin.weight.detach().float() for lin in linears], dim=0)
    label = names[0] if len(names) == 1 else "+".join(names)
    res = gptq_solve(w, st.hessian(), scheme, cfg, label, importance)
    record["loss"] += res.loss
    if res.damp != cfg.damp:
        record["damp_raised"].append({"layers": names, "damp": res.damp})
    pieces = split_rows(res.q, [lin.out_features for lin in linears]) if len(names) > 1 else [res.q]
    for n, q in zip(names, pieces, strict=True):
        install(n, q)
