"""Activation statistics from calibration: per input channel max|x| of chosen linears.

This is the small boundary SmoothQuant reads its calibration through. It runs
the *float* model over the calibration windows once and reads ``max|x|`` from
the shared :mod:`lowbit.calibrate` statistics. Whole-model forwards rather
than the block-by-block pipeline: SmoothQuant's factors and static scales are
defined on the float model's activations, all computed before anything is
folded or quantized (as the reference implementation does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.eval.reference import model_device
from lowbit.utils.progress import track
from lowbit.utils.tensors import flush_denormal

#: Called with a linear's input ``[tokens, in_features]`` (float32).
InputHook = Callable[[str, torch.Tensor], None]


@contextmanager
def input_hooks(model: nn.Module, names: list[str], fn: InputHook) -> Iterator[None]:
    """While the block runs, call ``fn(name, x)`` with the input of every linear in ``names``."""
    handles = []
    for name in names:
        mod = model.get_submodule(name)

        def pre(_m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            x = args[0].detach()
            fn(name, x.reshape(-1, x.shape[-1]).float())

        handles.append(mod.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def run_windows(model: nn.Module, windows: torch.Tensor, desc: str) -> None:
    """Run ``model`` over calibration windows ``[n, T]``, one window per forward."""
    device = model_device(model)
    with flush_denormal():
        for i in track(range(windows.shape[0]), desc, total=windows.shape[0]):
            model(input_ids=windows[i : i + 1].to(device), use_cache=False)


def collect_input_absmax(model: nn.Module, names: list[str], calib: TokenSet,
                         max_windows: int | None = None) -> dict[str, torch.Tensor]:
    """max|x| per input channel (fp32 ``[in_features]``, on CPU) of each linear in ``names``.

    Statistics come from the shared :class:`lowbit.calibrate.StatsCollector`
    (linears reading the same tensor share one accumulator) over full forwards
    of the float model. Raises :class:`LowbitError` naming the first linear
    whose calibration input holds Inf or NaN: no finite scale exists for it.
    """
    from lowbit.calibrate import StatsCollector

    windows = calib.windows if max_windows is None else calib.windows[:max_windows]
    device = model_device(model)
    collector = StatsCollector({n: model.get_submodule(n) for n in names}, hessian=False)
    with torch.inference_mode(), flush_denormal(), collector:
        for i in track(range(windows.shape[0]), "calibration: activation ranges", total=windows.shape[0]):
            model(input_ids=windows[i : i + 1].to(device), use_cache=False)
            collector.end_batch()
    stats = collector.stats()
    missing = [n for n in names if n not in stats]
    if missing:
        raise LowbitError(f"calibration never reached {missing[:3]}; is the model's forward using them?")
    out = {n: stats[n].amax().detach().float().cpu().clone() for n in names}
    for name in names:
        bad = ~torch.isfinite(out[name])
        if bool(bad.any()):
            raise LowbitError(f"calibration activations entering '{name}' contain Inf/NaN (input channel "
                              f"{int(bad.nonzero()[0, 0])}); no finite activation scale exists. Check the model's "
                              f"weights and the calibration text ({calib.source})")
    return out
