"""A `model_dir`'s TensorBoard summaries: the hooks `fit` and `evaluate` get, and eval events.

With a `model_dir`, training writes to `<model_dir>/train` (every step's loss,
and every `RunConfig.save_summary_steps` steps the running metrics and the
speed) and every evaluation to `<model_dir>/eval`, at the global step it
evaluated, as TPUEstimator did. Only the chief writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tpufit import cluster
from tpufit.config import Mode, RunConfig
from tpufit.hooks.base import Hook, Run
from tpufit.hooks.summary import SummaryHook, write_scalars

EVAL_DIR = "eval"


class EvalSummaryWriter:
    """Writes a run of evaluations to `<model_dir>/eval`, all into one event file.

    Each scalar of an evaluation's logs becomes a TensorBoard scalar named as
    in the logs (`loss`, `accuracy`, ...) at the global step evaluated, so
    every evaluation of one `model_dir` draws one curve per metric over the
    global steps, as TPUEstimator's eval directory did. The file is opened at
    the first write and flushed after each, so TensorBoard sees every
    evaluation at once. Another process (a separate evaluator) writes its own
    file beside this one: TensorFlow names each file after its host, process
    and writer, and TensorBoard reads them all. Only the chief writes
    (`tpufit.cluster.is_chief`); elsewhere this writes nothing.

    Args:
        model_dir: The run's directory.
        strategy: The strategy the evaluations run under (who the chief is),
            or `None` to read it from `TF_CONFIG`.
    """

    def __init__(self, model_dir: str, strategy: tf.distribute.Strategy | None = None) -> None:
        self.directory = os.path.join(os.fspath(model_dir), EVAL_DIR)
        self._chief = cluster.is_chief(strategy)
        self._writer: tf.summary.SummaryWriter | None = None

    def write(self, global_step: int, logs: Mapping[str, float]) -> None:
        """Writes an evaluation's scalars at `global_step` and flushes the file.

        Args:
            global_step: The global step of the weights that were evaluated.
            logs: The evaluation's logs (`evaluate(..., return_dict=True)`).
        """
        if not self._chief:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.directory)
        with self._writer.as_default():
            write_scalars(logs, int(global_step))
        self._writer.flush()

    def close(self) -> None:
        """Closes the event file; a later `write` opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EvalSummaryHook(Hook):
    """Writes each evaluation's logs (`evaluate`, `fit`'s validation) at the global step.

    Every evaluation of one `TPUModel` goes through the model's one
    `EvalSummaryWriter`, so they share an event file.

    Args:
        writer: The model's writer of `<model_dir>/eval`.
    """

    def __init__(self, writer: EvalSummaryWriter) -> None:
        self.writer = writer

    def epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:  # noqa: D102 - see Hook.
        if run.mode is Mode.EVAL:
            self.writer.write(run.global_step, logs)


def summary_hooks(config: RunConfig, path: str | None) -> list[Hook]:
    """The summary hook a `fit` gets from its `model_dir`: none without one, or when turned off.

    It writes to `<model_dir>/train`; evaluations get an `EvalSummaryHook`.

    Args:
        config: The model's `RunConfig` (`save_summary_steps`).
        path: The `model_dir`, or `None`.
    """
    if path is None or config.save_summary_steps is None:
        return []
    return [SummaryHook(path, save_steps=config.save_summary_steps)]
