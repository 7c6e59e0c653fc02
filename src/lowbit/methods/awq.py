"""AWQ as a lowbit method: activation-aware scaling + clipping, block by block.

Per block (on the shared calibration pipeline):

1. ``E|x|`` of every target linear's input over all calibration tokens;
2. on the first ``+search`` tokens (:data:`SEARCH_TOKENS`), the inputs and float
   outputs of each group's inspected module (``ArchSpec.groups``: the
   attention for q/k/v, the MLP for gate/up, the consumer itself for
   v→o and up→down);
3. per group, the scale search over 20 α (:func:`~lowbit.methods.awq_search.search_scale`);
   groups whose producer cannot take the scale (no producer in the block, a
   post-norm residual, GQA's v→o) are left unscaled and listed in the stats;
4. every scale folded into its producer;
5. unless ``+noclip``, the clip search per output group on ~512 sampled inputs
   (the q/k projections are not clipped);
6. every linear quantized on the scheme, and the quantized block's outputs
   passed on.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from lowbit.calibrate import BlockBatch, BlockContext, CalibrationPipeline
from lowbit.errors import LowbitError
from lowbit.methods.awq_search import apply_clip, can_fold, fold_scales, sample_tokens, search_clip, search_scale
from lowbit.methods.base import Method, QuantContext
from lowbit.models.arch import ARCHS, InputGroup
from lowbit.schemes.base import Scheme
from lowbit.variant import OptionSpec

#: Default calibration tokens (whole batches of windows) on which each scale candidate is
#: scored (``+search=N``). AutoAWQ scores on all of them; on 2 cores every 1024 tokens cost
#: ~30 s per pass over a 30-block model, and on the bundled model 4096 gave the same KLD as 1024
#: (w4g64 0.187 [0.178, 0.197] vs 0.190 [0.176, 0.205]; w3g64 1.03 vs 0.99; 8k eval tokens,
#: bench/results/awq_search_4096.json and compare_default.json) for 150 s instead of 55 s.
SEARCH_TOKENS = 1024
#: Windows per pipeline batch: two 512-token windows, so ``+search`` counts in 1024s.
SEARCH_BATCH = 2


def _first_tensor(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _search_batches(batches: list[BlockBatch], search_tokens: int) -> tuple[list[BlockBatch], int]:
    """The first whole batches holding at least ``search_tokens`` tokens (or all), and their token count."""
    out, tokens = [], 0
    for b in batches:
        if tokens >= search_tokens:
            break
        out.append(b)
        tokens += b.hidden.shape[0] * b.hidden.shape[1]
    return out, tokens


def capture_io(bctx: BlockContext, modules: list[str], batches: list[BlockBatch]) -> dict[str, list[tuple]]:
    """Per module (block-relative name): ``(args, kwargs, output)`` of each call on ``batches``."""
    records: dict[str, list[tuple]] = {m: [] for m in modules}
    handles = []
    for m in modules:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict, out: Any, m: str = m) -> None:
            records[m].append((args, kwargs, _first_tensor(out)))
        handles.append(bctx.block.get_submodule(m).register_forward_hook(hook, with_kwargs=True))
    try:
        bctx.forward(batches)
    finally:
        for h in handles:
            h.remove()
    return records


def supported_families() -> list[str]:
    """Families with at least one foldable input group."""
    return [a.family for a in ARCHS if any(g.prev for g in a.groups)]


class AWQ(Method):
    """Activation-aware weight quantization (Lin et al. 2024) on any scheme."""

    name = "awq"
    summary = "AWQ: per-channel scales from activation magnitudes, folded into the previous op, plus clipping"
    needs_calibration = True
    options = {
        "noclip": OptionSpec("noclip", bool, False, "skip the clipping search"),
        "duo": OptionSpec("duo", bool, False, "AutoAWQ duo scaling: s = E|x|^α / s_W^(1-α)"),
        "search": OptionSpec("search", int, SEARCH_TOKENS,
                             "calibration tokens each scale candidate is scored on (whole windows)"),
    }

    def check_options(self, scheme: Scheme, options: dict[str, Any]) -> None:
        if int(options["search"]) < 1:
            raise LowbitError(f"awq option +search must be a positive number of tokens, got {options['search']}")

    def quantize(self, ctx: QuantContext) -> None:
        calib = ctx.require_calib(self.name)
        arch = ctx.loaded.arch
        if not any(g.prev for g in arch.groups):
            raise LowbitError(f"awq has no scaling groups for architecture '{arch.family}'; "
                              f"supported: {', '.join(supported_families())}")
        record: dict[str, Any] = {"alpha": {}, "unscaled_groups": {}, "rtn": [], "search_tokens": 0}
        search_s = 0.0

        def on_block(bctx: BlockContext) -> None:
            nonlocal search_s
            if bctx.targets:
                search_s += self._block(ctx, bctx, arch.groups, set(arch.qk), record)

        pipe = CalibrationPipeline(ctx.loaded, calib, ctx.targets, ctx.device, batch_size=SEARCH_BATCH)
        for name in pipe.outside_blocks():
            record["rtn"].append(name)
            ctx.install(name, ctx.scheme.quantize(ctx.targets[name].weight.detach()))
        pipe.run(on_block, "awq")
        ctx.stats["calib_seconds"] = pipe.seconds
        ctx.stats["awq"] = {**record, "search_seconds": search_s}

    def _groups(self, bctx: BlockContext, groups: tuple[InputGroup, ...],
                record: dict[str, Any]) -> list[tuple[InputGroup, nn.Module, list[nn.Linear]]]:
        usable = []
        for g in groups:
            names = [bctx.qualified(n) for n in g.linears]
            if not any(n in bctx.targets for n in names):
                continue
            consumers = [bctx.block.get_submodule(n) for n in g.linears]
            prev = bctx.block.get_submodule(g.prev) if g.prev else None
            label = f"{g.prev or '(block input)'} → {', '.join(g.linears)}"
            if all(isinstance(c, nn.Linear) for c in consumers) and can_fold(prev, consumers):
                usable.append((g, prev, consumers))
            elif label not in record["unscaled_groups"]:
                record["unscaled_groups"][label] = ("no producer inside the block" if prev is None
                                                    else "the producer's outputs do not map one to one")
        return usable

    def _block(self, ctx: QuantContext, bctx: BlockContext, groups: tuple[InputGroup, ...], qk: set[str],
               record: dict[str, Any]) -> float:
        scheme = ctx.scheme
        stats = bctx.collect(list(bctx.targets), hessian=False, stop_early=False)
        usable = self._groups(bctx, groups, record)
        search, record["search_tokens"] = _search_batches(bctx.batches, int(ctx.options["search"]))
        watched = sorted({g.inspect for g, _, _ in usable} | {bctx.local(n) for n in bctx.targets})
        io = capture_io(bctx, watched, search)
        t0 = time.perf_counter()
        scales: dict[str, torch.Tensor] = {}  # block-relative linear name → its input scale
        for g, prev, consumers in usable:
            inspect = bctx.block.get_submodule(g.inspect)
            recs = io[g.inspect]

            def score(inspect: nn.Module = inspect, recs: list[tuple] = recs) -> float:
                err, n = 0.0, 0
                with torch.inference_mode():
                    for args, kwargs, ref in recs:
                        out = _first_tensor(inspect(*args, **kwargs))
                        err += float((out.float() - ref.float()).pow(2).sum())
                        n += ref.numel()
                return err / max(n, 1)

            x_mean = stats[bctx.qualified(g.linears[0])].mean_abs()
            s, alpha, _ = search_scale(consumers, x_mean, scheme, score, bool(ctx.options["duo"]))
            record["alpha"][f"{bctx.name}:{g.prev}"] = alpha
            fold_scales(prev, consumers, s)
            for n in g.linears:
                scales[n] = s
        for name, lin in bctx.targets.items():
            w = lin.weight.detach()
            local = bctx.local(name)
            if not ctx.options["noclip"] and local not in qk:
                x = torch.cat([r[0][0].reshape(-1, lin.in_features) for r in io[local]])
                x = sample_tokens(x)
                if local in scales:
                    x = x / scales[local].to(x.dtype)
                group = scheme.column_group_size(lin.in_features)
                w = apply_clip(w, search_clip(w, x, scheme), group)
            q = scheme.quantize(w)
            q.meta["method"] = "awq"
            ctx.install(name, q)
        return time.perf_counter() - t0
