"""The decision rule, as data.

"Walk the questions in order and stop at the first that fits": each
:class:`Question` names the goal that answers it with *yes*, the variants it
recommends, and one-sentence reasons. :mod:`lowbit.advisor.recommend` walks
them; nothing here imports a method, so the rule names what the seed says even
when a method is not installed in this build (the walk then says so).

:data:`FACTS` describes every variant the rule names, for when its method or
scheme is not installed (otherwise the axes come from the scheme itself), and
carries the rough quantization-cost figures.
"""

from __future__ import annotations

from dataclasses import dataclass

GOALS = ("experiment", "gpu-serving", "cpu-edge", "accuracy", "latency")


@dataclass(frozen=True)
class Question:
    """One step of the rule.

    Attributes:
        goal: the ``--goal`` that answers this question with yes.
        ask: the question, as asked interactively.
        variants: recommended variant strings, in the order to try them.
        yes: why these variants, one sentence (``{target}`` and ``{bar}`` are filled in).
        no: why the walk moves on, one sentence (``{goal}`` is filled in).
        ladder: candidates for ``lowbit auto`` under this goal, conservative → aggressive.
    """

    goal: str
    ask: str
    variants: tuple[str, ...]
    yes: str
    no: str
    ladder: tuple[str, ...]


_INT_LADDER = ("rtn:w8ch", "rtn:w6g64", "rtn:w5g64", "rtn:w4g64", "rtn:w4g128", "rtn:w3g64", "rtn:w2g64")
_GGUF_LADDER = ("gguf:Q8_0", "gguf:Q6_K", "gguf:Q5_K_M", "gguf:Q5_K_S", "gguf:Q4_K_M", "gguf:Q4_K_S",
                "gguf:Q3_K_M", "gguf:Q3_K_S", "gguf:Q2_K")

QUESTIONS: tuple[Question, ...] = (
    Question(
        "experiment", "Are you just experimenting (trying a smaller model, nothing deployed yet)?",
        ("bnb:int8",),
        "bnb:int8 quantizes at load time with no calibration and is close to lossless at 8 bits: the cheapest "
        "way to try a smaller model",
        "you are not just experimenting (goal: {goal}), so a load-time 8-bit quantization is not the answer",
        ("bnb:int8", "rtn:w8ch", "bnb:nf4", "rtn:w4g64"),
    ),
    Question(
        "gpu-serving", "Are you serving an LLM at 4-bit on a GPU?",
        ("gptq:w4g64", "awq:w4g64"),
        "GPTQ and AWQ have fast 4-bit GPU kernels on {target}, and which of the two is better depends on the model "
        "and the calibration text, so try both",
        "you are not serving at 4-bit on a GPU (goal: {goal})",
        ("rtn:w8ch", "gptq:w8ch", "gptq:w4g64", "awq:w4g64", "rtn:w4g64", "gptq:w4g128", "awq:w4g128",
         "gptq:w3g64", "rtn:w3g64", "gptq:w2g64"),
    ),
    Question(
        "cpu-edge", "Will it run on a CPU, a laptop or an edge device?",
        ("gguf:Q4_K_M", "gguf:Q5_K_M"),
        "llama.cpp runs GGUF k-quants with optimised kernels on {target}; take the smallest k-quant that meets "
        "{bar}",
        "the model will not run on a CPU or edge device (goal: {goal})",
        _GGUF_LADDER + _INT_LADDER,
    ),
    Question(
        "accuracy", "Did 8-bit post-training quantization already miss your quality target, on a model that "
                    "matters enough to train?",
        ("qat:w8ch", "qat:w4g64"),
        "post-training quantization cannot recover what 8-bit PTQ already lost, so train through the quantizer "
        "(QAT) at the bit width you need, and check it against {bar}",
        "8-bit post-training quantization has not been shown to miss the target (goal: {goal})",
        ("rtn:w8ch", "qat:w8ch", "qat:w4g64", "qat:w3g64"),
    ),
    Question(
        "latency", "Is the model small and its latency critical?",
        ("smoothquant:w8a8", "rtn:w8a8"),
        "with int8 weights and activations the matmuls themselves run in int8 where {target} has int8 kernels "
        "(checked below), and SmoothQuant moves activation outliers into the weights so that 8-bit activations "
        "stay accurate",
        "latency is not the deciding constraint (goal: {goal})",
        ("smoothquant:w8a8", "rtn:w8a8", "rtn:w8ch"),
    ),
)

#: When the latency answer has no int8 kernel on the target: nearest alternatives, nearest first.
LATENCY_ALTERNATIVES = ("rtn:w8ch", "gguf:Q8_0", "gguf:Q4_K_M", "gptq:w4g64")
#: When gpu-serving is asked for a non-GPU target: the CPU answer is the nearest.
GPU_ON_CPU_ALTERNATIVES = ("gguf:Q4_K_M", "gguf:Q5_K_M")
#: When no question fits (interactive "no" to all): let the measurement decide.
NO_MATCH_VARIANTS = ("rtn:w8ch", "rtn:w4g64")
#: Parameters above which a model is not "small" for the latency question.
SMALL_MODEL_PARAMS = 3_000_000_000


