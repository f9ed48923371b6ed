"""`ProfilerHook`: a `tf.profiler` trace of a chosen range of loops."""

from __future__ import annotations

import os

import tensorflow as tf

from tpufit.hooks.base import Hook, Run, RunContext, RunValues


class ProfilerHook(Hook):
    """Traces loops `first_loop` .. `first_loop + num_loops - 1` of a run with `tf.profiler`.

    Loops are counted from 0 in the order they run; loop 0 also traces and
    compiles the program, so the default starts at loop 1. Open the trace in
    TensorBoard's Profile tab (`tensorboard --logdir <logdir>`).

    Args:
        logdir: Where the trace goes (`<logdir>/plugins/profile/<run>/`).
        first_loop: The first loop traced.
        num_loops: How many loops are traced.
    """

    def __init__(self, logdir: str, first_loop: int = 1, num_loops: int = 1) -> None:
        self.logdir = os.fspath(logdir)
        self.first_loop = first_loop
        self.num_loops = num_loops
        self.traced_loops: list[int] = []
        self._loop = 0
        self._active = False

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        self._loop = 0

    def before_run(self, ctx: RunContext) -> None:  # noqa: D102
        if self._loop == self.first_loop and not self._active:
            tf.profiler.experimental.start(self.logdir)
            self._active = True

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if self._active:
            self.traced_loops.append(self._loop)
            if self._loop >= self.first_loop + self.num_loops - 1:
                self._stop()
        self._loop += 1

    def end(self, run: Run) -> None:  # noqa: D102
        self._stop()

    def _stop(self) -> None:
        if self._active:
            tf.profiler.experimental.stop()
            self._active = False
