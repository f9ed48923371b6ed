"""Evaluation summaries in a `model_dir`: the scalars TensorBoard shows under `eval`."""

from __future__ import annotations

import os
from collections.abc import Mapping

import tensorflow as tf


def write_eval_summaries(model_dir: str, global_step: int, logs: Mapping[str, float]) -> None:
    """Writes an evaluation's metrics to `<model_dir>/eval` at `global_step`.

    The caller decides who writes (the chief only, under several workers).

    Args:
        model_dir: The `model_dir` the evaluated checkpoint belongs to.
        global_step: The global step of the evaluated weights.
        logs: Metric name -> scalar value.
    """
    writer = tf.summary.create_file_writer(os.path.join(os.fspath(model_dir), "eval"))
    with writer.as_default():
        for name, value in logs.items():
            tf.summary.scalar(name, float(value), step=int(global_step))
    writer.flush()
    writer.close()
