"""QAT: fine-tune through the quantizer, starting from a PTQ variant, then convert.

``qat:w3g64+steps=200+lr=1e-4+init=rtn+loss=kd`` runs the init method
(any registered PTQ method, through :data:`lowbit.methods.METHODS`) on the
calibration windows, which here are the training text; swaps every target
for a :class:`~lowbit.qat.modules.FakeQuantLinear`; trains against the float
model (a frozen copy made before the init); and installs the converted
:class:`QuantizedTensor` of each target, exactly as a PTQ method does.

Checkpointing, resuming and the evaluation curve are run settings
(:class:`QATRun`), not variant options: ``lowbit qat`` passes them by
building a ``QAT(run)`` instance; ``lowbit compare`` uses the plain one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.methods.base import Method, QuantContext
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.variant import OptionSpec

#: Steps a `--quick` comparison uses unless the variant sets +steps.
QUICK_STEPS = 4
DEFAULT_LR = 1e-4


@dataclass
class QATRun:
    """Run settings of one QAT job (what the `lowbit qat` command controls).

    Attributes:
        checkpoint_dir: folder for checkpoints (None: none written).
        checkpoint_every: steps between checkpoints (0: only at the end).
        resume: continue from the checkpoint in ``checkpoint_dir``.
        evaluate: ``(model, step, final) -> metrics`` for the training curve; called
            before the first step, every ``eval_every`` steps and after the last.
        eval_every: steps between curve points (0: only before and after).
        eval_tensors: per-token tensors the evaluator keeps (saved in checkpoints).
        max_seconds: stop after this much training time (steps only, not evaluations), then convert.
        model: model spec, recorded in checkpoints.
        variant: the variant text, recorded in checkpoints.
        train_sha256: identity of the training text (source, documents, window, seed), recorded in checkpoints.
    """

    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    resume: bool = False
    evaluate: Callable[[nn.Module, int, bool], dict[str, Any]] | None = None
    eval_every: int = 0
    eval_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    max_seconds: float | None = None
    model: str = ""
    variant: str = ""
    train_sha256: str = ""


class QAT(Method):
    """Quantization-aware training from a PTQ init, straight-through estimator, optional LSQ / A8."""

    name = "qat"
    summary = "quantization-aware training (STE; +lsq scales; distillation from the float model)"
    needs_calibration = True
    options: ClassVar[dict[str, OptionSpec]] = {
        "steps": OptionSpec("steps", int, 200, "optimizer steps"),
        "lr": OptionSpec("lr", float, DEFAULT_LR, "peak Adam learning rate (warm-up, then cosine to 10%)"),
        "tokens": OptionSpec("tokens", int, 0, "distinct training tokens to use (0: all training windows)"),
        "batch": OptionSpec("batch", int, 1, "training windows per step"),
        "init": OptionSpec("init", str, "rtn", "PTQ method that gives the starting grid and codes (rtn, gptq, …)"),
        "loss": OptionSpec("loss", str, "kd", "kd: KL to the float model; ce: next-token loss; kdce: both",
                           ("kd", "ce", "kdce")),
        "lsq": OptionSpec("lsq", bool, False, "learn the scales too (LSQ)"),
        "a8": OptionSpec("a8", bool, False, "fake-quantize activations to int8 per token (W·A8 targets)"),
        "bf16": OptionSpec("bf16", bool, False, "bfloat16 matmuls while training (faster on AMX CPUs); "
                           "the result stays float32"),
    }

    def __init__(self, run: QATRun | None = None) -> None:
        self.run = run or QATRun()

    def act_bits(self, scheme: Scheme, options: dict[str, Any]) -> int:
        return 8 if options.get("a8") else 16

    def quick_options(self, options: dict[str, Any], given: set[str]) -> dict[str, Any]:
        return options if "steps" in given else {**options, "steps": min(options["steps"], QUICK_STEPS)}

    def quantize(self, ctx: QuantContext) -> None:
        from lowbit.qat.trainer import TrainConfig

        validate_options(ctx.scheme, ctx.options)
        cfg = TrainConfig(steps=ctx.options["steps"], lr=ctx.options["lr"], loss=ctx.options["loss"],
                          batch=ctx.options["batch"], tokens=ctx.options["tokens"], seed=ctx.loaded.seed,
                          bf16=ctx.options["bf16"])
        calib = ctx.calib
        if calib is None or calib.windows.numel() == 0:
            raise LowbitError("qat needs training text of at least one window (pass --train / --calib with more "
                              "text, or a smaller --window-tokens)")
        teacher = copy.deepcopy(ctx.model).eval().requires_grad_(False) if cfg.loss != "ce" else None
        float_weights = {n: lin.weight.detach() for n, lin in ctx.targets.items()}
        info = self._resume_info(ctx)
        # Resuming overwrites every fake-quant tensor, so the init is not re-run: RTN stands in.
        inits = ({n: ctx.scheme.quantize(w) for n, w in float_weights.items()} if info is not None
                 else run_init(ctx))
        try:
            self._train(ctx, cfg, teacher, float_weights, inits, info)
        finally:
            del teacher

    # --- pieces ---------------------------------------------------------------------

    def _resume_info(self, ctx: QuantContext) -> dict[str, Any] | None:
        from lowbit.qat.checkpoint import check_resumable, read_info, structure_of
        from lowbit.utils.progress import info

        run = self.run
        if not run.resume:
            return None
        if run.checkpoint_dir is None:
            raise LowbitError("--resume needs a checkpoint folder")
        doc = read_info(run.checkpoint_dir)
        structure = structure_of(self.name, ctx.scheme.spec(), ctx.options)
        for note in check_resumable(doc, run.variant, structure, run.model, run.train_sha256):
            info(note)
        return doc

    def _train(self, ctx: QuantContext, cfg: Any, teacher: nn.Module | None, float_weights: dict[str, torch.Tensor],
               inits: dict[str, QuantizedTensor], info: dict[str, Any] | None) -> None:
        from lowbit.qat.checkpoint import log_from_info, read_tensors
        from lowbit.qat.modules import attach_act_quant, convert, prepare
        from lowbit.qat.trainer import QATTrainer, TrainingDiverged
        from lowbit.utils.progress import warn

        model = ctx.model
        model.requires_grad_(False)
        mods = prepare(model, float_weights, inits, ctx.options["lsq"], ctx.options["a8"])
        trainer = QATTrainer(model, teacher, ctx.calib.windows, cfg, ctx.device)  # type: ignore[union-attr]
        run = self.run
        if info is not None and run.checkpoint_dir is not None:
            tensors = read_tensors(run.checkpoint_dir)
            trainer.load_state(tensors, log_from_info(info), int(info.get("adam_step", 0)))
            for name, meta in info.get("module_meta", {}).items():
                if name in mods:
                    mods[name].meta = dict(meta)
            run.eval_tensors.update({k[5:]: v for k, v in tensors.items() if k.startswith("eval/")})
        elif run.evaluate is not None:
            trainer.log.curve.append(run.evaluate(model, 0, False))
        last_saved: list[int] = [int(info["log"]["step"])] if info is not None else []

        def after_step(t: QATTrainer) -> None:
            step = t.log.step
            if run.evaluate is not None and run.eval_every and step % run.eval_every == 0 and step < cfg.steps:
                t.log.curve.append(run.evaluate(model, step, False))
            if run.checkpoint_dir is not None and run.checkpoint_every and step % run.checkpoint_every == 0:
                self._save(t, ctx, mods)
                last_saved.append(step)

        start = time.perf_counter()
        try:
            finished = trainer.run(cfg.steps, after_step, run.max_seconds)
        except TrainingDiverged as e:
            if run.checkpoint_dir is None:
                raise
            where = (f"the last good checkpoint is step {last_saved[-1]} in {run.checkpoint_dir}: continue with "
                     "--resume and a lower +lr=" if last_saved else
                     f"no checkpoint had been written yet (every {run.checkpoint_every} steps)")
            raise TrainingDiverged(e.step, e.lr, e.what, where) from None
        if run.evaluate is not None:
            trainer.log.curve.append(run.evaluate(model, trainer.log.step, True))
        if run.checkpoint_dir is not None and (not last_saved or last_saved[-1] != trainer.log.step):
            self._save(trainer, ctx, mods)
        for name, q in convert(model).items():
            ctx.install(name, q)
            if ctx.options["a8"]:
                attach_act_quant(model.get_submodule(name))
        if not finished:
            warn(f"qat: the training-time budget ({run.max_seconds:.0f} s) ran out after step {trainer.log.step} "
                 f"of {cfg.steps}; converting the model as it is")
        ctx.stats["qat"] = {**trainer.log.to_json(), "train_wall_seconds": time.perf_counter() - start,
                            "finished_schedule": finished,
                            "training_windows": int(trainer.windows.shape[0]),
                            "window_tokens": trainer.window_tokens, "config": vars(cfg)}

    def _save(self, trainer: Any, ctx: QuantContext, mods: dict[str, Any]) -> None:
        from lowbit.qat.checkpoint import save_checkpoint, structure_of

        run = self.run
        assert run.checkpoint_dir is not None
        tensors = trainer.state_tensors()
        tensors.update({f"eval/{k}": v.contiguous() for k, v in run.eval_tensors.items()})
        save_checkpoint(run.checkpoint_dir, tensors, {
            "variant": run.variant, "structure": structure_of(self.name, ctx.scheme.spec(), ctx.options),
            "model": run.model, "train_sha256": run.train_sha256, "adam_step": trainer.adam_steps(),
            "log": trainer.log.to_json(), "module_meta": {n: m.meta for n, m in mods.items()},
        })


def validate_options(scheme: Scheme, options: dict[str, Any]) -> None:
    """Check what the option parser cannot: the init method exists and is PTQ; LSQ fits the scheme."""
    from lowbit.methods import METHODS
    from lowbit.qat.fake_quant import supports_lsq

    init = METHODS.canonical(options["init"])  # unknown: lists the registered methods
    if init == QAT.name:
        raise LowbitError("qat: +init must name a post-training method (e.g. rtn, gptq), not qat")
    if options["lsq"] and not supports_lsq(scheme):
        raise LowbitError(f"qat: +lsq (trainable scales) is not available for scheme {scheme.spec()}; it needs an "
                          "affine grid (int:…). Drop +lsq to train the weights only")
    for name in ("steps", "batch"):
        if options[name] < 1:
            raise LowbitError(f"qat: +{name} must be ≥ 1, got {options[name]}")
    if options["tokens"] < 0:
        raise LowbitError(f"qat: +tokens must be ≥ 0, got {options['tokens']}")
    if not options["lr"] > 0:
        raise LowbitError(f"qat: +lr must be positive, got {options['lr']}")


def run_init(ctx: QuantContext) -> dict[str, QuantizedTensor]:
    """Quantize the targets with the init method (installing its QuantLinears); return its tensors."""
    from lowbit.methods import METHODS, resolve_variant

    name = METHODS.canonical(ctx.options["init"])
    text = f"{name}:{ctx.scheme.spec()}" + ("+lm_head" if ctx.options.get("lm_head") else "")
    v = resolve_variant(text)
    sub = QuantContext(ctx.loaded, ctx.targets, ctx.scheme, v.options, ctx.calib, ctx.device)
    v.method.quantize(sub)
    missing = sorted(set(ctx.targets) - set(sub.installed))
    if missing:
        raise RuntimeError(f"init method {name} did not quantize {missing[:3]}…")
    ctx.stats["calib_seconds"] = float(sub.stats.get("calib_seconds", 0.0))
    ctx.stats["init"] = {"variant": text, "stats": {k: v for k, v in sub.stats.items() if k != "calib_seconds"}}
    return dict(sub.installed)
