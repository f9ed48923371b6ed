"""`StepLogHook`: TPUEstimator's `loss = …, step = …` lines, to the `tpufit` logger."""

from __future__ import annotations

import logging

import numpy as np

from tpufit import errors
from tpufit.config import Mode
from tpufit.hooks.base import RunContext, RunValues
from tpufit.hooks.logger import LoggingHook

logger = logging.getLogger("tpufit")


class StepLogHook(LoggingHook):
    """Logs the latest step's loss, the global step and the speed while training.

    At the first loop boundary at least `every_n_steps` steps after the last
    line, logs `loss = 0.2311, step = 1200, global_step/sec = 812.4` at INFO
    level to the `tpufit` logger (`logging.getLogger("tpufit")`), not to
    stdout: nothing shows unless the program configures logging. `fit` gets
    one from `RunConfig.log_step_count_steps`.

    Args:
        every_n_steps: Steps between lines.
    """

    def __init__(self, every_n_steps: int) -> None:
        errors.check_positive_int("every_n_steps", every_n_steps)
        super().__init__(every_n_secs=None, every_n_steps=every_n_steps, log_fn=logger.info)
        self.modes = (Mode.TRAIN,)

    def line(self, ctx: RunContext, values: RunValues, steps_per_sec: float) -> str:  # noqa: D102
        loss = float(np.asarray(values.outfeed["loss"])[-1])
        step = ctx.global_step + ctx.steps
        return f"loss = {loss:.7g}, step = {step}, global_step/sec = {steps_per_sec:.4g}"
