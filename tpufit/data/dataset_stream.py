"""The infeed of a batched `tf.data.Dataset`, the other stream builder every adapter ends in.

A user's dataset, a Python source's stream and an `input_fn`'s dataset all
arrive batched; this module gives their batches the signals of `padding.py`
(padding short batches to the static size in the `PADDED` layout), repeats
them for training or appends stop batches for evaluation and prediction, and
counts a stream's batches when TF does not know how many there are.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.config import Layout, Mode
from tpufit.data import composite, infeed, padding
from tpufit.data.infeed import Infeed

_INFINITE = tf.data.INFINITE_CARDINALITY
_UNKNOWN = tf.data.UNKNOWN_CARDINALITY


def dataset_batch_size(dataset: tf.data.Dataset) -> int:
    """Returns the batch size of a batched dataset: static, else its first batch's."""
    first_dim = tf.nest.flatten(dataset.element_spec)[0].shape
    if first_dim.rank and first_dim[0] is not None:
        return int(first_dim[0])
    for element in dataset.take(1):
        return int(composite.rows_of(tf.nest.flatten(element)[0]))
    raise errors.invalid_argument(
        "x", dataset, "a dataset that yields at least one batch", what="Empty dataset"
    )


def count_batches(dataset: tf.data.Dataset) -> int | None:
    """Returns the number of batches, counting them once if TF does not know.

    Returns `None` for an endless dataset.
    """
    cardinality = int(dataset.cardinality())
    if cardinality == _INFINITE:
        return None
    if cardinality == _UNKNOWN:
        return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    return cardinality


def _as_given(element_spec):
    """Returns how to rebuild a dataset element from the arguments `map` passes.

    `Dataset.map` spreads a tuple element over its arguments; the element a
    step receives must keep its structure, a 1-tuple included.
    """
    if isinstance(element_spec, tuple):
        return lambda args: tuple(args)
    return lambda args: args[0]


def from_dataset(
    dataset: tf.data.Dataset,
    *,
    mode: Mode,
    layout: Layout,
    batch_size: int | None = None,
    count: bool = True,
    rebatch: bool = True,
    keep_sizes: bool = False,
) -> Infeed:
    """Builds the infeed of a batched `tf.data.Dataset` (a user's, or a Python source's stream).

    Args:
        dataset: Yields batches (`x`, `(x, y)` or `(x, y, sample_weight)`).
        mode: `TRAIN` repeats the dataset pass after pass; `EVAL` and
            `PREDICT` make one pass, then stop batches.
        layout: `PADDED` pads short batches to the static size (full batches
            get constant signals); `TRUE_SIZE` passes the batches through as
            they are (for a model's own steps).
        batch_size: Re-cut the batches to this size; by default the
            dataset's own (its static batch size, else its first batch's).
        count: In training, count the batches of a dataset of unknown length
            (reading it once); else leave `steps_per_pass` unknown.
        rebatch: Re-cut to `batch_size`; else keep the batches and pad each
            up to `batch_size` (one step per batch, as Keras runs a `PyDataset`).
        keep_sizes: Pass the batches through at their own sizes even in the
            `PADDED` layout (every row real): the step is traced once for a
            batch of unknown size.

    Returns:
        The `Infeed`; `steps_per_pass` is `None` when TF cannot tell the
        dataset's length without reading it (evaluation and prediction then
        run to the stop signal).
    """
    if batch_size is not None and rebatch:
        endless = int(dataset.cardinality()) == _INFINITE
        # An explicit size re-cuts the batches, so that only the last is short.
        dataset = dataset.rebatch(batch_size)
        if endless:
            # `rebatch` forgets that its input never ends; counting it would never return.
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(_INFINITE))
    batch_size = batch_size or dataset_batch_size(dataset)
    cardinality = int(dataset.cardinality())
    steps = cardinality if cardinality >= 0 else None
    as_given = _as_given(dataset.element_spec)
    first_dim = tf.nest.flatten(dataset.element_spec)[0].shape
    padded = layout is Layout.PADDED and not keep_sizes
    if padded and first_dim.rank and first_dim[0] == batch_size:
        # Every batch is already full: attach constant signals, no per-batch work.
        signals = tf.data.Dataset.from_tensors(padding.make_signals(batch_size, batch_size))
        dataset = tf.data.Dataset.zip((dataset, signals.repeat()))
    elif padded:
        dataset = dataset.map(
            lambda *data: padding.pad_batch(as_given(data), batch_size),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:

        def with_signals(*data):
            data = as_given(data)
            rows = composite.rows_of(tf.nest.flatten(data)[0])
            return data, padding.make_signals(rows, rows)

        dataset = dataset.map(with_signals)
    if mode == Mode.TRAIN:
        if steps is None and count:
            steps = count_batches(dataset)
        dataset = dataset.repeat()
    else:
        dataset = dataset.concatenate(infeed.stop_batches(dataset.element_spec[0], batch_size))
    return Infeed(dataset.prefetch(tf.data.AUTOTUNE), batch_size, steps, mode, layout)
