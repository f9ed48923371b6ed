"""`SummaryHook`: every step's loss and the metrics as TensorBoard summaries."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import cluster
from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues


class SummaryHook(Hook):
    """Writes TensorBoard summaries with `tf.summary`, from the outfeed.

    In training, every step's loss (and every `host_call` value a hook
    declared) is written at its own global step, not only each loop's last;
    the loop's logs (the epoch's running metrics, as Keras's progress bar
    shows them) at its last step as `batch_<name>`; each epoch's logs
    (validation included) as `epoch_<name>`. Evaluation writes its final logs at the
    current global step. Files go to `logdir/train` and `logdir/eval`.

    Args:
        logdir: The TensorBoard log directory.
        every_n_steps: Write per-step values every this many global steps.
    """

    def __init__(self, logdir: str, every_n_steps: int = 1) -> None:
        self.logdir = os.fspath(logdir)
        self.every_n_steps = every_n_steps
        self._writer: Any = None

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        # Under a multi-worker strategy only the chief writes summaries.
        if run.mode != Mode.PREDICT and cluster.is_chief(run.strategy):
            self._writer = tf.summary.create_file_writer(os.path.join(self.logdir, run.mode))

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if self._writer is None or ctx.mode != Mode.TRAIN:
            return
        with self._writer.as_default():
            for name, per_step in values.outfeed.items():
                per_step = np.asarray(per_step)
                if per_step.ndim != 1:
                    continue  # Only scalars per step make a curve.
                for index, value in enumerate(per_step):
                    step = ctx.global_step + index + 1
                    if step % self.every_n_steps == 0:
                        tf.summary.scalar(name, value, step=step)
            self._write_logs(values.logs, ctx.global_step + ctx.steps, prefix="batch_")

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102
        if self._writer is not None:
            with self._writer.as_default():
                prefix = "epoch_" if run.mode == Mode.TRAIN else ""
                self._write_logs(logs, run.global_step, prefix=prefix)

    def end(self, run: Run) -> None:  # noqa: D102
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    @staticmethod
    def _write_logs(logs: dict[str, Any], step: int, *, prefix: str) -> None:
        for name, value in logs.items():
            if np.ndim(value) == 0:
                tf.summary.scalar(f"{prefix}{name}", float(value), step=step)
