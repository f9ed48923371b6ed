"""What the two Python sources share: recognising them, checking their batches.

Python generators (`generators.py`) and `keras.utils.PyDataset`s
(`py_datasets.py`) are read as Keras's adapters read them: the first batches
are read ahead to learn the element structure, dtypes and shapes. Unlike
Keras, every later batch is checked against the first (`BatchChecker`), so a
source that changes what it yields fails with a message showing both.
Floating values take Keras's `floatx`, as arrays do (`infeed.as_input_array`).

A checker records every error it raises on its source's `pipeline_errors`
list: raised inside `tf.data` for a later batch, an error reaches the host
wrapped in a TensorFlow `OpError`, and the run finds it again through the
`Infeed` (`Infeed.pipeline_errors`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.data import checks, composite, infeed
from tpufit.data.request import InfeedRequest

PEEKED_BATCHES = 2  # As Keras's adapters read ahead to learn the element spec.


def is_generator(value: Any) -> bool:
    """Whether `value` is a Python generator or another one-shot iterator of batches."""
    if isinstance(value, types.GeneratorType):
        return True
    return isinstance(value, collections.abc.Iterator) and not isinstance(
        value, (tf.data.Iterator, np.ndarray)
    )


def is_py_dataset(value: Any) -> bool:
    """Whether `value` is a `keras.utils.PyDataset` (alias `keras.utils.Sequence`)."""
    return isinstance(value, keras.utils.PyDataset)


def standardize(batch: Any) -> Any:
    """Returns a batch as Keras packs it: `(x,)`, `(x, y)`, `(x, y, sw)` or a dict; numpy leaves.

    A bare array becomes `(x,)` as in Keras's PyDataset adapter; lists become
    tuples; floating leaves take `floatx`; ragged and sparse leaves become
    TF tensors (`composite.as_tensor`).
    """
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, (tuple, dict)):
        batch = (batch,)
    return tf.nest.map_structure(_as_input, batch)


def _as_input(leaf: Any) -> Any:
    if leaf is None:
        return None  # An optional input left out.
    if composite.is_composite(leaf):
        return composite.as_tensor(leaf)  # Scipy sparse becomes a tf.SparseTensor, as in Keras.
    return infeed.as_input_array(leaf)


def describe(batch: Any) -> str:
    """Returns a short description of a batch's structure, dtypes and shapes.

    Example:
        >>> describe((np.zeros((2, 3), "float32"), np.zeros(2, "int64")))
        '(float32[2, 3], int64[2])'
    """
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, tuple):
        inner = ", ".join(describe(v) for v in batch)
        return f"({inner},)" if len(batch) == 1 else f"({inner})"
    if batch is None:
        return "None"
    if composite.is_composite(batch):
        kind = "ragged" if isinstance(batch, tf.RaggedTensor) else "sparse"
        return f"{kind} {batch.dtype.name}{list(batch.shape)}"
    return f"{batch.dtype}{list(batch.shape)}"


def _signature(batch: Any) -> Any:
    return tf.nest.map_structure(
        lambda a: None if a is None else (type(a), a.dtype, a.shape[1:], len(a.shape)), batch
    )


class LeftOut:
    """Where a Python source's batches leave an optional input out (`None` in `x`).

    `tf.data` cannot carry `None` through re-cutting and padding, so the
    stream holds `x`'s other parts only (`strip`), and each batch gets its
    `None`s back in their places once it is laid out (`restore`), as arrays
    do (`infeed.from_arrays`).

    Args:
        first: The source's first batch, standardized.
    """

    def __init__(self, first: Any) -> None:
        # tf.data holds no list with a None in it: lists become tuples, as for arrays.
        self._x = infeed.as_tuples(keras.utils.unpack_x_y_sample_weight(first)[0])
        self._left_out = [leaf is None for leaf in tf.nest.flatten(self._x)]

    def __bool__(self) -> bool:
        return any(self._left_out)

    def strip(self, batch: Any) -> Any:
        """`batch` with `x` as the tuple of its parts that are not `None`."""
        if not self:
            return batch
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        present = tuple(leaf for leaf in tf.nest.flatten(x) if leaf is not None)
        return keras.utils.pack_x_y_sample_weight(present, y, sample_weight)

    def restore(self, feed: infeed.Infeed) -> infeed.Infeed:
        """`feed` whose batches have `x` rebuilt with its `None`s in place."""
        if not self:
            return feed

        def put_back(data: Any, signals: Any) -> tuple:
            present, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            parts = iter(present)
            whole = [None if gone else next(parts) for gone in self._left_out]
            x = tf.nest.pack_sequence_as(self._x, whole)
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight), signals

        tail = feed.tail.map(put_back) if feed.tail is not None else None
        return dataclasses.replace(feed, dataset=feed.dataset.map(put_back), tail=tail)


class BatchChecker:
    """Checks that every batch of a source has the first batch's structure and dtypes.

    Each part must also hold numbers or strings (`checks.check_values`).

    Args:
        first: The first batch, standardized.
        source: What the batches come from, for messages ("generator", "PyDataset").
        raised: The source's list of errors: every error the checker raises
            is appended to it.
    """

    def __init__(self, first: Any, source: str, raised: list) -> None:
        self._first = first
        self._source = source
        self._raised = raised
        self._check_leaves(first, 0)
        self._signature = _signature(first)
        self.check(first, 0)

    def check(self, batch: Any, index: int) -> Any:
        """Returns the standardized `batch`, or raises an error showing both batches."""
        batch = standardize(batch)
        self._check_leaves(batch, index)
        try:
            tf.nest.assert_same_structure(self._first, batch)
            same = _signature(batch) == self._signature
        except (ValueError, TypeError):
            same = False
        if not same:
            raise self._error(
                "x",
                f"a {self._source}",
                f"a {self._source} whose batches all have one structure and one dtype "
                "per part (only the number of rows may vary)",
                what=(
                    f"The {self._source} yields inconsistent batches: batch 0 is "
                    f"{describe(self._first)} but batch {index} is {describe(batch)}"
                ),
            )
        leaves = [a for a in tf.nest.flatten(batch) if a is not None]
        rows = {int(a.shape[0]) if len(a.shape) else -1 for a in leaves}
        if len(rows) != 1 or -1 in rows:
            raise self._error(
                "x",
                f"a {self._source}",
                "batches whose parts all have the same number of rows",
                what=f"Batch {index} of the {self._source} is {describe(batch)}",
            )
        self._check_values(batch)
        return batch

    def _check_leaves(self, batch: Any, index: int) -> None:
        # None (an optional input left out) may only stand in `x`; `Expected`
        # checks that the input is optional.
        parts = keras.utils.unpack_x_y_sample_weight(batch)
        for name, part in zip(("x", "y", "sample_weight"), parts, strict=True):
            for label, leaf in checks.labelled_leaves(part, name) if part is not None else ():
                if leaf is None and name != "x":
                    raise self._error(
                        name,
                        f"a {self._source}",
                        f"an array in every part of a {self._source}'s batches (only a part "
                        "of x may be None, for an optional input)",
                        what=f"`{label}` is None in batch {index} of the {self._source}",
                    )

    def _check_values(self, batch: Any) -> None:
        parts = keras.utils.unpack_x_y_sample_weight(batch)
        for name, part in zip(("x", "y", "sample_weight"), parts, strict=True):
            for label, array in checks.labelled_leaves(part, name) if part is not None else ():
                if array is None or composite.is_composite(array):
                    continue
                try:
                    checks.check_values(name, label, array)
                except errors.InvalidArgumentError as error:
                    self._raised.append(error)  # See `_error`.
                    raise

    def _error(self, *args: Any, **kwargs: Any) -> errors.InvalidArgumentError:
        # Raised inside `tf.data` for later batches: recorded, to come out unwrapped.
        error = errors.invalid_argument(*args, **kwargs)
        self._raised.append(error)
        return error

    def output_signature(self, left_out: LeftOut) -> Any:
        """The `tf.TensorSpec`s of the batches stripped by `left_out`, rows left open."""
        return tf.nest.map_structure(_spec, left_out.strip(self._first))


def _spec(leaf: Any) -> tf.TypeSpec:
    """The spec of a part of a batch, its rows (the batch dimension) left open."""
    shape = (None, *leaf.shape[1:])
    if isinstance(leaf, tf.RaggedTensor):
        return tf.RaggedTensorSpec(shape, leaf.dtype, leaf.ragged_rank, leaf.row_splits.dtype)
    if isinstance(leaf, tf.SparseTensor):
        return tf.SparseTensorSpec(shape, leaf.dtype)
    return tf.TensorSpec(shape, tf.as_dtype(leaf.dtype))


def rows_of(batch: Any) -> int:
    """The number of rows of a standardized batch."""
    return int(next(a for a in tf.nest.flatten(batch) if a is not None).shape[0])


def static_batch_size(request: InfeedRequest, peeked: list, num_replicas: int) -> int:
    """Returns the static batch size: the requested one, else the largest batch read ahead.

    Raises:
        InvalidArgumentError: It is not a positive int that splits over the replicas.
    """
    size = request.batch_size
    if size is None:
        size = max(rows_of(b) for b in peeked)
    checks.check_batch_size(size, num_replicas)
    return size
