"""The QAT training loop: distillation or next-token loss through fake-quantized linears.

Only the fake-quantized linears' latent weights (and their scales under LSQ)
are trained; embeddings, norms and the float output head stay frozen, which
keeps optimizer memory at 3× the quantized weights and lets the float teacher
share nothing mutable with the student. Every step is a pure function of the
step number (batch order, learning rate), so a resumed run continues exactly
where a checkpoint left it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.qat.fake_quant import AffineFakeQuant
from lowbit.qat.modules import fake_quant_modules
from lowbit.qat.progress import TrainProgress
from lowbit.utils.tensors import flush_denormal

LOSSES = ("kd", "ce", "kdce")


@dataclass
class TrainConfig:
    """Hyper-parameters of one QAT run.

    Attributes:
        steps: optimizer steps in the schedule.
        lr: peak Adam learning rate (latent weights and scales).
        loss: ``kd`` (KL to the float model's next-token distribution),
            ``ce`` (next-token cross-entropy on the training text) or ``kdce`` (their sum).
        batch: windows per step.
        tokens: distinct training tokens used (0: all training windows).
        seed: seed of the batch order.
        warmup: steps of linear warm-up (then cosine decay to ``min_lr_ratio``·lr).
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        clip: gradient-norm clip.
        bf16: run the matmuls of both models in bfloat16 (autocast; CPUs with AMX run them
            several times faster). Latent weights, Adam and the exported model stay float32.
    """

    steps: int = 200
    lr: float = 1e-4
    loss: str = "kd"
    batch: int = 1
    tokens: int = 0
    seed: int = 0
    warmup: int = -1
    min_lr_ratio: float = 0.1
    clip: float = 1.0
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.tokens < 0:
            raise LowbitError(f"qat: steps and batch must be ≥ 1 and tokens ≥ 0 (got steps={self.steps}, "
                              f"batch={self.batch}, tokens={self.tokens})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LowbitError(f"qat: +lr must be a positive number, got {self.lr}")
        if self.loss not in LOSSES:
            raise LowbitError(f"qat: +loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.warmup < 0:
            self.warmup = min(20, self.steps // 10)

    def lr_at(self, step: int) -> float:
        """Learning rate of the step that follows ``step`` completed steps."""
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        span = max(1, self.steps - self.warmup)
        frac = min(1.0, (step - self.warmup) / span)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


class TrainingDiverged(LowbitError):
    """The loss or a gradient became NaN/Inf; ``step`` is the step that failed (1-based)."""

    def __init__(self, step: int, lr: float, what: str, note: str = "") -> None:
        self.step, self.lr, self.what = step, lr, what
        msg = (f"qat: {what} became NaN/Inf at step {step} (learning rate {lr:.3g}); training stopped "
               "and the step was not applied. Lower +lr=")
        super().__init__(f"{msg}; {note}" if note else msg)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher ‖ student) of the next-token distributions (nats)."""
    lt = torch.log_softmax(teacher.float(), dim=-1)
    ls = torch.log_softmax(student.float(), dim=-1)
    return (lt.exp() * (lt - ls)).sum(-1).mean()


def ce_loss(student: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats)."""
    v = student.shape[-1]
    return nn.functional.cross_entropy(student[:, :-1].reshape(-1, v).float(), ids[:, 1:].reshape(-1))


@dataclass
class TrainLog:
    """What training did, kept in checkpoints and reports."""

    step: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


class QATTrainer:
    """Adam on the trainable parameters of ``student``, against the frozen float ``teacher``."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, windows: torch.Tensor, cfg: TrainConfig,
                 device: torch.device) -> None:
        if cfg.loss in ("kd", "kdce") and teacher is None:
            raise ValueError("distillation needs the float teacher")
        self.student, self.teacher, self.cfg, self.device = student, teacher, cfg, device
        n = windows.shape[0]
        if cfg.tokens:
            n = min(n, max(1, -(-cfg.tokens // windows.shape[1])))
        self.windows = windows[:n]
        self.params = {n: p for n, p in student.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError("student has no trainable parameters; call prepare() first")
        self.lsq = [m.fq for _, m in fake_quant_modules(student) if isinstance(m.fq, AffineFakeQuant) and m.fq.lsq]
        # fused: one pass over each parameter instead of ~10 (Adam is a tenth of a step on CPU otherwise).
        self.opt = torch.optim.Adam(list(self.params.values()), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
        self.log = TrainLog()
        self._perms: dict[int, torch.Tensor] = {}

    @property
    def window_tokens(self) -> int:
        """Tokens per training window."""
        return int(self.windows.shape[1])

    def batch_indices(self, step: int) -> list[int]:
        """Windows of the step after ``step`` completed ones: seeded epoch permutations, in order."""
        n, b = self.windows.shape[0], self.cfg.batch
        out = []
        for pos in range(step * b, (step + 1) * b):
            epoch = pos // n
            if epoch not in self._perms:
                gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
                self._perms = {epoch: torch.randperm(n, generator=gen)}
            out.append(int(self._perms[epoch][pos % n]))
        return out

    def _loss(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            logits = self.student(input_ids=ids, use_cache=False).logits
            t_logits = None
            if self.cfg.loss in ("kd", "kdce"):
                assert self.teacher is not None
                with torch.no_grad():
                    t_logits = self.teacher(input_ids=ids, use_cache=False).logits
        loss = logits.new_zeros((), dtype=torch.float32)
        if t_logits is not None:
            loss = loss + kd_loss(logits, t_logits)
        if self.cfg.loss in ("ce", "kdce"):
            loss = loss + ce_loss(logits, ids)
        return loss

    def step_once(self) -> float:
        """One optimizer step; returns its loss. Raises :class:`TrainingDiverged` without applying it."""
        step = self.log.step
        lr = self.cfg.lr_at(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        ids = self.windows[self.batch_indices(step)].to(self.device)
        loss = self._loss(ids)
        if not torch.isfinite(loss):
            raise TrainingDiverged(step + 1, lr, "the loss")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.clip)
        if not torch.isfinite(norm):
            self.opt.zero_grad(set_to_none=True)
            raise TrainingDiverged(step + 1, lr, "the gradient")
        self.opt.step()
        for fq in self.lsq:
            fq.clamp_()
        self.log.step += 1
        self.log.tokens_seen += ids.numel()
        value = float(loss.detach())
        self.log.losses.append(value)
        return value

    def run(self, until: int, after_step: Callable[[QATTrainer], None] | None = None,
            max_seconds: float | None = None) -> bool:
        """Train until ``until`` steps are done; False if ``max_seconds`` of training time came first.

        Training time is the time of the steps themselves (:attr:`TrainLog.seconds`, summed over
        resumed runs); the callbacks' evaluations and checkpoints do not count.
        """
        self.student.eval()  # no dropout: the quantized model is used in eval mode
        with flush_denormal(), TrainProgress(self.log.step, until, "qat") as bar:
            while self.log.step < until:
                if max_seconds is not None and self.log.seconds >= max_seconds:
                    return False
                t0 = time.perf_counter()
                loss = self.step_once()
                dt = time.perf_counter() - t0
                self.log.seconds += dt
                bar.update(self.log.step, loss, self.cfg.batch * self.window_tokens / dt, self.cfg.lr_at(self.log.step - 1))
                if after_step is not None:
                    after_step(self)
        return True

    # --- checkpoint state -------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to resume: fake-quantized modules and Adam moments."""
        out: dict[str, torch.Tensor] = {}
        for name, mod in fake_quant_modules(self.student):
            for key, t in mod.state_dict().items():
                out[f"module/{name}.{key}"] = t.detach().cpu().contiguous()
        for pname, p in self.params.items():
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    out[f"adam/{pname}/{key}"] = st[key].detach().cpu().contiguous()
        return out

    def adam_steps(self) -> int:
        """Adam's step counter (the same for every parameter)."""
        for p in self.params.values():
            st = self.opt.state.get(p, {})
            if "step" in st:
                return int(st["step"])
        return 0

    def load_state(self, tensors: dict[str, torch.Tensor], log: TrainLog, adam_step: int) -> None:
        """Restore a checkpoint written from :meth:`state_tensors` (same variant and model)."""
        for name, mod in fake_quant_modules(self.student):
            prefix = f"module/{name}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                mod.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise LowbitError(f"checkpoint does not match module '{name}': {str(e).splitlines()[0]}") from None
        for pname, p in self.params.items():
            ea, eq = tensors.get(f"adam/{pname}/exp_avg"), tensors.get(f"adam/{pname}/exp_avg_sq")
            if ea is None or eq is None:
                if adam_step:
                    raise LowbitError(f"checkpoint lacks the optimizer state of '{pname}'")
                continue
            self.opt.state[p] = {"step": torch.tensor(float(adam_step)), "exp_avg": ea.to(p.device).clone(),
                                 "exp_avg_sq": eq.to(p.device).clone()}
        self.log = log
