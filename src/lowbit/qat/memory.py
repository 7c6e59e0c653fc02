"""Memory a QAT run will need, estimated before it starts (so a run that cannot fit fails early).

Counted in bytes, float32 throughout: the frozen float teacher; the student
(its own copy of every frozen tensor, plus the latent weight of each
fake-quantized linear); one gradient and two Adam moments per trainable value;
the fake-quantized weights autograd keeps for backward; activations of one
batch (≈ 16 hidden-size and 4 MLP-size values per token per layer, kept for
backward) and the logits (≈ 6 vocabulary-size copies per token: student,
log-softmax, its gradient, teacher, log-softmax, probabilities).
"""

from __future__ import annotations

from typing import Any

from lowbit.methods import Variant, select_targets
from lowbit.models.loader import LoadedModel
from lowbit.utils.memory import current_rss_bytes

_F32 = 4


def estimate_memory(loaded: LoadedModel, v: Variant, window_tokens: int) -> dict[str, int]:
    """Estimated bytes by part, and ``total``, for training ``v`` on ``loaded`` with windows of ``window_tokens``."""
    model = loaded.model
    cfg: Any = getattr(model, "config", None)
    float_bytes = loaded.params * _F32
    targets = select_targets(loaded, bool(v.options.get("lm_head")))
    n_q = sum(t.weight.numel() for t in targets.values())
    lsq_extra = sum(t.weight.shape[0] * max(1, t.weight.shape[1] // (v.scheme.group_size or t.weight.shape[1]))
                    for t in targets.values()) if v.options.get("lsq") else 0
    trainable = n_q + lsq_extra
    tokens = int(v.options.get("batch", 1)) * window_tokens
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 0)
    inter = int(getattr(cfg, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0) or 0)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    teacher = float_bytes if v.options.get("loss") != "ce" else 0
    parts = {
        "teacher": teacher,
        "student": float_bytes,
        "gradients": trainable * _F32,
        "adam": 2 * trainable * _F32,
        "fake_quant_weights": n_q * _F32,
        "activations": tokens * layers * (16 * hidden + 4 * inter) * _F32,
        "logits": tokens * vocab * 6 * _F32,
    }
    parts["total"] = sum(parts.values())
    parts["process_now"] = current_rss_bytes()
    return parts


def format_estimate(parts: dict[str, int]) -> str:
    """One status line: the total and its main parts, in GiB."""
    gib = 2**30
    main = ", ".join(f"{k.replace('_', ' ')} {v / gib:.2f}" for k, v in parts.items() if k not in ("total", "process_now"))
    return f"memory estimate for training: ~{parts['total'] / gib:.2f} GiB ({main}; GiB)"


def available_bytes() -> int | None:
    """Memory the kernel reports available (``MemAvailable``), or None off Linux."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
