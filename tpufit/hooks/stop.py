"""`StopAtStepHook`: train until the global step reaches a given value, exactly."""

from __future__ import annotations

from tpufit import errors
from tpufit.config import Mode
from tpufit.errors import is_int
from tpufit.hooks.base import Hook, Run, RunContext, RunValues


class StopAtStepHook(Hook):
    """Stops training at a global step, shortening the last loop to end exactly there.

    Give exactly one of `num_steps` (steps to train from where this run
    starts) or `last_step` (the global step to stop at), as TPUEstimator's
    `StopAtStepHook`. Other modes are not affected.

    Args:
        num_steps: Steps to train in this run.
        last_step: Global step at which training stops.

    Example:
        >>> tm.fit(x, y, epochs=100, hooks=[tpufit.hooks.StopAtStepHook(last_step=250)])
        >>> tm.global_step
        250
    """

    def __init__(self, num_steps: int | None = None, last_step: int | None = None) -> None:
        if (num_steps is None) == (last_step is None):
            raise errors.invalid_argument(
                "num_steps",
                num_steps,
                "exactly one of num_steps and last_step",
                what=f"StopAtStepHook got num_steps={num_steps!r} and last_step={last_step!r}",
            )
        for name, value in (("num_steps", num_steps), ("last_step", last_step)):
            if value is not None and (not is_int(value) or value < 0):
                raise errors.invalid_argument(name, value, "a non-negative int")
        self.num_steps = num_steps
        self.last_step = last_step
        self._stop_at: int | None = last_step

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        if run.mode == Mode.TRAIN and self.num_steps is not None:
            self._stop_at = run.global_step + self.num_steps

    def after_create_session(self, run: Run) -> None:  # noqa: D102
        if run.mode == Mode.TRAIN and run.global_step >= self._stop_at:
            run.request_stop()

    def before_run(self, ctx: RunContext) -> None:  # noqa: D102
        if ctx.mode == Mode.TRAIN:
            ctx.limit_steps(max(1, self._stop_at - ctx.global_step))

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if ctx.mode == Mode.TRAIN and ctx.global_step + ctx.steps >= self._stop_at:
            ctx.request_stop()
