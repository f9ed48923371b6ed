"""`CheckpointHook`: writes a `model_dir`'s checkpoints during `fit` (TPUEstimator's saver)."""

from __future__ import annotations

import time

import numpy as np

from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues, first_non_finite
from tpufit.model_dir.checkpoint import Saver


class CheckpointHook(Hook):
    """Writes checkpoints during `fit`, at loop boundaries, and at its end (TPUEstimator's saver).

    A checkpoint is written after the first loop that ends at least
    `every_steps` steps or `every_secs` seconds after the last one, and when
    the run ends without an error. Nothing is written once a loop had a
    non-finite loss (the last good checkpoint stays the latest), nor at the
    end of a run that an exception or `KeyboardInterrupt` ended: the last
    checkpoint written at a loop boundary stays the latest.

    The position a restarted run resumes at (epoch, step in the epoch) is
    the run's `Progress`, which the training program itself advances; this
    hook only decides when to write.

    Args:
        saver: Writes the checkpoints.
        every_steps: The step cadence, or `None`.
        every_secs: The time cadence, or `None`.
    """

    def __init__(
        self,
        saver: Saver,
        *,
        every_steps: int | None,
        every_secs: float | None,
    ) -> None:
        self.saver = saver
        self._every_steps = every_steps
        self._every_secs = every_secs
        self._last_save_time = 0.0
        self._last_save_step = 0
        self.non_finite = False

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        self.saver.reset()
        self._last_save_time = time.monotonic()
        self._last_save_step = run.global_step

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if ctx.mode != Mode.TRAIN or self.non_finite:
            return
        if not _finite(values):
            self.non_finite = True  # These weights must never replace a good checkpoint.
            return
        step = ctx.global_step + ctx.steps
        due_steps = (
            self._every_steps is not None and step - self._last_save_step >= self._every_steps
        )
        due_secs = (
            self._every_secs is not None
            and time.monotonic() - self._last_save_time >= self._every_secs
        )
        if due_steps or due_secs:
            self._save(step)

    def end(self, run: Run) -> None:  # noqa: D102
        if run.mode == Mode.TRAIN and run.error is None and not self.non_finite:
            self._save(run.global_step)

    def _save(self, step: int) -> None:
        self.saver.save()
        self._last_save_step = step
        self._last_save_time = time.monotonic()


def _finite(values: RunValues) -> bool:
    """Whether a training loop's losses were finite: every step's, else the logged ones.

    A model's own train step may log no `loss` (a GAN logs `d_loss` and
    `g_loss`); then every logged value named like a loss is checked.
    """
    if "loss" in values.logs:
        return first_non_finite(values.outfeed["loss"]) is None
    losses = [value for name, value in values.logs.items() if "loss" in name]
    return first_non_finite(np.asarray(losses, dtype=np.float64).ravel()) is None
