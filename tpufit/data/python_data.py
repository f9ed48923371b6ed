"""Python generators and `keras.utils.PyDataset`s as `tf.data` streams of batches.

Like Keras's generator and PyDataset adapters, the first batches are read
ahead to learn the element structure, dtypes and shapes; unlike them, every
later batch is checked against the first, so a source that changes what it
yields fails with a message showing both. Floating values take Keras's
`floatx`, as arrays do.

A generator can be read only once, so anything else that needs a batch of it
(building the model's state) gets a *probe* made of the first batch read
ahead, and a stream read in full more than once (training to exhaustion over
several epochs, validation data) is first read into host memory.
A `PyDataset` is read through Keras's own adapter, which honours its
`workers`, `use_multiprocessing` and `max_queue_size` and calls its
`on_epoch_begin` / `on_epoch_end` around every pass.
"""

from __future__ import annotations

import collections.abc
import itertools
import types
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import _keras_shim, errors

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
    tuples; floating leaves take `floatx`.
    """
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, (tuple, dict)):
        batch = (batch,)

    def leaf(value):
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(keras.config.floatx(), copy=False)
        return array

    return tf.nest.map_structure(leaf, batch)


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
    return f"{batch.dtype}{list(batch.shape)}"


def _signature(batch: Any) -> Any:
    return tf.nest.map_structure(lambda a: (a.dtype, a.shape[1:], a.ndim), batch)


class BatchChecker:
    """Checks that every batch of a source has the first batch's structure and dtypes.

    Args:
        first: The first batch, standardized.
        source: What the batches come from, for messages ("generator", "PyDataset").
    """

    def __init__(self, first: Any, source: str) -> None:
        self._first = first
        self._source = source
        self._signature = _signature(first)
        self.raised: list[errors.TPUFitError] = []  # What it raised, read back by the run.

    def check(self, batch: Any, index: int) -> Any:
        """Returns the standardized `batch`, or raises an error showing both batches."""
        batch = standardize(batch)
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
        rows = {int(a.shape[0]) if a.ndim else -1 for a in tf.nest.flatten(batch)}
        if len(rows) != 1 or -1 in rows:
            raise self._error(
                "x",
                f"a {self._source}",
                "batches whose parts all have the same number of rows",
                what=f"Batch {index} of the {self._source} is {describe(batch)}",
            )
        return batch

    def _error(self, *args: Any, **kwargs: Any) -> errors.InvalidArgumentError:
        # Raised inside `tf.data` for later batches: remembered, to come out unwrapped.
        error = errors.invalid_argument(*args, **kwargs)
        self.raised.append(error)
        return error

    def output_signature(self) -> Any:
        """The `tf.TensorSpec`s of the batches, the number of rows left open."""
        return tf.nest.map_structure(
            lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype)), self._first
        )


def rows_of(batch: Any) -> int:
    """The number of rows of a standardized batch."""
    return int(tf.nest.flatten(batch)[0].shape[0])


class GeneratorSource:
    """A generator's batches: the first ones read ahead and checked, the rest streamed.

    Args:
        generator: The user's generator (or iterator) of batches.
    """

    def __init__(self, generator: Iterator) -> None:
        self._generator = generator
        self.peeked = [standardize(b) for b in itertools.islice(generator, PEEKED_BATCHES)]
        if not self.peeked:
            raise errors.invalid_argument(
                "x", generator, "a generator that yields at least one batch", what="Empty generator"
            )
        self.checker = BatchChecker(self.peeked[0], "generator")
        for index, batch in enumerate(self.peeked[1:], start=1):
            self.checker.check(batch, index)
        self._batches = self._checked()

    def _checked(self) -> Iterator:
        for index, batch in enumerate(itertools.chain(self.peeked, self._generator)):
            yield self.checker.check(batch, index)

    def dataset(self, *, endless: bool) -> tf.data.Dataset:
        """The batches as one stream (it can be iterated once).

        With `endless`, the stream is marked infinite (training by
        `steps_per_epoch`) and running out is an error that says so.
        """
        batches = self._batches

        def stream():
            count = 0
            for batch in batches:
                count += 1
                yield batch
            if endless:
                raise self.checker._error(
                    "steps_per_epoch",
                    "a number of steps",
                    "a generator that yields at least steps_per_epoch * epochs batches "
                    "(make it endless), or no steps_per_epoch to run each epoch to its end",
                    what=f"The generator ran out of data after {count} batches",
                )

        dataset = tf.data.Dataset.from_generator(
            stream, output_signature=self.checker.output_signature()
        )
        if endless:
            dataset = dataset.apply(
                tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
            )
        return dataset

    def read_all(self) -> Any:
        """Reads the rest of the generator and returns all its rows as one structure of arrays."""
        batches = list(self._batches)
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *batches)


class PyDatasetSource:
    """A `PyDataset`'s batches, one pass per iteration, through Keras's own adapter.

    Args:
        py_dataset: The user's `keras.utils.PyDataset`.
        shuffle: Shuffle the order of its batches every pass, as Keras does.
    """

    def __init__(self, py_dataset: keras.utils.PyDataset, shuffle: bool) -> None:
        self.py_dataset = py_dataset
        self.num_batches = py_dataset.num_batches
        if self.num_batches == 0:
            raise errors.invalid_argument(
                "x", py_dataset, "a PyDataset with at least one batch", what="Empty PyDataset"
            )
        count = min(PEEKED_BATCHES, self.num_batches or PEEKED_BATCHES)
        self.peeked = [standardize(py_dataset[i]) for i in range(count)]
        self.checker = BatchChecker(self.peeked[0], "PyDataset")
        for index, batch in enumerate(self.peeked[1:], start=1):
            self.checker.check(batch, index)
        self._shuffle = shuffle

    def _one_pass(self) -> Iterator:
        # A fresh Keras adapter (and worker pool) per pass: a pass left unfinished
        # (steps smaller than the data) must not block the next one from starting.
        adapter = _keras_shim.py_dataset_adapter(self.py_dataset, shuffle=self._shuffle)
        adapter.on_epoch_begin()
        try:
            for index, batch in enumerate(adapter.get_numpy_iterator()):
                yield self.checker.check(batch, index)
        finally:
            adapter.on_epoch_end()

    def dataset(self) -> tf.data.Dataset:
        """One pass over the batches per iteration (endless if the PyDataset is)."""
        dataset = tf.data.Dataset.from_generator(
            self._one_pass, output_signature=self.checker.output_signature()
        )
        cardinality = tf.data.INFINITE_CARDINALITY if self.num_batches is None else self.num_batches
        return dataset.apply(tf.data.experimental.assert_cardinality(cardinality))


def probe(batch: Any) -> tf.data.Dataset:
    """A one-batch dataset of `batch`, to build state from without reading the source."""
    return tf.data.Dataset.from_tensors(batch)
