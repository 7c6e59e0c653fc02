"""Run calibration windows through a model one block at a time.

The pipeline every calibrating method shares (GPTQ, AWQ, SmoothQuant, GGUF
imatrix, QAT initialisation):

1. a forward pre-hook on the first block captures its inputs (hidden states,
   plus whatever positional and keyword arguments the model passes its blocks:
   attention masks, rotary position embeddings, position ids) for every batch
   of calibration windows, and stops the forward there;
2. for each block in turn, a callback receives a :class:`BlockContext` and may
   collect input statistics of the block's linears, run the block, and swap
   its linears for quantized ones;
3. the (now quantized) block's outputs replace its inputs and become the next
   block's inputs, so later blocks calibrate on what they will really see.

Only the current block's inputs are ever held: peak memory is the model plus
one block's working set (``n_windows × T × hidden`` floats, plus one batch of
the block's intermediates), never every layer's activations.

Family knowledge (where the block list lives) comes from
:class:`lowbit.models.arch.ArchSpec`; nothing here is per family.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lowbit.calibrate.stats import InputStats, StatsCollector, StopForward
from lowbit.data.windows import TokenSet
from lowbit.errors import LowbitError
from lowbit.models.loader import LoadedModel
from lowbit.utils.progress import track

#: Calibration windows run through the model together (a memory/speed trade-off:
#: attention scores cost batch × heads × T² floats).
DEFAULT_BATCH = 4


@dataclass
class BlockBatch:
    """One batch of a block's inputs.

    Attributes:
        hidden: the hidden states entering the block, ``[B, T, H]``.
        args: further positional arguments the model passed the block.
        kwargs: keyword arguments the model passed the block (masks, rotary
            embeddings, ...); shared between batches when equal.
    """

    hidden: torch.Tensor
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _same(a: Any, b: Any) -> bool:
    """Structural equality of captured block arguments (tensors compared by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or (type(a) is type(b) and type(a) in (int, float, bool, str, type(None)) and a == b)


def _first_tensor(out: Any) -> torch.Tensor:
    """A block's output hidden states (blocks return a tensor or a tuple starting with one)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"block returned {type(out).__name__}; expected a tensor or a tuple starting with one")


def get_blocks(loaded: LoadedModel) -> nn.ModuleList:
    """The model's repeated blocks, found where its :class:`ArchSpec` says."""
    try:
        blocks = loaded.model.get_submodule(loaded.arch.blocks)
    except AttributeError:
        raise LowbitError(f"{loaded.name}: no block list at '{loaded.arch.blocks}' "
                          f"(architecture {loaded.arch.family})") from None
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise LowbitError(f"{loaded.name}: '{loaded.arch.blocks}' is not a non-empty list of blocks")
    return blocks


@dataclass
class BlockContext:
    """What a per-block callback sees and may do.

    Attributes:
        index: block number, 0-based.
        name: qualified name of the block (e.g. ``model.layers.3``).
        block: the block module (modified in place by quantizing callbacks).
        targets: the linears of this block that are to be quantized, by
            qualified name (a subset of the method's targets).
        batches: the block's inputs, one entry per batch of windows.
        pipeline: the running pipeline (timing, device).
    """

    index: int
    name: str
    block: nn.Module
    targets: dict[str, nn.Linear]
    batches: list[BlockBatch]
    pipeline: CalibrationPipeline
    #: linear (qualified) → its input in the latest run, per batch (see :meth:`keep_inputs`).
    _kept: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)
    #: module (qualified) → the linear whose kept input replays it (see :meth:`replay`).
    _replays: dict[str, str] = field(default_factory=dict)
    #: module → its replayed output per batch, computed on first use.
    _replayed: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Calibration tokens entering the block."""
        return sum(b.hidden.shape[0] * b.hidden.shape[1] for b in self.batches)

    def local(self, qualified: str) -> str:
        """Name of a module relative to the block (``model.layers.3.mlp.up_proj`` → ``mlp.up_proj``)."""
        return qualified[len(self.name) + 1:]

    def qualified(self, local: str) -> str:
        """Qualified name of a module given relative to the block."""
        return f"{self.name}.{local}" if local else self.name

    def run(self, batch: BlockBatch) -> torch.Tensor:
        """The block's output for one batch of inputs, ``[B, T, H]`` (batches not in ``batches`` never replay)."""
        i = next((k for k, b in enumerate(self.batches) if b is batch), None)
        with torch.inference_mode(), self._replaying(i) if i is not None else nullcontext():
            return _first_tensor(self.block(batch.hidden, *batch.args, **batch.kwargs))

    def keep_inputs(self, linears: list[str]) -> None:
        """From now on, hold the input of each of ``linears`` (qualified names) as of the latest run, per batch."""
        for name in linears:
            self._kept.setdefault(name, [None] * len(self.batches))

    def replay(self, module: str, linear: str) -> None:
        """From now on, compute ``module`` as ``linear`` applied to ``linear``'s kept input.

        For a module whose last step is that linear (Llama's ``self_attn`` ends
        in ``o_proj``, its ``mlp`` in ``down_proj``): once everything upstream of
        the linear is final, its input no longer changes, so later runs of the
        block skip the rest of the module (attention, the gated MLP) and still
        give bit-identical outputs. The caller vouches that the kept input is
        final. A batch whose input was not kept, or a module whose return value
        carries more than one tensor, runs for real.
        """
        if linear not in self._kept:
            raise ValueError(f"replay of {module} needs keep_inputs([{linear!r}]) before a run")
        self._replays[module] = linear

    @contextmanager
    def _replaying(self, i: int) -> Iterator[None]:
        """Hooks for batch ``i``: keep the asked-for linear inputs, replay modules whose input is kept."""
        handles: list[Any] = []
        patched: list[nn.Module] = []
        try:
            for name, store in self._kept.items():
                def keep(_m: nn.Module, args: tuple[Any, ...], store: list[torch.Tensor | None] = store) -> None:
                    store[i] = args[0]
                # prepend: before a statistics hook that may end the forward right there
                handles.append(self.block.get_submodule(self.local(name)).register_forward_pre_hook(keep, prepend=True))
            for mod_name, linear in self._replays.items():
                mod = self.block.get_submodule(self.local(mod_name))
                key = (self.local(mod_name), type(mod))
                kept, shape = self._kept[linear][i], self.pipeline.returns.get(key, False)
                if kept is not None and shape is not False:
                    mod.forward = self._replay_forward(mod_name, i, linear, kept, shape)  # type: ignore[method-assign]
                    patched.append(mod)
                    for norm, fed in self.pipeline.loaded.arch.feeders:
                        if fed == key[0]:  # its only reader ignores it now: pass the input through
                            feeder = self.block.get_submodule(norm)
                            feeder.forward = _pass_through  # type: ignore[method-assign]
                            patched.append(feeder)
                elif key not in self.pipeline.returns:
                    handles.append(mod.register_forward_hook(self._record_return(key)))
            yield
        finally:
            for h in handles:
                h.remove()
            for mod in patched:
                del mod.forward  # back to the class's forward

    def _replay_forward(self, module: str, i: int, linear: str, kept: torch.Tensor,
                        trailing: int | None | bool) -> Callable[..., Any]:
        lin = self.block.get_submodule(self.local(linear))  # the installed (quantized) module
        outputs = self._replayed.setdefault(module, [None] * len(self.batches))

        def forward(*_args: Any, **_kwargs: Any) -> Any:
            # Nothing the output depends on changes any more: compute it once per batch.
            out = outputs[i]
            if out is None:
                out = outputs[i] = lin(kept)
            return out if trailing is None else (out, *([None] * int(trailing)))

        return forward

    def _record_return(self, key: tuple[str, type]) -> Callable[..., None]:
        returns = self.pipeline.returns

        def hook(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor):
                returns[key] = None
            elif (isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor)
                  and all(x is None for x in out[1:])):
                returns[key] = len(out) - 1
            else:
                returns[key] = False

        return hook

    def forward(self, batches: list[BlockBatch] | None = None) -> list[torch.Tensor]:
        """The block's outputs for ``batches`` (default: every batch). Counts as calibration time."""
        with self.pipeline.timed():
            return [self.run(b) for b in (self.batches if batches is None else batches)]

    def collect(self, linears: list[str], hessian: bool = True, stop_early: bool = True,
                batches: list[BlockBatch] | None = None, moments: bool = True) -> dict[str, InputStats]:
        """Run the block over its inputs and accumulate input statistics of ``linears``.

        Args:
            linears: qualified names of linears inside this block.
            hessian: also accumulate ``Σ x xᵀ`` (``[I, I]`` per distinct input).
            stop_early: end each forward once every listed linear has run
                (true-sequential stages need only the start of the block).
            batches: which batches to run (default: all).
            moments: also accumulate the per-channel ``Σ|x|``, ``Σx²`` and ``max|x|``.

        Linears reading the same input tensor (q/k/v, gate/up) share one
        :class:`InputStats` object, so each Hessian is computed once.
        """
        modules = {n: self.block.get_submodule(self.local(n)) for n in linears}
        shared = tuple(tuple(self.qualified(n) for n in g.linears) for g in self.pipeline.loaded.arch.groups)
        collector = StatsCollector(modules, hessian=hessian, stop_after_all=stop_early, shared=shared,
                                   moments=moments)
        with self.pipeline.timed(), collector:
            for b in self.batches if batches is None else batches:
                try:
                    self.run(b)
                except StopForward:
                    pass
                collector.end_batch()
        return collector.stats()


