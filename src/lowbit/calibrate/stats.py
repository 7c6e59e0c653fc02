"""Per-linear input statistics gathered during calibration.

One :class:`InputStats` per distinct input tensor: linears that read the same
tensor (q/k/v after the input norm, gate/up after the post-attention norm)
share it, so the ``[I, I]`` Hessian is accumulated once. What methods read:

* GPTQ: the Hessian ``E[x xᵀ]``;
* AWQ: ``E[|x|]`` per input channel;
* GGUF imatrix: ``E[x²]`` per input channel;
* SmoothQuant: ``max |x|`` per input channel.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn


#: Row bands of the upper-triangular Hessian accumulation (see InputStats.add).
_HESSIAN_BANDS = 4


class StopForward(Exception):
    """Raised by a hook to end a forward pass once what was wanted is captured."""


class InputStats:
    """Running statistics of the inputs of one or more linears (sums kept in float32).

    Attributes:
        features: input width ``I``.
        tokens: input rows seen (calibration tokens).
        sum_abs: ``Σ |x|`` per input channel, ``[I]`` (None without moments).
        sum_sq: ``Σ x²`` per input channel, ``[I]`` (None without moments).
        max_abs: ``max |x|`` per input channel, ``[I]`` (None without moments).
        xtx: ``Σ x xᵀ``, ``[I, I]``, or None when not asked for.

    ``moments=False`` skips the per-channel sums (three passes over the inputs,
    ~4% of GPTQ's time) for a caller that needs only the Hessian; ``mean_sq``
    then comes from the Hessian's diagonal.
    """

    def __init__(self, features: int, device: torch.device, hessian: bool, moments: bool = True) -> None:
        if not (hessian or moments):
            raise ValueError("InputStats needs the Hessian, the per-channel moments, or both")
        self.features = features
        self.tokens = 0
        self.sum_abs = torch.zeros(features, device=device) if moments else None
        self.sum_sq = torch.zeros(features, device=device) if moments else None
        self.max_abs = torch.zeros(features, device=device) if moments else None
        self.xtx = torch.zeros(features, features, device=device) if hessian else None

    def add(self, x: torch.Tensor) -> None:
        """Accumulate inputs ``x`` ``[..., I]``."""
        x = x.detach().reshape(-1, self.features).float()
        self.tokens += x.shape[0]
        if self.sum_abs is not None and self.sum_sq is not None and self.max_abs is not None:
            a = x.abs()
            self.sum_abs += a.sum(0)
            self.sum_sq += (x * x).sum(0)
            torch.maximum(self.max_abs, a.amax(0), out=self.max_abs)
        if self.xtx is not None:
            # Upper triangle only, in row bands: Σ x xᵀ is symmetric, and four band
            # products (each band's rows × the columns from its diagonal on) do
            # 30% less work than the full product; hessian() mirrors the rest.
            step = -(-self.features // _HESSIAN_BANDS)
            for s in range(0, self.features, step):
                self.xtx[s : s + step, s:].addmm_(x[:, s : s + step].t(), x[:, s:])

    def mean_abs(self) -> torch.Tensor:
        """``E[|x|]`` per input channel (AWQ's activation magnitude)."""
        if self.sum_abs is None:
            raise ValueError("per-channel moments were not collected (moments=False)")
        return self.sum_abs / max(self.tokens, 1)

    def amax(self) -> torch.Tensor:
        """``max |x|`` per input channel (SmoothQuant's activation range)."""
        if self.max_abs is None:
            raise ValueError("per-channel moments were not collected (moments=False)")
        return self.max_abs

    def mean_sq(self) -> torch.Tensor:
        """``E[x²]`` per input channel (the diagonal of the Hessian; GGUF's importance)."""
        if self.sum_sq is None:
            assert self.xtx is not None  # __init__ refuses neither
            return torch.diag(self.xtx) / max(self.tokens, 1)
        return self.sum_sq / max(self.tokens, 1)

    def hessian(self) -> torch.Tensor:
        """``E[x xᵀ]`` ``[I, I]`` (GPTQ's ``H`` up to the factor 2, which cancels)."""
        if self.xtx is None:
            raise ValueError("Hessian was not collected (hessian=False)")
        upper = self.xtx.triu()
        return (upper + upper.triu(1).t()) / max(self.tokens, 1)


class StatsCollector:
    """Forward pre-hooks accumulating :class:`InputStats` for a set of linears.

    Use as a context manager around forwards; call :meth:`end_batch` after
    each. With ``stop_after_all``, the forward is cut (``StopForward``) as soon
    as every watched linear has received its input in the current batch.
    """

    def __init__(self, modules: dict[str, nn.Module], hessian: bool = True, stop_after_all: bool = False,
                 shared: tuple[tuple[str, ...], ...] = (), moments: bool = True) -> None:
        """``shared``: groups of names the architecture says read one input tensor (q/k/v, gate/up).
        The first of a group to run stands for all of them, so a stopped forward
        ends at the first one instead of after computing the others' outputs."""
        self.modules = modules
        self.hessian = hessian
        self.moments = moments
        self.stop_after_all = stop_after_all
        self._partners = {n: tuple(p for p in group if p != n and p in modules)
                          for group in shared for n in group if n in modules}
        self._stats: dict[str, InputStats] = {}
        self._leader: dict[str, str] = {}  # name → name whose stats it shares
        self._seen: dict[str, torch.Tensor] = {}  # this batch: name → input tensor
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Any:
        def pre_hook(_mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            self._seen.setdefault(name, x)
            if name not in self._stats and name not in self._leader:
                # Same tensor object as an earlier linear's input: share its statistics.
                leader = next((n for n, t in self._seen.items() if n != name and t is x and n in self._stats), None)
                if leader is not None:
                    self._leader[name] = leader
                else:
                    self._stats[name] = InputStats(x.shape[-1], x.device, self.hessian, self.moments)
            if name in self._stats:
                self._stats[name].add(x)
            for partner in self._partners.get(name, ()):
                if partner not in self._stats:
                    self._leader.setdefault(partner, self._leader.get(name, name))
                self._seen.setdefault(partner, x)
            if self.stop_after_all and all(n in self._seen for n in self.modules):
                raise StopForward

        return pre_hook

    def __enter__(self) -> StatsCollector:
        for name, mod in self.modules.items():
            self._handles.append(mod.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._seen = {}

    def end_batch(self) -> None:
        """Forget this batch's input tensors (they identify shared inputs within one forward)."""
        self._seen = {}

    def stats(self) -> dict[str, InputStats]:
        """Statistics per watched linear (shared objects for linears with a shared input)."""
        out = dict(self._stats)
        for name, leader in self._leader.items():
            out[name] = self._stats[leader]
        return {n: out[n] for n in self.modules if n in out}


__all__ = ["InputStats", "StatsCollector", "StopForward"]
