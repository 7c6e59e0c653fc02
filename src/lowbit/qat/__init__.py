"""Quantization-aware training: fake quantizers, prepare/convert, the training loop, checkpoints.

The method itself is :class:`lowbit.methods.qat.QAT` (variant ``qat:…``); the
`lowbit qat` command is :func:`lowbit.qat.run.run_qat`.
"""

from lowbit.qat.fake_quant import (
    AffineFakeQuant,
    DynamicFakeQuant,
    FakeQuantizer,
    GroupwiseFakeQuant,
    fake_quant_act_int8,
    fake_quantizer_for,
)
from lowbit.qat.modules import FakeQuantLinear, convert, prepare

__all__ = ["AffineFakeQuant", "DynamicFakeQuant", "FakeQuantLinear", "FakeQuantizer", "GroupwiseFakeQuant",
           "convert", "fake_quant_act_int8", "fake_quantizer_for", "prepare"]
