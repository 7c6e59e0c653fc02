"""The shared layer-by-layer calibration pipeline and the statistics it gathers.

Public API (used by GPTQ, AWQ, and later SmoothQuant, GGUF imatrix, QAT init):

* :func:`run_pipeline` / :class:`CalibrationPipeline`: calibration windows run
  block by block; a callback per block receives a :class:`BlockContext`;
* :meth:`BlockContext.collect`: per-linear :class:`InputStats` (Hessian
  ``E[x xᵀ]``, ``E[|x|]``, ``E[x²]``, ``max |x|``) for the block's linears;
* :meth:`BlockContext.forward`: the block's outputs on its inputs.

Example (mean squared activation of every targeted linear)::

    imp = {}
    def on_block(ctx):
        for name, st in ctx.collect(list(ctx.targets), hessian=False).items():
            imp[name] = st.mean_sq()
    run_pipeline(loaded, calib, targets, on_block)
"""

from lowbit.calibrate.pipeline import (
    DEFAULT_BATCH,
    BlockBatch,
    BlockContext,
    CalibrationPipeline,
    PipelineResult,
    get_blocks,
    run_pipeline,
)
from lowbit.calibrate.stats import InputStats, StatsCollector, StopForward

__all__ = ["DEFAULT_BATCH", "BlockBatch", "BlockContext", "CalibrationPipeline", "InputStats", "PipelineResult",
           "StatsCollector", "StopForward", "get_blocks", "run_pipeline"]
