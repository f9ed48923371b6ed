"""`SummaryHook`: every step's loss and the metrics as TensorBoard summaries."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.config import Mode
from tpufit.hooks.base import Hook, Run, RunContext, RunValues

# Each eager `tf.summary.scalar` runs several eager ops (a millisecond on a busy CPU): a loop's
# per-step values beyond this many are written by one traced call instead (traced once per
# hook and name; a short loop is not worth the trace). Both write the same events.
_EAGER_STEPS = 64


def _graph_writer(name: str) -> Callable:
    @tf.function
    def write(values: tf.Tensor, steps: tf.Tensor) -> None:
        for index in tf.range(tf.size(values)):
            with tf.name_scope(""):  # Else the loop's scope prefixes the tag ("while/loss").
                tf.summary.scalar(name, values[index], step=steps[index])

    return write


class SummaryHook(Hook):
    """Writes TensorBoard summaries with `tf.summary`, from the outfeed.

    In training, every step's loss (and every `host_call` value a hook
    declared) is written at its own global step, not only each loop's last.
    At the first loop boundary at least `save_steps` steps after the previous
    write, the loop's logs (the epoch's running metrics, as Keras's progress
    bar shows them) are written at its last step as `batch_<name>`, with
    `global_step/sec` and `examples/sec` since the previous write, and the
    file is flushed (so TensorBoard shows it). Each epoch's logs (validation
    included) are written as `epoch_<name>`. Evaluation writes its final logs
    at the current global step. Files go to `logdir/train` and `logdir/eval`.

    A `TPUModel` with a `model_dir` adds one of these to `fit` and `evaluate`
    itself (`RunConfig.save_summary_steps`); see docs/model_dir.md.

    Args:
        logdir: The TensorBoard log directory.
        every_n_steps: Write per-step values every this many global steps.
        save_steps: Write the loop's logs and the speed (and flush) at the
            first loop boundary at least this many steps after the last time.
    """

    def __init__(self, logdir: str, every_n_steps: int = 1, save_steps: int = 1) -> None:
        errors.check_positive_int("every_n_steps", every_n_steps)
        errors.check_positive_int("save_steps", save_steps)
        self.logdir = os.fspath(logdir)
        self.every_n_steps = every_n_steps
        self.save_steps = save_steps
        self._writer: Any = None
        self._graph_writers: dict[str, Callable] = {}
        self._since = 0.0
        self._steps = 0

    def begin(self, run: Run) -> None:  # noqa: D102 - see Hook.
        # Under a multi-worker strategy only the chief writes summaries.
        if run.mode != Mode.PREDICT and cluster.is_chief(run.strategy):
            self._writer = tf.summary.create_file_writer(os.path.join(self.logdir, run.mode))

    def after_create_session(self, run: Run) -> None:  # noqa: D102
        self._since = time.perf_counter()
        self._steps = 0

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102
        if self._writer is None or ctx.mode != Mode.TRAIN:
            return
        with self._writer.as_default():
            for name, per_step in values.outfeed.items():
                per_step = np.asarray(per_step)
                if per_step.ndim != 1:
                    continue  # Only scalars per step make a curve.
                steps = ctx.global_step + 1 + np.arange(len(per_step), dtype=np.int64)
                due = steps % self.every_n_steps == 0
                self._write_steps(name, per_step[due], steps[due])
            self._steps += ctx.steps
            if self._steps >= self.save_steps:
                self._write_loop(ctx, values)

    def _write_steps(self, name: str, values: np.ndarray, steps: np.ndarray) -> None:
        if len(values) <= _EAGER_STEPS:
            for value, step in zip(values, steps, strict=True):
                tf.summary.scalar(name, value, step=step)
            return
        if name not in self._graph_writers:
            self._graph_writers[name] = _graph_writer(name)
        self._graph_writers[name](tf.constant(values), tf.constant(steps))

    def _write_loop(self, ctx: RunContext, values: RunValues) -> None:
        step = ctx.global_step + ctx.steps
        write_scalars(values.logs, step, prefix="batch_")
        elapsed = time.perf_counter() - self._since
        if elapsed > 0:
            tf.summary.scalar("global_step/sec", self._steps / elapsed, step=step)
            if ctx.run.batch_size:
                rate = self._steps * ctx.run.batch_size / elapsed
                tf.summary.scalar("examples/sec", rate, step=step)
        self._writer.flush()
        self._since = time.perf_counter()
        self._steps = 0

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102
        if self._writer is not None:
            with self._writer.as_default():
                prefix = "epoch_" if run.mode == Mode.TRAIN else ""
                write_scalars(logs, run.global_step, prefix=prefix)

    def end(self, run: Run) -> None:  # noqa: D102
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def write_scalars(logs: Mapping[str, Any], step: int, *, prefix: str = "") -> None:
    """Writes every scalar of `logs` to the default summary writer at `step`.

    Args:
        logs: Metric names and values; entries that are not scalars are skipped.
        step: The global step to write them at.
        prefix: Put before every name (`"epoch_"`, `"batch_"`).
    """
    for name, value in logs.items():
        if np.ndim(value) == 0:
            tf.summary.scalar(f"{prefix}{name}", float(value), step=step)
