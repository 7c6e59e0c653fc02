"""Per-architecture knowledge, kept as data.

Which module list holds the blocks, which linears share an input and which
norm or linear feeds them, the order in which a block's linears may be
quantized, which output heads stay float. The calibration pipeline, AWQ and
SmoothQuant read these tables; none of them carries a per-family copy of its
loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.errors import LowbitError


@dataclass(frozen=True)
class InputGroup:
    """Linears that read the same input, and the op whose output that input is.

    Attributes:
        prev: module (relative to the block) producing the shared input: a norm
            (scales fold into its weight/bias) or a linear (fold into its output
            rows); empty when the producer is outside the block.
        linears: consumer linears, relative to the block.
        inspect: module whose output measures the group's error (AWQ), relative
            to the block.
    """

    prev: str
    linears: tuple[str, ...]
    inspect: str


@dataclass(frozen=True)
class ArchSpec:
    """What lowbit needs to know about one model family.

    Attributes:
        family: short name (``llama``, ``gpt2``, ``bert``).
        model_types: Hugging Face ``config.model_type`` values it covers.
        kind: ``causal-lm`` (scored by next-token metrics) or ``encoder``.
        blocks: dotted path to the ModuleList of repeated blocks.
        stages: the block's linears in true-sequential order (each stage
            depends only on earlier ones).
        groups: input-sharing groups, for scaling methods.
        skip: qualified-name suffixes left float by default (output heads).
        qk: linears whose outputs meet in the attention product ``QKᵀ``; AWQ
            does not clip them (an error there is squared by the product).
        tails: ``(module, linear)`` pairs where ``linear`` is the module's last
            step, so the module's output is ``linear(its input)``; GPTQ's
            true-sequential stages replay such a module from the linear's kept
            input instead of recomputing attention or the MLP (bit-identical).
        feeders: ``(norm, module)`` pairs where ``norm``'s output is read by
            ``module`` alone (pre-norm blocks); while ``module`` replays, the
            norm's result is unused and the replay skips computing it.
    """

    family: str
    model_types: tuple[str, ...]
    kind: str
    blocks: str
    stages: tuple[tuple[str, ...], ...]
    groups: tuple[InputGroup, ...]
    skip: tuple[str, ...]
    qk: tuple[str, ...] = ()
    tails: tuple[tuple[str, str], ...] = ()
    feeders: tuple[tuple[str, str], ...] = ()

    def block_linears(self) -> tuple[str, ...]:
        """All linears of one block, in stage order."""
        return tuple(name for stage in self.stages for name in stage)


LLAMA = ArchSpec(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    kind="causal-lm",
    blocks="model.layers",
    stages=(
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.o_proj",),
        ("mlp.gate_proj", "mlp.up_proj"),
        ("mlp.down_proj",),
    ),
    groups=(
        InputGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
        InputGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
        InputGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
        InputGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
    ),
    skip=("lm_head",),
    qk=("self_attn.q_proj", "self_attn.k_proj"),
    tails=(("self_attn", "self_attn.o_proj"), ("mlp", "mlp.down_proj")),
    feeders=(("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")),
)

# GPT-2's Conv1D layers are converted to nn.Linear at load time (see loader), so
# the names below refer to Linear modules.
GPT2 = ArchSpec(
    family="gpt2",
    model_types=("gpt2",),
    kind="causal-lm",
    blocks="transformer.h",
    stages=(("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",)),
    groups=(
        InputGroup("ln_1", ("attn.c_attn",), "attn"),
        InputGroup("ln_2", ("mlp.c_fc",), "mlp"),
    ),
    skip=("lm_head",),
    qk=("attn.c_attn",),  # fused q/k/v
    tails=(("attn", "attn.c_proj"), ("mlp", "mlp.c_proj")),  # each followed only by a dropout (off in eval)
    feeders=(("ln_1", "attn"), ("ln_2", "mlp")),
)

# BERT is post-norm: a LayerNorm's output is also the residual stream, so no
# scale can fold into it. Attention mixes tokens, not channels, so a per-channel
# scale on the value projection's outputs passes through to attention.output.dense.

BERT = ArchSpec(
    family="bert",
    model_types=("bert",),
    kind="encoder",
    blocks="encoder.layer",
    stages=(
        ("attention.self.query", "attention.self.key", "attention.self.value"),
        ("attention.output.dense",),
        ("intermediate.dense",),
        ("output.dense",),
    ),
    groups=(
        InputGroup("", ("attention.self.query", "attention.self.key", "attention.self.value"), "attention"),
        InputGroup("attention.self.value", ("attention.output.dense",), "attention.output.dense"),
    ),
    skip=("pooler.dense", "cls.predictions.transform.dense", "cls.predictions.decoder", "classifier"),
    qk=("attention.self.query", "attention.self.key"),
)

ARCHS: tuple[ArchSpec, ...] = (LLAMA, GPT2, BERT)


def arch_for_model_type(model_type: str) -> ArchSpec:
    """The :class:`ArchSpec` covering a Hugging Face ``model_type``."""
    for spec in ARCHS:
        if model_type in spec.model_types:
            return spec
    supported = sorted(t for a in ARCHS for t in a.model_types)
    raise LowbitError(f"unsupported architecture '{model_type}'; supported model types: {', '.join(supported)}")
