"""Activation statistics from calibration: per input channel max|x| of chosen linears.

This is the small boundary SmoothQuant reads its calibration through. It runs
the *float* model over the calibration windows once, with forward pre-hooks on
the named linears (SmoothQuant's factors and static scales are defined on the
float model's activations, so the layer-by-layer quantized pipeline is not
needed here); swapping in the shared ``lowbit.calibrate`` pipeline means
re-implementing only :func:`collect_input_absmax`.
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

    Raises :class:`LowbitError` naming the linear when its calibration input
    holds Inf or NaN: no finite scale can be derived from it.
    """
    stats: dict[str, torch.Tensor] = {}

    def record(name: str, x: torch.Tensor) -> None:
        amax = x.abs().amax(dim=0)
        if x.numel() and not bool(torch.isfinite(amax).all()):
            stats[name] = amax  # kept to name the channel below
            raise _NonFinite(name)
        old = stats.get(name)
        stats[name] = amax if old is None else torch.maximum(old, amax)

    windows = calib.windows if max_windows is None else calib.windows[:max_windows]
    try:
        with input_hooks(model, names, record):
            run_windows(model, windows, "calibration: activation ranges")
    except _NonFinite as e:
        bad = int((~torch.isfinite(stats[e.name])).nonzero()[0, 0])
        raise LowbitError(f"calibration activations entering '{e.name}' contain Inf/NaN (input channel {bad}); "
                          "no finite activation scale exists. Check the model's weights and the calibration text "
                          f"({calib.source})") from None
    missing = [n for n in names if n not in stats]
    if missing:
        raise LowbitError(f"calibration never reached {missing[:3]}; is the model's forward using them?")
    return {n: t.cpu() for n, t in stats.items()}


class _NonFinite(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name
