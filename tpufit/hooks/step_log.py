"""`StepLogHook`: TPUEstimator's `loss = …, step = …` lines, to the `tpufit` logger."""

from __future__ import annotations

import logging
import time

import numpy as np

from tpufit import errors
from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues

logger = logging.getLogger("tpufit")


class StepLogHook(Hook):
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
        self.every_n_steps = every_n_steps
        self._since = 0.0
        self._steps = 0

    def after_create_session(self, run: Run) -> None:  # noqa: D102 - see Hook.
        self._since = time.perf_counter()
        self._steps = 0

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if ctx.mode != Mode.TRAIN:
            return
        self._steps += ctx.steps
        if self._steps < self.every_n_steps:
            return
        elapsed = time.perf_counter() - self._since
        speed = self._steps / elapsed if elapsed > 0 else float("inf")
        loss = float(np.asarray(values.outfeed["loss"])[-1])
        step = ctx.global_step + ctx.steps
        logger.info("loss = %.7g, step = %d, global_step/sec = %.4g", loss, step, speed)
        self._since = time.perf_counter()
        self._steps = 0
