"""The adapter of `keras.utils.PyDataset`s (alias `keras.utils.Sequence`).

A `PyDataset` is read through Keras's own adapter, which honours its
`workers`, `use_multiprocessing` and `max_queue_size` and calls its
`on_epoch_begin` / `on_epoch_end` around every pass. As Keras runs it, each
of its batches is one step: batches are padded up to the static batch, never
re-cut, and with `shuffle` their order changes every pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from tpufit import _keras_shim, errors
from tpufit.config import Mode
from tpufit.data import checks, dataset_stream, infeed, python_data, weighting
from tpufit.data.request import InfeedRequest


class PyDatasetSource:
    """A `PyDataset`'s batches, one pass per iteration, through Keras's own adapter.

    Args:
        py_dataset: The user's `keras.utils.PyDataset`.
        shuffle: Shuffle the order of its batches every pass, as Keras does.

    Attributes:
        peeked: The batches read ahead, standardized.
        pipeline_errors: Every error raised about the batches, oldest first
            (those raised inside `tf.data` reach the host wrapped).
    """

    def __init__(self, py_dataset: keras.utils.PyDataset, shuffle: bool) -> None:
        self.py_dataset = py_dataset
        self.num_batches = py_dataset.num_batches
        self.pipeline_errors: list = []
        if self.num_batches == 0:
            raise errors.invalid_argument(
                "x", py_dataset, "a PyDataset with at least one batch", what="Empty PyDataset"
            )
        count = min(python_data.PEEKED_BATCHES, self.num_batches or python_data.PEEKED_BATCHES)
        self.peeked = [python_data.standardize(py_dataset[i]) for i in range(count)]
        self.checker = python_data.BatchChecker(self.peeked[0], "PyDataset", self.pipeline_errors)
        for index, batch in enumerate(self.peeked[1:], start=1):
            self.checker.check(batch, index)
        self._shuffle = shuffle
        self.left_out = python_data.LeftOut(self.peeked[0])

    def _one_pass(self) -> Iterator:
        # A fresh Keras adapter (and worker pool) per pass: a pass left unfinished
        # (steps smaller than the data) must not block the next one from starting.
        adapter = _keras_shim.py_dataset_adapter(self.py_dataset, shuffle=self._shuffle)
        adapter.on_epoch_begin()
        try:
            for index, batch in enumerate(adapter.get_numpy_iterator()):
                yield self.left_out.strip(self.checker.check(batch, index))
        finally:
            adapter.on_epoch_end()

    def dataset(self) -> tf.data.Dataset:
        """One pass over the batches per iteration (endless if the PyDataset is)."""
        dataset = tf.data.Dataset.from_generator(
            self._one_pass, output_signature=self.checker.output_signature(self.left_out)
        )
        cardinality = tf.data.INFINITE_CARDINALITY if self.num_batches is None else self.num_batches
        return dataset.apply(tf.data.experimental.assert_cardinality(cardinality))


def build(
    x: keras.utils.PyDataset,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of a `PyDataset`: one step per batch, each padded to the static batch.

    Args:
        x: The `PyDataset`.
        y: Must be `None` (its batches hold the targets).
        sample_weight: Must be `None`.
        request: What the run asks; `batch_size` is the size every batch is
            padded to (by default the largest of its first batches); `shuffle`
            in training shuffles its batches as Keras does.
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`; its `pipeline_errors` is the source's.
    """
    checks.check_no_extras("PyDataset", y, sample_weight)
    source = PyDatasetSource(x, shuffle=request.shuffle and request.mode == Mode.TRAIN)
    if source.num_batches is None and request.steps is None and request.mode != Mode.TRAIN:
        # Training on it runs until stopped, as in Keras; evaluating it would never end.
        raise errors.invalid_argument(
            "steps", None, "a positive int when the PyDataset is endless (num_batches is None)"
        )
    size = python_data.static_batch_size(request, source.peeked, strategy.num_replicas_in_sync)
    largest = max(python_data.rows_of(b) for b in source.peeked)
    if size < largest:
        raise errors.invalid_argument(
            "batch_size",
            request.batch_size,
            f"at least {largest} (the rows of the PyDataset's largest first batch): its "
            "batches are padded up to batch_size, never cut",
        )
    stream = weighting.with_class_weight(source.dataset(), request.class_weight)
    feed = dataset_stream.from_dataset(
        stream,
        mode=request.mode,
        layout=request.layout,
        batch_size=size,
        count=False,
        rebatch=False,
    )
    return dataclasses.replace(
        source.left_out.restore(feed),
        pipeline_errors=source.pipeline_errors,
    )