def _pass_through(x: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
    """Stands in for a norm whose only reader is being replayed (see ``ArchSpec.feeders``)."""
    return x


class CalibrationPipeline:
    """Calibration windows → block-by-block callbacks, holding one block's inputs at a time.

    Args:
        loaded: the model (quantized in place by callbacks).
        calib: calibration windows ``[n, T]``.
        targets: qualified names of the linears that will be quantized; each
            block's callback sees those inside it.
        device: where the windows and activations live.
        batch_size: windows per forward.
    """

    def __init__(self, loaded: LoadedModel, calib: TokenSet, targets: dict[str, nn.Linear],
                 device: torch.device | None = None, batch_size: int = DEFAULT_BATCH) -> None:
        if calib.windows.numel() == 0:
            raise LowbitError("the calibration set is empty; pass --calib with some text")
        self.loaded = loaded
        self.calib = calib
        self.targets = targets
        self.device = device or next(loaded.model.parameters()).device
        self.batch_size = max(1, int(batch_size))
        self.blocks = get_blocks(loaded)
        self.seconds = 0.0
        #: Bytes of block inputs held after each block (checked by tests: it must not grow).
        self.held_bytes: list[int] = []
        #: (module name within a block, its class) → what it returns besides its first tensor:
        #: None for a bare tensor, else the number of trailing ``None`` s; ``False`` when that is
        #: anything else (not replayable). Learnt from the first real run and shared by every
        #: block, so later blocks replay from their first run on.
        self.returns: dict[tuple[str, type], int | None | bool] = {}
        self._batches: list[BlockBatch] = []

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the enclosed work as calibration time (forwards and statistics)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def block_name(self, i: int) -> str:
        """Qualified name of block ``i``."""
        return f"{self.loaded.arch.blocks}.{i}"

    def outside_blocks(self) -> list[str]:
        """Targets that belong to no block (e.g. an output head); methods handle them themselves."""
        prefix = self.loaded.arch.blocks + "."
        return [n for n in self.targets if not n.startswith(prefix)]

    def capture(self) -> list[BlockBatch]:
        """Inputs of the first block for every batch of calibration windows."""
        captured: list[BlockBatch] = []

        def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden, rest = args[0] if args else kwargs.pop("hidden_states"), tuple(args[1:])
            kwargs = dict(kwargs)
            if captured:  # masks/embeddings are usually identical across batches: keep one copy
                prev = captured[-1]
                rest = prev.args if _same(rest, prev.args) else rest
                kwargs = prev.kwargs if _same(kwargs, prev.kwargs) else kwargs
            captured.append(BlockBatch(hidden.detach(), rest, kwargs))
            raise StopForward

        windows = self.calib.windows
        handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with self.timed(), torch.inference_mode():
                for start in range(0, windows.shape[0], self.batch_size):
                    ids = windows[start:start + self.batch_size].to(self.device)
                    try:
                        self.loaded.model(input_ids=ids, use_cache=False)
                    except StopForward:
                        pass
        finally:
            handle.remove()
        if len(captured) != (windows.shape[0] + self.batch_size - 1) // self.batch_size:
            raise LowbitError(f"{self.loaded.name}: the first block ({self.block_name(0)}) was not reached "
                              "for every calibration batch")
        return captured

    def held(self) -> int:
        """Bytes of hidden states the pipeline holds now."""
        return sum(b.hidden.numel() * b.hidden.element_size() for b in self._batches)

    def run(self, on_block: Callable[[BlockContext], None], description: str = "calibrate") -> None:
        """Call ``on_block`` for every block, then propagate the block's (quantized) outputs.

        ``on_block`` may quantize the block's linears in place; the next block's
        inputs are computed afterwards, from the block as it is then.
        """
        self._batches = self.capture()
        n = len(self.blocks)
        for i in track(range(n), f"{description}: blocks", total=n):
            name = self.block_name(i)
            block = self.blocks[i]
            mine = {t: m for t, m in self.targets.items() if t.startswith(name + ".")}
            ctx = BlockContext(i, name, block, mine, self._batches, self)
            on_block(ctx)
            if i + 1 < n:
                with self.timed():
                    # Replace each batch's inputs by its outputs in place: one
                    # block's activations are held, never two.
                    for b in self._batches:
                        b.hidden = ctx.run(b)
            self.held_bytes.append(self.held())
        self._batches = []


@dataclass
class PipelineResult:
    """Summary a method may record in its stats."""

    blocks: int
    tokens: int
    calib_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def run_pipeline(loaded: LoadedModel, calib: TokenSet, targets: dict[str, nn.Linear],
                 on_block: Callable[[BlockContext], None], device: torch.device | None = None,
                 description: str = "calibrate", batch_size: int = DEFAULT_BATCH) -> PipelineResult:
    """Convenience wrapper: build a :class:`CalibrationPipeline` and run ``on_block`` on every block."""
    pipe = CalibrationPipeline(loaded, calib, targets, device, batch_size)
    pipe.run(on_block, description)
    return PipelineResult(len(pipe.blocks), calib.tokens, pipe.seconds)


__all__ = ["DEFAULT_BATCH", "BlockBatch", "BlockContext", "CalibrationPipeline", "PipelineResult",
           "get_blocks", "run_pipeline"]