@dataclass(frozen=True)
class Facts:
    """What the rule knows about a variant without resolving it.

    Attributes:
        hw_key: support-matrix scheme key (``lowbit.hardware.matrix.SCHEMES``).
        bits: nominal bit width, as a phrase.
        quantized: what is quantized.
        granularity: how grid parameters are shared.
        calibration: ``none`` or what calibration reads.
        seconds_per_mparam: rough quantization time on a 2-core CPU, seconds per
            million parameters (an order of magnitude, not a measurement).
        prior_kld / prior_dppl_pct: llama.cpp's Llama-3-8B scoreboard figures
            (mean KLD, Δppl %), a prior only.
    """

    hw_key: str | None
    bits: str
    quantized: str
    granularity: str
    calibration: str
    seconds_per_mparam: float
    prior_kld: float | None = None
    prior_dppl_pct: float | None = None


_W = "weights of every linear layer (output head kept float); activations stay 16-bit"
_WA = "weights and activations of every linear layer, int8 (output head kept float)"
_CAL = "calibration text (default 128 windows of 512 tokens from your --calib or a disjoint part of --eval)"
_GG = "weights of every linear layer and the output head (llama.cpp's mixture rules); activations float"

FACTS: dict[str, Facts] = {
    "bnb:int8": Facts("bnb-int8", "8 bits + fp16 outlier columns (LLM.int8)", _W, "per output row (absmax), "
                      "outlier input columns kept fp16", "none (quantized at load time)", 0.05),
    "bnb:nf4": Facts("bnb-nf4", "4 bits (NF4 codebook) + absmax per 64", _W, "blocks of 64", "none", 0.05),
    "gptq:w4g64": Facts("int4-w4a16", "4 bits (4.25 bpw with fp16 scales)", _W, "groups of 64 inputs",
                        _CAL + "; Hessian solve per layer", 3.0),
    "awq:w4g64": Facts("int4-w4a16", "4 bits (4.25 bpw with fp16 scales)", _W, "groups of 64 inputs",
                       _CAL + "; scale and clip search per layer", 4.0),
    "gguf:Q8_0": Facts("gguf", "8.5 bpw (Q8_0)", _GG, "blocks of 32", "none (optional importance matrix)", 0.3,
                       0.00136, 0.04),
    "gguf:Q6_K": Facts("gguf", "≈6.6 bpw (Q6_K)", _GG, "super-blocks of 256 (16 × 16)", "none (optional importance "
                       "matrix)", 1.0, 0.00545, 0.35),
    "gguf:Q5_K_M": Facts("gguf", "≈5.7 bpw (Q5_K, Q6_K on some tensors)", _GG, "super-blocks of 256 (8 × 32)",
                         "none (optional importance matrix)", 1.0, 0.0108, 0.91),
    "gguf:Q4_K_M": Facts("gguf", "≈4.9 bpw (Q4_K, Q6_K on some tensors)", _GG, "super-blocks of 256 (8 × 32)",
                         "none (optional importance matrix)", 1.0, 0.0313, 2.8),
    "qat:w8ch": Facts("int8-w8a16", "8 bits per channel", _W, "per output channel",
                      "training text: forward and backward passes through fake quantizers", 60.0),
    "qat:w4g64": Facts("int4-w4a16", "4 bits (4.25 bpw)", _W, "groups of 64 inputs",
                       "training text: forward and backward passes through fake quantizers", 60.0),
    "smoothquant:w8a8": Facts("int8-w8a8", "8-bit weights, 8-bit activations", _WA,
                              "weights per output channel, activations per token (dynamic)",
                              _CAL + "; activation ranges per channel", 1.0),
    "rtn:w8a8": Facts("int8-w8a8", "8-bit weights, 8-bit activations", _WA,
                      "weights per output channel, activations per token (dynamic)", "none", 0.05),
    "rtn:w8ch": Facts("int8-w8a16", "8 bits per channel", _W, "per output channel", "none", 0.05),
    "rtn:w4g64": Facts("int4-w4a16", "4 bits (4.25 bpw)", _W, "groups of 64 inputs", "none", 0.05),
}

#: Rough seconds per million parameters by method, for variants not in :data:`FACTS`.
METHOD_COST = {"rtn": 0.05, "bnb": 0.05, "gguf": 1.0, "gptq": 3.0, "awq": 4.0, "smoothquant": 1.0,
               "qat": 60.0, "mixed": 1.0}


def question_for(goal: str) -> Question:
    """The question a goal answers with yes."""
    for q in QUESTIONS:
        if q.goal == goal:
            return q
    raise KeyError(goal)
