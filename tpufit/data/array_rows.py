"""Taking batches of rows out of in-memory arrays, inside a `tf.data` pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

SMALL_BYTES = 4 * 2**20


def small(data: Any) -> bool:
    """Whether arrays are small enough to copy whole (4 MiB at most) without a thought."""
    return sum(np.asarray(a).nbytes for a in tf.nest.flatten(data)) <= SMALL_BYTES


def row_taker(data: Any) -> Callable[[tf.Tensor], Any]:
    """Returns `take(rows)`: the arrays' `rows` (an int64 tensor) as tensors, in `data`'s structure.

    Numeric arrays stay where they are, in host memory: each batch's rows are
    copied out by numpy inside the pipeline (`tf.numpy_function`). Holding
    them as a tensor instead (`Dataset.from_tensors`) copies the whole input
    on every call (numpy's buffers lack the 64-byte alignment TensorFlow
    needs to share them): 627 MB and seconds for 200,001 x 784 floats, where
    a predict's output is 8 MB. Other arrays (strings) are gathered as tensors.
    """
    flat = tf.nest.flatten(data)
    if not all(np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_ for a in flat):
        tensors = [tf.convert_to_tensor(a) for a in flat]
        return lambda rows: tf.nest.pack_sequence_as(data, [tf.gather(t, rows) for t in tensors])

    def take_numpy(rows):
        if len(rows) and np.all(np.diff(rows) == 1):
            # An unshuffled batch: a slice, no indexing (TensorFlow copies it once).
            return [a[rows[0] : rows[0] + len(rows)] for a in flat]
        return [np.take(a, rows, axis=0) for a in flat]

    def take(rows):
        batch = tf.numpy_function(
            take_numpy, [rows], [tf.as_dtype(a.dtype) for a in flat], stateful=False
        )
        for tensor, array in zip(batch, flat, strict=True):
            tensor.set_shape(rows.shape.concatenate(array.shape[1:]))
        return tf.nest.pack_sequence_as(data, batch)

    return take
