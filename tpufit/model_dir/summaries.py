"""A `model_dir`'s TensorBoard summaries: the hooks `fit` and `evaluate` get, and eval events.

With a `model_dir`, training writes to `<model_dir>/train` (every step's loss,
and every `RunConfig.save_summary_steps` steps the running metrics and the
speed) and every evaluation to `<model_dir>/eval`, at the global step it
evaluated, as TPUEstimator did. Only the chief writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import tensorflow as tf

from tpufit import cluster
from tpufit.config import RunConfig
from tpufit.hooks.base import Hook
from tpufit.hooks.summary import SummaryHook, write_scalars

EVAL_DIR = "eval"


def write_eval_summaries(model_dir: str, global_step: int, logs: Mapping[str, float]) -> None:
    """Writes an evaluation's metrics to `<model_dir>/eval` at `global_step`.

    Each scalar of `logs` becomes a TensorBoard scalar named as in `logs`
    (`loss`, `accuracy`, ...), so every evaluation of one `model_dir` draws
    one curve per metric over the global steps. Only the chief writes
    (`tpufit.cluster.is_chief`, from `TF_CONFIG`); elsewhere this does nothing.

    Args:
        model_dir: The run's directory.
        global_step: The global step of the weights that were evaluated.
        logs: The evaluation's logs (`evaluate(..., return_dict=True)`).
    """
    if not cluster.is_chief():
        return
    writer = tf.summary.create_file_writer(os.path.join(os.fspath(model_dir), EVAL_DIR))
    try:
        with writer.as_default():
            write_scalars(logs, int(global_step))
        writer.flush()
    finally:
        writer.close()


def summary_hooks(config: RunConfig, path: str | None) -> list[Hook]:
    """The summary hook a run gets from its `model_dir`: none without one, or when turned off.

    One hook serves `fit` (writing to `train`) and `evaluate` or `fit`'s
    validation (writing to `eval`): its files follow the run's mode.

    Args:
        config: The model's `RunConfig` (`save_summary_steps`).
        path: The `model_dir`, or `None`.
    """
    if path is None or config.save_summary_steps is None:
        return []
    return [SummaryHook(path, save_steps=config.save_summary_steps)]
