"""The adapter of Python generators (and other one-shot iterators of batches).

A generator can be read only once. Its first batches are read ahead and
checked (`python_data.py`); the rest are streamed through `tf.data`, re-cut
to the static batch. Validation data, and evaluation on several workers, are read
into host memory instead (up to their `steps`) and fed as arrays.

A training loop runs exactly the steps it is given, so training reads the
generator ahead of the loops (`GeneratorSource.steps_within`): the run learns
where the generator ends before a loop would read past it. When `fit` runs
several epochs to the data's end, the batches are kept in host memory as they
are read, and every epoch after the first trains on them; otherwise a
generator that has ended has no more data.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import cluster, errors
from tpufit.config import Mode
from tpufit.data import arrays, checks, composite, dataset_stream, infeed, python_data, weighting
from tpufit.data.request import InfeedRequest


class GeneratorSource:
    """A generator's batches: the first ones read ahead and checked, the rest streamed.

    The stream (`dataset`) and the run's host loop (`steps_within`) both read
    the generator, under one lock: what the host reads ahead waits in a queue
    for the stream.

    Args:
        generator: The user's generator (or iterator) of batches.

    Attributes:
        peeked: The batches read ahead, standardized.
        pipeline_errors: Every error raised about the batches, oldest first
            (those raised inside `tf.data` reach the host wrapped).
        repeats: Whether the stream's passes after the first replay the
            first's batches (kept in host memory as they are read).
    """

    def __init__(self, generator: Iterator) -> None:
        self._generator = generator
        self.pipeline_errors: list = []
        self.peeked = [
            python_data.standardize(b)
            for b in itertools.islice(generator, python_data.PEEKED_BATCHES)
        ]
        if not self.peeked:
            raise errors.invalid_argument(
                "x", generator, "a generator that yields at least one batch", what="Empty generator"
            )
        self.checker = python_data.BatchChecker(self.peeked[0], "generator", self.pipeline_errors)
        self.left_out = python_data.LeftOut(self.peeked[0])
        for index, batch in enumerate(self.peeked[1:], start=1):
            self.checker.check(batch, index)
        self._batches = self._checked()
        self._lock = threading.Lock()
        self._ahead: collections.deque = collections.deque()
        self._rows = 0
        self._ended = False
        self._kept: list | None = None
        self._passes = 0
        self._batch_size = 0
        self.repeats = False

    def _checked(self) -> Iterator:
        for index, batch in enumerate(itertools.chain(self.peeked, self._generator)):
            yield self.checker.check(batch, index)

    def _read(self) -> Any:
        """The generator's next batch, or `None` at its end (call under the lock)."""
        if self._ended:
            return None
        batch = next(self._batches, None)
        if batch is None:
            self._ended = True
            return None
        self._rows += python_data.rows_of(batch)
        if self._kept is not None:
            self._kept.append(batch)
        return batch

    def _next(self) -> Any:
        with self._lock:
            return self._ahead.popleft() if self._ahead else self._read()

    def _one_pass(self) -> Iterator:
        self._passes += 1
        if self._passes > 1:
            yield from map(self.left_out.strip, self._kept or ())
            return
        while (batch := self._next()) is not None:
            yield self.left_out.strip(batch)

    def dataset(self, *, batch_size: int = 0, keep: bool = False) -> tf.data.Dataset:
        """The batches as one stream, one pass per iteration (a pass after the first is empty).

        Args:
            batch_size: The static batch the stream is re-cut to, for `steps_within`.
            keep: Keep the batches as they are read: every pass after the
                first replays them.
        """
        self._batch_size = batch_size
        self._kept = [] if keep else None
        self.repeats = keep
        return tf.data.Dataset.from_generator(
            self._one_pass, output_signature=self.checker.output_signature(self.left_out)
        )

    def steps_within(self, steps: int) -> int:
        """Of the first pass's first `steps` steps, how many exist (reading ahead as needed).

        A step is one batch of the stream re-cut to `batch_size` rows.
        """
        with self._lock:
            while not self._ended and self._rows < steps * self._batch_size:
                batch = self._read()
                if batch is not None:
                    self._ahead.append(batch)
            if self._ended:
                return min(steps, -(-self._rows // self._batch_size))
            return steps

    def read_all(self, rows: int | None = None) -> Any:
        """Reads the rest of the generator (or up to `rows` rows) as one structure of arrays."""
        batches, read = [], 0
        while rows is None or read < rows:
            batch = self._next()
            if batch is None:
                break
            batches.append(batch)
            read += python_data.rows_of(batch)
        data = tf.nest.map_structure(_concatenate, *batches)
        if rows is None:
            return data
        return tf.nest.map_structure(lambda a: _first_rows(a, rows), data)


def _concatenate(*parts: Any) -> Any:
    if parts[0] is None:
        return None
    if isinstance(parts[0], tf.SparseTensor):
        return tf.sparse.concat(0, list(parts))
    if isinstance(parts[0], tf.RaggedTensor):
        return tf.concat(parts, axis=0)
    return np.concatenate(parts, axis=0)


def _first_rows(part: Any, rows: int) -> Any:
    if part is None:
        return None
    if isinstance(part, tf.SparseTensor):
        return tf.sparse.slice(part, [0] * len(part.shape), [rows, *part.shape[1:]])
    return part[:rows]


def _arrays_with_class_weight(data: Any, class_weight: dict | None) -> Any:
    if class_weight is None:
        return data
    if not isinstance(data, tuple) or len(data) != 2:
        raise errors.invalid_argument(
            "class_weight",
            class_weight,
            "a generator of (x, y) batches: class weights need targets, and Keras "
            "allows no class_weight with sample weights",
        )
    x, y = data
    weighting.check_combination(y, None, class_weight)
    return x, y, weighting.sample_weights_for(y, class_weight)


def _held_in_memory(request: InfeedRequest, *, several_workers: bool) -> bool:
    """Whether the generator is read into memory (up to its steps) rather than streamed.

    So it is where it is read in full more than once: by every validation,
    by every worker counting the steps of an evaluation, or training on
    several workers, whose every epoch must have a known number of steps.
    """
    if request.mode != Mode.TRAIN:
        return request.reread or several_workers
    return several_workers and request.steps is None


def build(
    x: Iterator,
    y: Any,
    sample_weight: Any,
    request: InfeedRequest,
    strategy: tf.distribute.Strategy,
) -> infeed.Infeed:
    """Builds the infeed of a generator of batches.

    Args:
        x: The generator, yielding `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        y: Must be `None` (the generator yields the targets).
        sample_weight: Must be `None`.
        request: What the run asks; `batch_size` re-cuts the batches (by
            default the first batch's size is the static batch).
        strategy: The strategy the infeed feeds.

    Returns:
        The `Infeed`; its `pipeline_errors` is the source's.
    """
    checks.check_no_extras("generator", y, sample_weight)
    source = GeneratorSource(x)
    size = python_data.static_batch_size(request, source.peeked[:1], strategy.num_replicas_in_sync)
    training = request.mode == Mode.TRAIN
    if _held_in_memory(request, several_workers=cluster.worker_count(strategy) > 1):
        rows = None if request.steps is None else request.steps * size
        held = source.read_all(rows)
        if composite.any_composite(held):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(held)
            request = dataclasses.replace(request, batch_size=size)
            feed = arrays.build(x, y, sample_weight, request, strategy)
            return dataclasses.replace(feed, pipeline_errors=source.pipeline_errors)
        data = _arrays_with_class_weight(held, request.class_weight)
        feed = infeed.from_arrays(data, size, mode=request.mode, layout=request.layout)
        return dataclasses.replace(feed, pipeline_errors=source.pipeline_errors)
    keep = training and request.reread
    stream = weighting.with_class_weight(
        source.dataset(batch_size=size, keep=keep), request.class_weight
    )
    feed = dataset_stream.from_dataset(
        stream, mode=request.mode, layout=request.layout, batch_size=size, count=False
    )
    feed = source.left_out.restore(feed)
    return dataclasses.replace(
        feed,
        lookahead=source if training else None,
        pipeline_errors=source.pipeline_errors,
    )
